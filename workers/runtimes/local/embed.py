"""The embedding executor: texts from many jobs share one forward pass.

Batches are made of texts, not jobs: a job with many texts spans several batches, and many
one-text jobs fill one. A batch starts when `max_batch` texts wait or `max_wait_ms` after the
first of them arrived, whichever comes first. When more texts wait than one pass takes,
a pass takes the oldest and the texts nearest its length (see _candidates): a pass is as
long as its longest text, so mixed lengths pay for padding (arrival order ran at
0.75-0.85 of the rate of the same 4- to 16-word texts sorted by length).

With `max_batch_tokens` (MONKEY_MAX_BATCH_TOKENS, as TEI's `max-batch-tokens`) a batch is
also bounded by its padded size, rows times its longest text in tokens: long and short
texts then share a forward pass without one long text blowing up the memory of a pass
of many. A text longer than the budget runs alone. Texts are measured with the model's
own tokenizer, in the executor thread (fast tokenizers are not thread-safe).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable

import torch

from common.errors import OutOfMemory
from workers.runtimes.base import EmbedResult
from workers.runtimes.local.executor import BatchExecutor, Request
from workers.runtimes.local.loading import LoadedEmbedder

# How far past the oldest waiting request a pass looks for texts of its length, in passes.
WINDOW = 8


def _next_length(request: EmbedRequest) -> int:
    """The size of the request's next text: tokens when measured (a budget), else characters."""
    if request.lengths is not None:
        return request.lengths[request.taken]
    return len(request.texts[request.taken])


class EmbedRequest(Request):
    def __init__(self, texts: list[str], ctx):
        super().__init__(ctx)
        self.texts = texts
        self.vectors: list[list[float] | None] = [None] * len(texts)
        self.tokens = 0
        self.lengths: list[int] | None = None  # tokens per text, measured under a budget
        self.taken = 0  # texts handed to a batch so far
        self.finished = 0  # texts whose vectors are in
        self.started = False


class EmbedExecutor(BatchExecutor):
    kind = "embed"

    def __init__(self, loaded: LoadedEmbedder, *, max_batch: int, max_wait_ms: float,
                 max_batch_tokens: int = 0):
        super().__init__(loaded.name, loaded.device, max_batch=max_batch, max_wait_ms=max_wait_ms)
        self.model = loaded.model
        self.max_batch_tokens = max_batch_tokens
        self._waiting: deque[EmbedRequest] = deque()
        self._pending_texts = 0

    def embed(self, texts: list[str], ctx) -> EmbedResult:
        """Called from a task thread: blocks until every text has its vector."""
        return self.submit_texts(texts, ctx)()

    def submit_texts(self, texts: list[str], ctx) -> Callable[[], EmbedResult]:
        """Hand the texts to the executor now; the returned function blocks until every
        text has its vector (a chunk submits all its lines, then waits for each)."""
        request = EmbedRequest(texts, ctx)
        self.submit(request)

        def result() -> EmbedResult:
            self.wait(request)
            done = [v for v in request.vectors if v is not None]
            return EmbedResult(embeddings=done, prompt_tokens=request.tokens)

        return result

    # Executor thread ---------------------------------------------------------------------
    def run(self) -> None:
        while not self._closing:
            self._collect()
            batch = self._take()
            if batch:
                self._run_batch(batch)

    def _add(self, request) -> None:
        if request is not None:
            if self.max_batch_tokens and request.lengths is None:
                request.lengths = self._measure(request.texts)
            self._waiting.append(request)
            self._pending_texts += len(request.texts)

    def _collect(self) -> None:
        if not self._waiting:
            self._add(self._next(timeout=None))
        deadline = self._waiting[0].submitted + self.max_wait_s if self._waiting else 0.0
        while not self._closing and self._pending_texts < WINDOW * self.max_batch:
            # Texts that queued during the last forward pass go at once: only a short batch
            # waits, and never past max_wait_ms after its oldest text arrived. Past a full
            # pass, what already waits comes in too (without waiting), for _candidates to
            # choose texts of one length among.
            full = self._pending_texts >= self.max_batch
            request = self._next(timeout=0 if full else deadline - time.monotonic())
            if request is None:
                break
            self._add(request)

    def _measure(self, texts: list[str]) -> list[int]:
        encoded = self.model.tokenizer(texts, truncation=True,
                                       max_length=self.model.max_seq_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def _fit(self, request: EmbedRequest, rows: int, longest: int, n: int) -> tuple[int, int]:
        """How many of the request's next `n` texts fit the token budget in a batch of
        `rows` rows whose longest text has `longest` tokens; and the new longest."""
        lengths = request.lengths or []
        fits = 0
        for length in lengths[request.taken:request.taken + n]:
            widest = max(longest, length)
            if rows + fits and (rows + fits + 1) * widest > self.max_batch_tokens:
                break
            fits, longest = fits + 1, widest
        return fits, longest

    def _candidates(self) -> list[EmbedRequest]:
        """The waiting requests in the order this pass takes them. While they all fit one
        pass, in arrival order. When more wait than fit, the oldest first and then those
        whose next text is nearest its length (tokens under a budget, else characters),
        among the oldest WINDOW * max_batch requests: texts of one length share a pass, as
        SentenceTransformer.encode sorts them, and padding costs less. The oldest request
        goes in every pass, so none waits forever behind texts of other lengths."""
        if self._pending_texts <= self.max_batch:
            return list(self._waiting)
        window = list(itertools.islice(self._waiting, WINDOW * self.max_batch))
        head, rest = window[0], window[1:]
        target = _next_length(head)
        rest.sort(key=lambda r: abs(_next_length(r) - target))  # stable: the older first
        return [head, *rest]

    def _take(self) -> list[tuple[EmbedRequest, int]]:
        batch: list[tuple[EmbedRequest, int]] = []
        longest = 0  # tokens of the batch's longest text, under a token budget
        gone: set[int] = set()  # requests that leave the waiting line (by id)
        for request in self._candidates():
            if len(batch) >= self.max_batch:
                break
            if request.done.is_set() or (request.ctx is not None and request.ctx.should_stop()):
                # A failed or stopped job's remaining texts are not worth a forward pass.
                gone.add(id(request))
                self._pending_texts -= len(request.texts) - request.taken
                if request.finished == request.taken:
                    request.done.set()
                continue
            n = min(self.max_batch - len(batch), len(request.texts) - request.taken)
            if self.max_batch_tokens:
                n, longest = self._fit(request, len(batch), longest, n)
                if not n:
                    break  # the next text waits for the next pass
            if not request.started:
                request.started = True
                self._observe_wait(request)
            batch.extend((request, i) for i in range(request.taken, request.taken + n))
            request.taken += n
            self._pending_texts -= n
            if request.taken == len(request.texts):
                gone.add(id(request))
            elif self.max_batch_tokens and len(batch) < self.max_batch:
                break  # the budget, not the count, closed this batch
        if gone:
            self._waiting = deque(r for r in self._waiting if id(r) not in gone)
        return batch

    def _run_batch(self, batch: list[tuple[EmbedRequest, int]]) -> None:
        batch = [(request, i) for request, i in batch if request.error is None]
        if not batch:
            return
        try:
            vectors, tokens = self._forward(len(batch), lambda: self._encode(batch))
        except torch.OutOfMemoryError as exc:
            self._after_oom()
            if len(batch) == 1:
                request = batch[0][0]
                request.fail(OutOfMemory(f"local/{self.name}: out of memory on one text: {exc}"))
                return
            half = len(batch) // 2
            self._run_batch(batch[:half])
            self._run_batch(batch[half:])
            return
        self.stats.record_tokens(len(batch) * max(tokens))
        for (request, index), vector, count in zip(batch, vectors, tokens, strict=True):
            request.vectors[index] = vector
            request.tokens += count
            request.finished += 1
            stopped = request.ctx is not None and request.ctx.stop_event.is_set()
            if request.finished == len(request.texts) or (
                stopped and request.finished == request.taken
            ):
                request.done.set()

    def _encode(self, batch) -> tuple[list[list[float]], list[int]]:
        from sentence_transformers.util import batch_to_device

        # The same steps as SentenceTransformer.encode, for exactly these texts in one pass.
        features = self.model.preprocess([request.texts[i] for request, i in batch])
        counts = features["attention_mask"].sum(dim=1).tolist()
        features = batch_to_device(features, self.model.device)
        embeddings = self.model(features)["sentence_embedding"]
        embeddings = torch.nn.functional.normalize(embeddings.float(), p=2, dim=1)
        return embeddings.cpu().tolist(), counts
