"""The generation executor: the jobs running at once share every decode step.

Measured on a 2-core CPU (docs/architecture.md, "Performance design"), one left-padded batch
(0.67 s for 8 prompts) beats transformers' continuous batching (`generate_batch`, 6.2 s) about
nine to one, so this executor runs its own step loop over a KV cache:

- Newcomers are prefilled together (left-padded, one forward pass) and merged into the running
  batch at the next step boundary: the shorter of the two caches is padded on the left. A job
  that arrives mid-generation therefore starts within one step instead of waiting for the
  longest job of the batch to finish, which "run the arrivals as the next batch" would cost.
- Each step decodes one token for every active row. A row samples with its own generator,
  streams its own text and leaves on its own max_tokens, stop string, EOS or cancel; leaving rows
  are cut out of the cache, and so are the columns that are padding for every row that stays.
- CUDA out-of-memory: a prefill is split in halves and retried; a decode step sends the newest
  half of the rows back to the queue (they resume by prefilling prompt + generated text, their
  generators untouched); a newcomer that does not fit beside the running rows waits for one of
  them to leave. A job fails with out_of_memory only when it runs alone.

Caches whose layers are not plain `DynamicLayer`s (sliding windows, linear attention) cannot be
padded and merged; for those models newcomers wait until the running batch has drained.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from common.errors import JobInvalid, JobTimeout, ModelUnavailable, OutOfMemory
from workers.runtimes.base import GenerateResult, JobSpec
from workers.runtimes.local import metrics
from workers.runtimes.local.decoding import TextStream
from workers.runtimes.local.executor import BatchExecutor, Request
from workers.runtimes.local.loading import LoadedLM
from workers.runtimes.local.prompts import prompt_ids
from workers.runtimes.local.sampling import SamplingParams, sample_rows

log = logging.getLogger(__name__)


class Row(Request):
    """One generate job inside the executor."""

    def __init__(self, job: JobSpec, ctx, prompt: list[int], params: SamplingParams,
                 stream: TextStream, generator: torch.Generator | None):
        super().__init__(ctx)
        self.job = job
        self.prompt = prompt
        self.params = params
        self.stream = stream
        self.generator = generator
        self.generated: list[int] = []
        self.last_token = prompt[-1]
        self.finish_reason: str | None = None
        self.admitted = False

    def context(self) -> list[int]:
        return self.prompt + self.generated

    def result(self) -> GenerateResult:
        return GenerateResult(
            text=self.stream.text,
            finish_reason=self.finish_reason or "cancelled",
            prompt_tokens=len(self.prompt),
            completion_tokens=len(self.generated),
        )


class GenerateExecutor(BatchExecutor):
    kind = "generate"

    def __init__(self, loaded: LoadedLM, *, max_batch: int, max_wait_ms: float):
        super().__init__(loaded.name, loaded.device, max_batch=max_batch, max_wait_ms=max_wait_ms)
        self.lm = loaded
        self.waiting: deque[Row] = deque()
        self.rows: list[Row] = []  # the running batch, in cache order
        self.cache: Any = None  # the running batch's transformers Cache (None when idle)
        self.mask: torch.Tensor | None = None  # [rows, cache length]: 1 = a real token
        self.limit = max_batch  # lowered after an out-of-memory until the batch drains
        self._mergeable = True
        tok = loaded.tokenizer
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    # Task-thread side --------------------------------------------------------------------
    def generate(self, job: JobSpec, ctx) -> GenerateResult:
        params = SamplingParams.from_params(job.params)
        with self.lm.tokenizer_lock:
            prompt = prompt_ids(self.lm.tokenizer, job)
        if self.lm.max_positions and len(prompt) >= self.lm.max_positions:
            raise JobInvalid(f"the prompt has {len(prompt)} tokens; local/{self.name} takes "
                             f"fewer than {self.lm.max_positions}")
        stream = TextStream(self._decode, prompt, params.stop)
        row = Row(job, ctx, prompt, params, stream, params.generator(self.device))
        self.submit(row)
        self.wait(row)
        if row.finish_reason == "cancelled" and ctx.stop_reason() == "timeout":
            raise JobTimeout(f"job {job.id} ran past its timeout")
        return row.result()

    def _decode(self, ids: list[int]) -> str:
        with self.lm.tokenizer_lock:
            # One sequence of ids decodes to one string (a list only for a batch).
            return cast(str, self.lm.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    # Executor thread -----------------------------------------------------------------------
    def run(self) -> None:
        while not self._closing:
            self._gather()
            self._retire()
            self._admit()
            self._retire()
            if self.rows:
                self._step()
        for row in [*self.rows, *self.waiting]:
            row.fail(ModelUnavailable(f"local/{self.name} is shutting down"))

    def _gather(self) -> None:
        if not self.rows and not self.waiting:
            self._enqueue(self._next(timeout=None))  # idle: block until work comes
        while (row := self._next(timeout=0)) is not None:
            self._enqueue(row)
        if self.rows or not self.waiting:
            return
        # A new batch: concurrent arrivals get max_wait_ms to share its prefill.
        deadline = self.waiting[0].submitted + self.max_wait_s
        while not self._closing and len(self.waiting) < self.limit:
            row = self._next(timeout=deadline - time.monotonic())
            if row is None:
                break
            self._enqueue(row)

    def _enqueue(self, row: Row | None) -> None:
        if row is not None:
            self.waiting.append(row)

    def _admit(self) -> None:
        room = self.limit - len(self.rows)
        if room <= 0 or not self.waiting or (self.rows and not self._mergeable):
            return
        batch: list[Row] = []
        while self.waiting and len(batch) < room:
            row = self.waiting.popleft()
            if row.ctx.should_stop():
                self._finish(row, "cancelled")
            else:
                batch.append(row)
        if batch:
            self._prefill(batch)

    def _prefill(self, batch: list[Row]) -> None:
        for row in batch:
            if not row.admitted:
                row.admitted = True
                self._observe_wait(row)
        try:
            cache, mask, tokens = self._forward(len(batch), lambda: self._prefill_pass(batch),
                                                resident=len(self.rows) + len(batch))
        except torch.OutOfMemoryError as exc:
            self._after_oom()
            if len(batch) == 1 and not self.rows:
                self._fail(batch[0], OutOfMemory(f"local/{self.name}: out of memory alone: {exc}"))
                return
            if len(batch) == 1:
                # The running rows hold the memory: this one waits until one of them leaves.
                self.waiting.appendleft(batch[0])
                self.limit = len(self.rows)
                return
            half = len(batch) // 2
            self.waiting.extendleft(reversed(batch[half:]))
            self.limit = max(1, len(self.rows) + half)
            self._prefill(batch[:half])
            return
        self._merge(cache, mask, batch)
        self._accept_all(batch, tokens)

    def _prefill_pass(self, batch: list[Row]):
        from transformers import DynamicCache

        seqs = [row.context() for row in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, width - len(seq):] = torch.tensor(seq)
            mask[i, width - len(seq):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.lm.model.config)
        logits = self._call(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
        return cache, mask, sample_rows(logits, batch)

    def _step(self) -> None:
        assert self.mask is not None  # set while rows run
        width = self.mask.shape[1]
        try:
            mask, tokens = self._forward(len(self.rows), self._decode_pass)
        except torch.OutOfMemoryError as exc:
            self._after_oom()
            self._preempt(width, exc)
            return
        self.mask = mask
        self._accept_all(self.rows, tokens)

    def _decode_pass(self):
        ids = torch.tensor([[row.last_token] for row in self.rows], device=self.device)
        assert self.mask is not None  # set while rows run
        positions = self.mask.sum(dim=1, keepdim=True)  # real tokens before the new one
        mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        logits = self._call(ids, mask, positions, self.cache)
        return mask, sample_rows(logits, self.rows)

    def _call(self, ids, mask, positions, cache) -> torch.Tensor:
        kwargs = {self.lm.cache_kwarg: cache, "use_cache": True}
        if self.lm.keeps_logits:
            kwargs["logits_to_keep"] = 1
        out = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
        return out.logits[:, -1, :]

    # Rows joining and leaving ----------------------------------------------------------------
    def _merge(self, cache, mask: torch.Tensor, batch: list[Row]) -> None:
        if not self.rows:
            self.cache, self.mask, self.rows = cache, mask, list(batch)
            self._mergeable = all(_plain(layer) for layer in cache.layers)
            return
        assert self.mask is not None  # set while rows run
        width = max(self.mask.shape[1], mask.shape[1])
        old_pad, new_pad = width - self.mask.shape[1], width - mask.shape[1]
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_kv(old.keys, old_pad), _pad_kv(new.keys, new_pad)])
            old.values = torch.cat([_pad_kv(old.values, old_pad), _pad_kv(new.values, new_pad)])
        self.mask = torch.cat([F.pad(self.mask, (old_pad, 0)), F.pad(mask, (new_pad, 0))])
        self.rows.extend(batch)

    def _retire(self) -> None:
        for row in [r for r in self.waiting if r.ctx.should_stop()]:
            self.waiting.remove(row)
            self._finish(row, "cancelled")
        for row in self.rows:
            # Checked between steps: a cancelled job leaves before the next token is computed.
            if row.finish_reason is None and row.ctx.should_stop():
                self._finish(row, "cancelled")
        keep = [i for i, row in enumerate(self.rows) if row.finish_reason is None]
        if len(keep) < len(self.rows):
            self._select(keep)

    def _select(self, keep: list[int]) -> None:
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            self.limit = self.max_batch
            return
        index = torch.tensor(keep, device=self.device)
        assert self.mask is not None  # set while rows run
        mask = self.mask[index]
        if self._mergeable:
            # Columns that are padding in every remaining row cost attention and memory.
            first = int(mask.any(dim=0).nonzero()[0])
            for layer in self.cache.layers:
                layer.keys = layer.keys[index, :, first:]
                layer.values = layer.values[index, :, first:]
            mask = mask[:, first:]
        else:
            self.cache.batch_select_indices(index)
        self.rows, self.mask = [self.rows[i] for i in keep], mask

    def _preempt(self, width: int, exc: BaseException) -> None:
        """Out of memory in a decode step: shrink the batch and try again next step."""
        n = len(self.rows)
        if n == 1:
            self._fail(self.rows[0], OutOfMemory(f"local/{self.name}: out of memory alone: {exc}"))
            self._select([])
            return
        # Caches that can be neither cropped nor merged back make every row start over.
        keep = n - n // 2 if self._mergeable else 0
        if keep:
            for layer in self.cache.layers:  # undo what the failed step appended to some layers
                layer.keys, layer.values = layer.keys[:, :, :width], layer.values[:, :, :width]
        self.waiting.extendleft(reversed(self.rows[keep:]))
        self._select(list(range(keep)))
        self.limit = keep or max(1, n // 2)

    # One row's outcome ---------------------------------------------------------------------
    def _accept_all(self, rows: list[Row], tokens: list[int]) -> None:
        for row, token in zip(rows, tokens, strict=True):
            if row.finish_reason is None:
                self._accept(row, token)
        metrics.GENERATED_TOKENS.labels(self.name).inc(len(tokens))

    def _accept(self, row: Row, token: int) -> None:
        try:
            row.last_token = token
            if token in self.lm.eos_ids:
                self._finish(row, "stop")
                return
            row.generated.append(token)
            delta = row.stream.push(token)
            if delta:
                row.ctx.token(delta)
            if row.stream.stopped:
                self._finish(row, "stop")
            elif len(row.generated) >= row.params.max_tokens or (
                self.lm.max_positions and len(row.prompt) + len(row.generated)
                >= self.lm.max_positions
            ):
                self._finish(row, "length")
        except Exception as exc:  # a failing ctx.token fails its own job, not the batch
            self._fail(row, exc)

    def _finish(self, row: Row, reason: str) -> None:
        row.finish_reason = reason
        try:
            rest = row.stream.flush()  # text held back for a stop string that never came
            if rest:
                row.ctx.token(rest)
        except Exception as exc:
            self._fail(row, exc)
            return
        row.done.set()

    def _fail(self, row: Row, exc: BaseException) -> None:
        row.finish_reason = "error"
        row.fail(exc)


def _plain(layer) -> bool:
    from transformers.cache_utils import DynamicLayer

    return type(layer) is DynamicLayer


def _pad_kv(x: torch.Tensor, n: int) -> torch.Tensor:
    # [batch, heads, length, dim]: n empty positions on the left of the length axis
    return F.pad(x, (0, 0, n, 0)) if n else x
