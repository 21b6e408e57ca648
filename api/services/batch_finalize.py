"""Finalizing a batch: once no line is queued or running, its output and error files are
written part by part (every line answered once, in line order) and its final status set:
completed, expired (some line's window closed first) or cancelled.

A finalize that dies half way leaves files that no batch points to; the next attempt
throws them away and writes them anew.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update

from api.services import batch_lines
from api.services.batch_claim import ClaimLost, load, renew
from api.services.files import FileWriter, iter_lines, remove_files
from api.state import AppState
from common.batches_db import Batch, File
from common.db import Job, utcnow
from common.jobs import JOB_COLUMNS, BatchStatus, JobStatus

log = logging.getLogger("monkey.batches")
S = JobStatus
B = BatchStatus

PAGE = 2000  # jobs read per page


async def finalize(state: AppState, b: Batch, token: str) -> None:
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
        stale = (await s.execute(select(File.id).where(File.batch_id == b.id))).scalars().all()
        if stale:
            await remove_files(s, list(stale))
        await s.commit()
    out, err, counts = await _write_results(state, b, token)
    await _settle(state, b, token, out, err, counts)


async def _write_results(state: AppState, b: Batch, token: str):
    out = FileWriter(owner_id=b.owner_id, filename=f"{b.id}_output.jsonl",
                     purpose="batch_output", batch_id=b.id)
    # OpenAI's purpose for a batch's error file is its output's too (the schema lists
    # no other): the filename tells them apart.
    err = FileWriter(owner_id=b.owner_id, filename=f"{b.id}_error.jsonl",
                     purpose="batch_output", batch_id=b.id)
    counts = {"ok": 0, "failed": 0, "unfinished": 0, "expired": 0}
    last = ""
    while True:
        async with state.sessions() as s:
            # Core rows: the ORM's identity map and instance state per line cost more
            # than rendering the line.
            jobs = (await s.execute(
                select(*JOB_COLUMNS).where(Job.batch_id == b.id, Job.id > last)
                .order_by(Job.id).limit(PAGE))).all()
        if not jobs:
            break
        last = jobs[-1].id
        rendered = await asyncio.to_thread(_render_page, jobs, b.endpoint)
        for (kind, line), status in rendered:
            counts[kind] += 1
            counts["expired"] += status == S.EXPIRED
            (out if kind == "ok" else err).add(line)
        await _flush_ready(state, b, token, out, err)
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


__all__ = ["finalize"]
