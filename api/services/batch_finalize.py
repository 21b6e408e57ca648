"""A batch's result files and its final status.

Its output and error files are written part by part, every line answered once, in line
order (job ids sort in line order): while the batch runs, the lines that ended before
the first one still queued or running (Results.ahead, from the batch engine); once no
line is queued or running, the rest, then the final status: completed, expired (some
line's window closed first) or cancelled. So finalize is left with the lines that ended
last, not the whole batch: rendering 10,000 lines took 0.7-0.9 s in which nothing else
ran.

The files belong to the claim that writes them: a process that takes the batch over
starts new ones, and finalize throws away the files of earlier claims. Until the batch
points to them they are left out of the file list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update

from api.services import batch_lines
from api.services.batch_claim import ClaimLost, load, renew
from api.services.files import FileWriter, iter_lines, remove_files
from api.state import AppState
from common.batches_db import Batch, File
from common.db import Job, utcnow
from common.jobs import TERMINAL, BatchStatus, JobStatus

log = logging.getLogger("monkey.batches")
S = JobStatus
B = BatchStatus

PAGE = 2000  # jobs read per page
LOOK_PAGE = 500  # statuses read per look while the batch runs (index ix_jobs_batch_line)
POLL_S = 0.1  # between the batch engine's looks for active lines, while lines end
LOOK_S = 0.25  # between looks for lines that ended, while lines end
QUIET_S = 5.0  # no line written for this long: its lines wait (their turn, a slow line)
LOOK_MAX_S = 1.0  # ... and both looks come this often (as the reconciler's tick)


class Results:
    """The result files of one claim on a batch, and how far they have got."""

    def __init__(self, b: Batch):
        self.out = FileWriter(owner_id=b.owner_id, filename=f"{b.id}_output.jsonl",
                              purpose="batch_output", batch_id=b.id)
        # OpenAI's purpose for a batch's error file is its output's too (the schema lists
        # no other): the filename tells them apart.
        self.err = FileWriter(owner_id=b.owner_id, filename=f"{b.id}_error.jsonl",
                              purpose="batch_output", batch_id=b.id)
        self.counts = {"ok": 0, "failed": 0, "unfinished": 0, "expired": 0}
        self.last = ""  # the id of the last line written
        self._next_look = 0.0
        self._wrote_at = time.monotonic()  # when a look last wrote lines

    @property
    def _quiet(self) -> bool:
        return time.monotonic() - self._wrote_at > QUIET_S

    @property
    def pause(self) -> float:
        """How long the batch engine waits between its looks for active lines: POLL_S
        while lines end (the last one's end starts finalize within it), LOOK_MAX_S
        once none has for QUIET_S (a batch whose lines wait for hours costs a look a
        second, as the reconciler's tick)."""
        return LOOK_MAX_S if self._quiet else POLL_S

    @property
    def file_ids(self) -> set[str]:
        return {self.out.file.id, self.err.file.id}

    async def ahead(self, state: AppState, b: Batch, token: str) -> None:
        """While the batch runs: write the lines that ended since the last look, up to
        the first line still active (or not yet enqueued). Looks every LOOK_S while
        lines end, every LOOK_MAX_S once none has for QUIET_S; the claim is renewed as
        parts go out."""
        if time.monotonic() < self._next_look:
            return
        if await self.write(state, b, token, running=True):
            self._wrote_at = time.monotonic()
        self._next_look = time.monotonic() + (LOOK_MAX_S if self._quiet else LOOK_S)

    async def write(self, state: AppState, b: Batch, token: str, *, running: bool) -> int:
        """Write the lines after the last one written, in pages: all of them, or with
        `running` those before the first active line. Returns how many."""
        written = 0
        while True:
            async with state.sessions() as s:
                upto = await self._ended_upto(s, b) if running else None
                if running and upto is None:
                    break
                where = [Job.batch_id == b.id, Job.id > self.last]
                if upto is not None:
                    where.append(Job.id <= upto)
                # Core rows: the ORM's identity map and instance state per line cost
                # more than rendering the line.
                jobs = (await s.execute(select(*batch_lines.result_columns(b.endpoint))
                                        .where(*where)
                                        .order_by(Job.id).limit(PAGE))).all()
            if not jobs:
                break
            self.last = jobs[-1].id
            written += len(jobs)
            rendered = await asyncio.to_thread(_render_page, jobs, b.endpoint)
            for (kind, line), status in rendered:
                self.counts[kind] += 1
                self.counts["expired"] += status == S.EXPIRED
                (self.out if kind == "ok" else self.err).add(line)
            await _flush_ready(state, b, token, self.out, self.err)
        return written

    async def _ended_upto(self, s, b: Batch) -> str | None:
        """The id of the last line, among the next LOOK_PAGE, that ended before any
        active line did, or None when the next line has not ended (ids and statuses:
        a range of the index on (batch_id, id))."""
        page = (await s.execute(select(Job.id, Job.status).where(
            Job.batch_id == b.id, Job.id > self.last).order_by(Job.id).limit(LOOK_PAGE))).all()
        upto = None
        for job_id, status in page:
            if status not in TERMINAL:
                break
            upto = job_id
        return upto


async def finalize(state: AppState, b: Batch, token: str,
                   results: Results | None = None) -> None:
    """Write what `results` (this claim's, if it wrote any while the batch ran) still
    lacks, then the final status."""
    if b.status == B.IN_PROGRESS:
        async with state.sessions() as s:
            res = await s.execute(
                update(Batch).where(Batch.id == b.id, Batch.status == B.IN_PROGRESS,
                                    Batch.claim_token == token)
                .values(status=B.FINALIZING, finalizing_at=utcnow())
                .execution_options(synchronize_session=False))
            await s.commit()
        b = await load(state, b.id)
        if not res.rowcount and b.status != B.CANCELLING:
            return
    async with state.sessions() as s:
        # Files of an attempt that died half way are thrown away and written anew.
        await renew(state, s, b.id, token)
        results = results or Results(b)
        stale = [f for f in (await s.execute(select(File.id).where(File.batch_id == b.id)))
                 .scalars().all() if f not in results.file_ids]
        if stale:
            await remove_files(s, stale)
        await s.commit()
    out, err, counts = await _write_results(state, b, token, results)
    await _settle(state, b, token, out, err, counts)


async def _write_results(state: AppState, b: Batch, token: str, results: Results):
    await results.write(state, b, token, running=False)
    out, err, counts = results.out, results.err, results.counts
    if b.lines_enqueued < b.request_total:
        # Cancelled while enqueuing: the lines that never became jobs are answered too.
        seen = 0
        async for lines in iter_lines(sessions=state.sessions, file_id=b.input_file_id):
            rest = lines[max(b.lines_enqueued - seen, 0):]
            seen += len(lines)
            for line in await asyncio.to_thread(batch_lines.unrun_lines, b, rest):
                counts["unfinished"] += 1
                err.add(line)
            await _flush_ready(state, b, token, out, err)
    return out, err, counts


def _render_page(jobs: Sequence[Any], endpoint: str) -> list[tuple[tuple[str, bytes], str]]:
    """[((kind, line), status)] for a page of line jobs (in a thread: JSON encoding)."""
    return [(batch_lines.result_line(j, endpoint), j.status) for j in jobs]


async def _flush_ready(state: AppState, b: Batch, token: str, out: FileWriter,
                       err: FileWriter) -> None:
    if out.part_ready or err.part_ready:
        async with state.sessions() as s:
            await renew(state, s, b.id, token)
            if out.part_ready:
                await out.flush(s)
            if err.part_ready:
                await err.flush(s)
            await s.commit()


async def _settle(state: AppState, b: Batch, token: str, out: FileWriter, err: FileWriter,
                  counts: dict) -> None:
    if b.status == B.CANCELLING:
        final = B.CANCELLED
    else:
        final = B.EXPIRED if counts["expired"] else B.COMPLETED
    async with state.sessions() as s:
        await renew(state, s, b.id, token)
        ids = {}
        for name, writer in (("output_file_id", out), ("error_file_id", err)):
            if not writer.empty:
                await writer.flush(s, final=True)
                ids[name] = writer.file.id
        res = await s.execute(
            update(Batch).where(Batch.id == b.id, Batch.claim_token == token,
                                Batch.status == (B.CANCELLING if final == B.CANCELLED
                                                 else B.FINALIZING))
            .values(status=final, **{f"{final}_at": utcnow()}, **ids,
                    request_completed=counts["ok"], request_failed=counts["failed"],
                    claim_token=None, claimed_until=None)
            .execution_options(synchronize_session=False))
        if not res.rowcount:
            await s.rollback()
            raise ClaimLost(b.id)
        await s.commit()
    log.info("batch %s %s", b.id, final, extra={"batch_id": b.id, **counts})


__all__ = ["Results", "finalize"]
