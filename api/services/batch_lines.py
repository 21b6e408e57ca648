"""A batch's input lines: validated, and turned into job rows; its results as lines.

Pure functions (no I/O), run in a thread by batch_work so that parsing 200 MB of JSON
never stalls the event loop. A line is validated exactly as the same request sent to
the interactive route would be (openai_shapes.parse_request, then new_job_values).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_

from api.deps import Principal
from api.services.jobs import new_job_values
from api.services.openai_shapes import parse_request, response_body
from api.services.responses_shapes import batch_job, batch_response_body
from common import jsontext
from common.batches_db import Batch
from common.constants import DEBUG_ECHO, DEBUG_EMBED, LOCAL_PREFIX
from common.db import Job
from common.errors import MonkeyError, RequestError
from common.jobs import JOB_COLUMNS, envelope, iso
from common.producer import TaskMessage
from common.settings import Settings

RESPONSES = "/v1/responses"
MAX_LINES = 50_000
MAX_ERRORS = 100
MAX_CUSTOM_ID = 512
# Job attribute -> column name, for Core INSERTs of plain dicts (metadata_ -> metadata).
COLUMN_OF = {a.key: c.name for a in Job.__mapper__.column_attrs for c in a.columns}


class LineError(MonkeyError):
    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


def parse_line(raw: bytes, endpoint: str):
    """(custom_id, JobCreate) of one line, or LineError."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise LineError("invalid_json_line", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LineError("invalid_json_line", "a line must be a JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise LineError("invalid_custom_id",
                        f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters",
                        "custom_id")
    if obj.get("method") != "POST":
        raise LineError("invalid_method", "method must be POST", "method")
    if obj.get("url") != endpoint:
        raise LineError("mismatched_url",
                        f"url {obj.get('url')!r} differs from the batch's endpoint {endpoint}",
                        "url")
    body = obj.get("body")
    if isinstance(body, dict) and body.get("stream"):
        raise LineError("invalid_request", "stream is not allowed in a batch", "body.stream")
    try:
        if endpoint == RESPONSES:
            job_in = batch_job(body)
        else:
            _, job_in = parse_request(endpoint, body, priority="batch")
    except RequestError as exc:
        raise LineError("invalid_request", exc.message, "body") from None
    return custom_id, job_in


@dataclass
class Checker:
    """Validates a batch's lines in order, collecting errors with their line numbers."""

    settings: Settings
    principal: Principal
    endpoint: str
    count: int = 0
    errors: list[dict] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)

    @property
    def stop(self) -> bool:
        return len(self.errors) >= MAX_ERRORS or self.count > MAX_LINES

    def check(self, lines: list[tuple[int, bytes]]) -> None:
        for lineno, raw in lines:
            if self.stop:
                return
            self.count += 1
            if self.count > MAX_LINES:
                self._error("too_many_requests",
                            f"a batch takes at most {MAX_LINES} requests", lineno)
                return
            try:
                custom_id, job_in = parse_line(raw, self.endpoint)
                new_job_values(settings=self.settings, principal=self.principal, job_in=job_in,
                               job_id="-")  # no id: nothing is written
            except LineError as exc:
                self._error(exc.code, exc.message, lineno, exc.param)
                continue
            except RequestError as exc:  # unknown model, over a limit
                self._error("invalid_request", exc.message, lineno, "body")
                continue
            first = self.seen.setdefault(custom_id, lineno)
            if first != lineno:
                self._error("duplicate_custom_id",
                            f"custom_id {custom_id!r} was already used on line {first}",
                            lineno, "custom_id")

    def finish(self) -> list[dict]:
        if not self.count and not self.errors:
            self._error("empty_file", "the input file has no requests", None)
        return self.errors

    def _error(self, code: str, message: str, line: int | None, param: str | None = None):
        where = f"line {line}: " if line is not None else ""
        self.errors.append({"code": code, "message": where + message, "param": param,
                            "line": line})


def line_job_id(batch: Batch, lineno: int, suffix: str | None = None) -> str:
    """Job ids that sort in line order within a batch, in new_id's shape and length."""
    millis = batch.id.removeprefix("batch_")[:12]
    return f"job_{millis}{lineno:06x}{suffix or secrets.token_hex(5)}"


def job_rows(settings: Settings, batch: Batch, lines: list[tuple[int, bytes]]) -> list[dict]:
    """Rows to insert for lines that validation already passed, by column name (for a
    Core INSERT of the jobs table)."""
    principal = Principal(batch.owner_id, "")
    # The ids' random tails from one read of the system's random source, not one a line.
    tails = secrets.token_hex(5 * len(lines))
    rows = []
    for n, (lineno, raw) in enumerate(lines):
        custom_id, job_in = parse_line(raw, batch.endpoint)
        values = new_job_values(settings=settings, principal=principal, job_in=job_in,
                                batch_id=batch.id, custom_id=custom_id,
                                job_id=line_job_id(batch, lineno, tails[10 * n:10 * n + 10]))
        # The completion window: a line no worker took by then expires (as start_by).
        values["start_by"] = batch.expires_at
        # Every column in every row (one executemany needs one set of keys): a column
        # the values leave out (a webhook's, for a line without one) is NULL.
        rows.append({col: values.get(attr) for attr, col in COLUMN_OF.items()})
    return rows


_DEBUG = (DEBUG_ECHO, DEBUG_EMBED)


def chunked(row: dict) -> bool:
    """Lines whose machinery costs more than their model (echo, local and debug
    embeddings) run in chunks; a provider's line, bound by its network round trip, runs
    alone on a task thread so that lines overlap."""
    return row["model"] in _DEBUG or (
        row["kind"] == "embed" and row["model"].startswith(LOCAL_PREFIX + "/"))


def chunked_lines() -> Any:
    """`chunked` as a condition on the jobs table: the batch lines that may share a
    task message."""
    return and_(Job.batch_id.is_not(None), or_(
        Job.model.in_(_DEBUG),
        and_(Job.kind == "embed", Job.model.startswith(LOCAL_PREFIX + "/"))))


def task_messages(rows: list[dict], chunk_lines: int) -> list[TaskMessage]:
    """The task messages for a batch's new job rows: consecutive lines of one model go
    out `chunk_lines` to a message where they run in chunks, one each otherwise."""
    messages: list[TaskMessage] = []
    run: list[dict] = []
    for row in rows:
        if run and (len(run) >= chunk_lines or row["model"] != run[0]["model"]
                    or row["kind"] != run[0]["kind"]):
            messages.append(TaskMessage.chunk(run))
            run = []
        if chunked(row) and chunk_lines > 1:
            run.append(row)
        else:
            messages.append(TaskMessage.of_row(row))
    if run:
        messages.append(TaskMessage.chunk(run))
    return messages


# Results ------------------------------------------------------------------------------

_LINE_ERRORS = {
    "expired": ("batch_expired",
                "This request could not be executed before the completion window expired."),
    "batch_cancelled": ("batch_cancelled", "The batch was cancelled before this request ran."),
}


def _encode(line: dict) -> bytes:
    return jsontext.dumps_bytes(line) + b"\n"


def unrun_lines(batch: Batch, lines: list[tuple[int, bytes]]) -> list[bytes]:
    """Error lines for input lines that never became jobs (the batch was cancelled while
    they were being enqueued), so that every line is still answered once."""
    code, message = _LINE_ERRORS["batch_cancelled"]
    out = []
    for lineno, raw in lines:
        job_id = line_job_id(batch, lineno, "0" * 10)
        out.append(_encode({"id": f"batch_req_{job_id.removeprefix('job_')}",
                            "custom_id": json.loads(raw)["custom_id"], "response": None,
                            "error": {"code": code, "message": message}}))
    return out


# What a result line of a chat completion or an embedding reads of its job: the input,
# params and the other timestamps, parsed and formatted for every line, it does not.
_RESULT_ATTRS = ("id", "custom_id", "status", "model", "output", "error", "metrics",
                 "metadata_", "created_at")
_RESULT_COLUMNS = tuple(c for c in JOB_COLUMNS if c.name in _RESULT_ATTRS)


def result_columns(endpoint: str) -> tuple:
    """The columns result_line needs of a line's job on `endpoint` (a Responses line's
    body repeats its request: all of them)."""
    return JOB_COLUMNS if endpoint == RESPONSES else _RESULT_COLUMNS


def _result_env(job: Any) -> dict[str, Any]:
    """The part of the job's envelope a chat completion or an embedding body reads."""
    return {"id": job.id, "model": job.model, "status": job.status, "output": job.output,
            "error": job.error, "metrics": job.metrics or {}, "metadata": job.metadata_ or {},
            "created_at": iso(job.created_at)}


def result_line(job: Job | Any, endpoint: str) -> tuple[str, bytes]:
    """("ok" | "failed" | "unfinished", the line) for one line's job (a Job or a row of
    result_columns(endpoint))."""
    env = envelope(job) if endpoint == RESPONSES else _result_env(job)
    line: dict[str, Any] = {"id": f"batch_req_{job.id.removeprefix('job_')}",
                            "custom_id": job.custom_id}
    if job.status == "succeeded":
        body = batch_response_body(env) if endpoint == RESPONSES else response_body(endpoint, env)
        line["response"] = {"status_code": 200, "request_id": job.id, "body": body}
        line["error"] = None
        kind = "ok"
    else:
        err = job.error or {}
        # A line with no error of its own was cancelled with its batch (a running
        # line is stopped by the batch's cancel).
        type_ = err.get("type") or ("batch_cancelled" if job.status == "cancelled"
                                    else job.status)
        code, message = _LINE_ERRORS.get(type_, (type_, err.get("message") or job.status))
        line["response"] = None
        line["error"] = {"code": code, "message": message}
        kind = "failed" if job.status == "failed" else "unfinished"
    return kind, _encode(line)
