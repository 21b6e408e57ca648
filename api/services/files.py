"""Files of the OpenAI-compatible API, kept in the database in parts of PART_BYTES.

Uploads (purpose `batch`) and the output and error files that batches write. A file
is written part by part and read back part by part, so neither side holds a 200 MB
file in memory at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import UploadFile

from api import retention
from api.deps import Principal
from api.services.openai_shapes import ts
from common.batches_db import PART_BYTES, Batch, File, FilePart
from common.db import utcnow
from common.errors import Conflict, InvalidRequest, PayloadTooLarge
from common.ids import new_id
from common.jobs import BATCH_WORKING
from common.settings import Settings

UPLOAD_PURPOSES = ("batch",)
# OpenAI's bounds on a file's expires_after seconds: an hour to 30 days.
EXPIRES_AFTER_S = (3600, 30 * 24 * 3600)


def file_object(f: File, settings: Settings) -> dict:
    """The file as OpenAI shows it; `expires_at` is when the retention sweep deletes it
    (its own expires_after, else MONKEY_RETENTION_DAYS after the upload; none when kept)."""
    days = settings.retention_days
    expires_at = f.expires_at or (f.created_at + timedelta(days=days) if days else None)
    return {
        "id": f.id, "object": "file", "bytes": f.size, "created_at": ts(f.created_at),
        "filename": f.filename, "purpose": f.purpose, "status": "processed",
        "status_details": None, "expires_at": ts(expires_at),
    }


def expiry(anchor: str | None, seconds: str | None) -> timedelta | None:
    """A file's `expires_after` (OpenAI's {"anchor": "created_at", "seconds": N}, sent as
    the form fields expires_after[anchor] and expires_after[seconds]) as a delay after
    the upload; None when not given."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(f"expires_after.anchor must be 'created_at', not {anchor!r}",
                             param="expires_after.anchor")
    low, high = EXPIRES_AFTER_S
    try:
        n = int(seconds or "")
    except ValueError:
        n = None
    if n is None or not low <= n <= high:
        raise InvalidRequest(f"expires_after.seconds must be an integer from {low} (an hour) "
                             f"to {high} (30 days), not {seconds!r}",
                             param="expires_after.seconds")
    return timedelta(seconds=n)


async def store_upload(*, session: AsyncSession, settings: Settings, principal: Principal,
                       upload: UploadFile, purpose: str,
                       expires_after: timedelta | None = None) -> File:
    """Write an uploaded file in one transaction: a refused upload leaves nothing."""
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(f"purpose {purpose!r} is not supported; use one of {UPLOAD_PURPOSES}")
    now = utcnow()
    limit = settings.max_file_bytes
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(f"file has {upload.size} bytes; the limit is {limit} "
                              "(MONKEY_MAX_FILE_BYTES)")
    f = File(id=new_id("file"), owner_id=principal.key_id,
             filename=(upload.filename or "upload.jsonl")[:255], purpose=purpose, size=0,
             parts=0, created_at=now, expires_at=now + expires_after if expires_after else None)
    session.add(f)
    await session.flush()
    while data := await upload.read(PART_BYTES):
        if f.size + len(data) > limit:
            await session.rollback()
            raise PayloadTooLarge(f"file exceeds {limit} bytes (MONKEY_MAX_FILE_BYTES)")
        await session.execute(insert(FilePart).values(file_id=f.id, seq=f.parts, data=data))
        f.size += len(data)
        f.parts += 1
    if not f.size:
        await session.rollback()
        raise InvalidRequest("the file is empty")
    await session.commit()
    return f


class FileWriter:
    """Appends to a new file part by part, each part in the caller's transaction."""

    def __init__(self, *, owner_id: str, filename: str, purpose: str, batch_id: str | None):
        self.file = File(id=new_id("file"), owner_id=owner_id, filename=filename,
                         purpose=purpose, size=0, parts=0, created_at=utcnow(),
                         batch_id=batch_id)
        self._buf = bytearray()
        self._created = False

    @property
    def empty(self) -> bool:
        return not self._created and not self._buf

    def add(self, data: bytes) -> None:
        self._buf += data

    @property
    def part_ready(self) -> bool:
        return len(self._buf) >= PART_BYTES

    async def flush(self, session: AsyncSession, *, final: bool = False) -> None:
        """Write the buffered part (and the file row first); call inside a transaction."""
        if not self._created:
            await session.execute(insert(File).values(
                id=self.file.id, owner_id=self.file.owner_id, filename=self.file.filename,
                purpose=self.file.purpose, size=0, parts=0, created_at=self.file.created_at,
                batch_id=self.file.batch_id))
            self._created = True
        while self._buf and (final or len(self._buf) >= PART_BYTES):
            data = bytes(self._buf[:PART_BYTES])
            del self._buf[:PART_BYTES]
            await session.execute(insert(FilePart).values(file_id=self.file.id,
                                                          seq=self.file.parts, data=data))
            self.file.parts += 1
            self.file.size += len(data)
        await session.execute(update(File).where(File.id == self.file.id)
                              .values(size=self.file.size, parts=self.file.parts))


async def get_file(*, session: AsyncSession, principal: Principal, file_id: str) -> File:
    f = await session.get(File, file_id)
    if f is None or f.owner_id != principal.key_id:
        raise await retention.not_found(session, noun="file", asked=file_id, swept_id=file_id,
                                        owner_id=principal.key_id)
    return f


async def iter_parts(*, sessions: async_sessionmaker, file_id: str, start: int = 0
                     ) -> AsyncIterator[bytes]:
    """The file's bytes, one part at a time; a session per part, so that a slow reader
    holds no database connection between parts."""
    seq = start
    while True:
        async with sessions() as session:
            data = (await session.execute(
                select(FilePart.data).where(FilePart.file_id == file_id, FilePart.seq == seq)
            )).scalar()
        if data is None:
            return
        yield data
        seq += 1


async def iter_lines(*, sessions: async_sessionmaker, file_id: str
                     ) -> AsyncIterator[list[tuple[int, bytes]]]:
    """The file's lines as lists of (line number from 1, bytes), one list per part.
    Blank lines are left out; line numbers count them, as an editor would."""
    lineno = 0
    tail = b""
    async for part in iter_parts(sessions=sessions, file_id=file_id):
        lines = (tail + part).split(b"\n")
        tail = lines.pop()
        out = []
        for line in lines:
            lineno += 1
            if line.strip():
                out.append((lineno, line))
        yield out
    if tail.strip():
        yield [(lineno + 1, tail)]


async def list_files(*, session: AsyncSession, settings: Settings, principal: Principal,
                     purpose: str | None, limit: int, after: str | None) -> dict:
    # A batch's result files are written while it runs (batch_finalize): they are
    # listed once the batch has ended and points to them.
    unfinished = select(Batch.id).where(Batch.id == File.batch_id,
                                        Batch.status.in_(BATCH_WORKING)).exists()
    stmt = select(File).where(File.owner_id == principal.key_id, ~unfinished)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    if after:
        stmt = stmt.where(File.id < after)
    rows = list((await session.execute(stmt.order_by(File.id.desc()).limit(limit + 1))).scalars())
    data = [file_object(f, settings) for f in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


async def delete_file(*, session: AsyncSession, principal: Principal, file_id: str) -> dict:
    f = await get_file(session=session, principal=principal, file_id=file_id)
    busy = (await session.execute(
        select(Batch.id).where(Batch.input_file_id == f.id, Batch.status.in_(BATCH_WORKING))
        .limit(1))).scalar()
    if busy:
        raise Conflict(f"file {file_id} is the input of batch {busy}, which is still active")
    await remove_files(session, [f.id])
    await session.commit()
    return {"id": f.id, "object": "file", "deleted": True}


async def remove_files(session: AsyncSession, file_ids: list[str]) -> None:
    # Parts first: SQLite does not enforce the foreign key's cascade.
    await session.execute(delete(FilePart).where(FilePart.file_id.in_(file_ids)))
    await session.execute(delete(File).where(File.id.in_(file_ids)))
