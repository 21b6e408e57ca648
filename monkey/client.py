"""A Python client for Monkey Coder, on httpx: `MonkeyClient` and `AsyncMonkeyClient`.

    with MonkeyClient("http://127.0.0.1:8000", api_key) as mc:
        job = mc.submit("debug/echo", "hello there")
        for event in mc.events(job["id"]):        # resumes with Last-Event-ID after a drop
            if event.type == "token":
                print(event.data["text"], end="")
        batch = mc.submit_batch("requests.jsonl", wait=True)
        for line in mc.batch_results(batch["id"]):
            ...

The base URL and key default to MONKEY_API_URL (else http://127.0.0.1:8000) and
MONKEY_API_KEY (else the key that `monkey up` keeps in .monkey/api-key). Every error
raises MonkeyAPIError with the HTTP status (0 when the API could not be reached), the
error type and its message.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
JOB_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
BATCH_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_RETRIES = 6  # reconnections of an event stream in a row before giving up


class MonkeyAPIError(Exception):
    """An error answer of the API, or `status` 0 when it could not be reached."""

    def __init__(self, status: int, type: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {type}: {message}" if status else f"{type}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job: status, token, progress, error or done."""

    id: str | None
    type: str
    data: dict


def default_api_key() -> str | None:
    key = os.environ.get("MONKEY_API_KEY")
    if key:
        return key.strip()
    path = Path(os.environ.get("MONKEY_DATA_DIR", ".monkey")) / "api-key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _raise_for(resp: httpx.Response, body: bytes) -> None:
    if resp.status_code < 400:
        return
    try:
        err = json.loads(body)["error"]
        type_, message = err.get("type", "error"), err.get("message", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        type_, message = "http_error", body.decode(errors="replace")[:500]
    retry = resp.headers.get("retry-after")
    raise MonkeyAPIError(resp.status_code, type_, message,
                         float(retry) if retry and retry.isdigit() else None)


def _unreachable(base_url: str, exc: Exception) -> MonkeyAPIError:
    return MonkeyAPIError(0, "connection_error", f"cannot reach {base_url}: {exc}")


class SSEParser:
    """Turns the lines of a text/event-stream into Events (comments are skipped)."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._type = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            event = None
            if self._data:
                event = Event(self._id, self._type, json.loads("\n".join(self._data)))
            self._id, self._type, self._data = None, "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            self._id = value
        elif name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        return None


def job_body(model: str, prompt: str | None = None, *, messages: list[dict] | None = None,
             texts: list[str] | None = None, kind: str | None = None,
             params: dict | None = None, priority: str | None = None,
             metadata: dict | None = None, timeout_s: float | None = None,
             start_by_s: float | None = None) -> dict:
    """The body of POST /v1/jobs: `texts` makes an embed job, else `prompt` or `messages`."""
    if texts is not None:
        body: dict[str, Any] = {"kind": kind or "embed", "input": {"texts": list(texts)}}
    elif messages is not None:
        body = {"kind": kind or "generate", "input": {"messages": messages}}
    else:
        body = {"kind": kind or "generate", "input": {"prompt": prompt}}
    body["model"] = model
    extra = {"params": params, "priority": priority, "metadata": metadata,
             "timeout_s": timeout_s, "start_by_s": start_by_s}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def endpoint_of(first_line: bytes) -> str:
    """A batch file's endpoint, from the `url` of its first line."""
    try:
        url = json.loads(first_line).get("url")
    except (ValueError, AttributeError):
        url = None
    if not isinstance(url, str):
        raise ValueError("cannot tell the endpoint from the file's first line: pass endpoint")
    return url


def _first_line(path: Path) -> bytes:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                return line
    return b""


def _check(deadline: float | None, job_id: str, timeout: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"job {job_id} did not end within {timeout}s")


def _line_order(line: dict) -> str:
    # Result ids follow the input's line order (batch_req_ + the line's job id).
    return line.get("id") or ""


class _Base:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0):
        self.base_url = (base_url or os.environ.get("MONKEY_API_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else default_api_key()
        self.timeout = timeout

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _stream_timeout(self) -> httpx.Timeout:
        # The server sends a keep-alive every few seconds; silence this long is a drop.
        return httpx.Timeout(self.timeout, read=30.0)


class MonkeyClient(_Base):
    """The synchronous client."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, api_key, timeout=timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers(),
                                  timeout=timeout, transport=transport)

    def __enter__(self) -> MonkeyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        _raise_for(resp, resp.content)
        return resp.json() if "json" in resp.headers.get("content-type", "") else resp.content

    # Jobs ---------------------------------------------------------------------------
    def submit(self, model: str, prompt: str | None = None, *,
               idempotency_key: str | None = None, **kw) -> dict:
        """Submit a job; returns its envelope (status `queued`). See `job_body`."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._call("POST", "/v1/jobs", json=job_body(model, prompt, **kw),
                          headers=headers)

    def get(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def list(self, *, status: str | None = None, kind: str | None = None, limit: int = 20,
             after: str | None = None) -> dict:
        params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit,
                                    "after": after}.items() if v is not None}
        return self._call("GET", "/v1/jobs", params=params)

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def events(self, job_id: str, *, last_event_id: str | None = None,
               timeout: float | None = None) -> Iterator[Event]:
        """The job's events until `done`, reconnecting with Last-Event-ID after a drop.
        TimeoutError when `timeout` seconds pass first."""
        last, failures = last_event_id, 0
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                       timeout=self._stream_timeout()) as resp:
                    if resp.status_code >= 400:
                        _raise_for(resp, resp.read())
                    parser = SSEParser()
                    for line in resp.iter_lines():
                        _check(deadline, job_id, timeout)
                        event = parser.feed(line)
                        if event is None:
                            continue
                        last, failures = event.id or last, 0
                        yield event
                        if event.type == "done":
                            return
                    # Closed before `done` (an API restart, a proxy): resume like a drop.
                    raise httpx.RemoteProtocolError("the event stream ended before done")
            except httpx.TransportError as exc:
                failures += 1
                if failures > _RETRIES:
                    raise _unreachable(self.base_url, exc) from exc
                _check(deadline, job_id, timeout)
                time.sleep(min(0.25 * 2 ** failures, 5.0))

    def wait(self, job_id: str, *, timeout: float | None = None) -> dict:
        """The job's final envelope. TimeoutError when `timeout` passes first."""
        for event in self.events(job_id, timeout=timeout):
            if event.type == "done":
                return event.data
        raise MonkeyAPIError(0, "stream_error", f"job {job_id}: stream ended without done")

    # Files and batches ---------------------------------------------------------------
    def upload_file(self, file: str | Path | bytes | IO[bytes], *, purpose: str = "batch",
                    filename: str | None = None) -> dict:
        if isinstance(file, str | Path):
            with Path(file).open("rb") as f:
                return self.upload_file(f, purpose=purpose, filename=filename or Path(file).name)
        name = filename or getattr(file, "name", None) or "upload.jsonl"
        return self._call("POST", "/v1/files", data={"purpose": purpose},
                          files={"file": (Path(str(name)).name, file)},
                          timeout=httpx.Timeout(self.timeout, write=600.0, read=600.0))

    def file_content(self, file_id: str) -> bytes:
        return self._call("GET", f"/v1/files/{file_id}/content")

    def create_batch(self, input_file_id: str, endpoint: str, *, completion_window: str = "24h",
                     metadata: dict | None = None) -> dict:
        body: dict[str, Any] = {"input_file_id": input_file_id, "endpoint": endpoint,
                "completion_window": completion_window}
        if metadata:
            body["metadata"] = metadata
        return self._call("POST", "/v1/batches", json=body)

    def submit_batch(self, path: str | Path, *, endpoint: str | None = None,
                     metadata: dict | None = None) -> dict:
        """Upload a JSONL file and start a batch on it (endpoint from its first line)."""
        endpoint = endpoint or endpoint_of(_first_line(Path(path)))
        f = self.upload_file(path)
        return self.create_batch(f["id"], endpoint, metadata=metadata)

    def get_batch(self, batch_id: str) -> dict:
        return self._call("GET", f"/v1/batches/{batch_id}")

    def list_batches(self, *, limit: int = 20, after: str | None = None) -> dict:
        params = {"limit": limit, **({"after": after} if after else {})}
        return self._call("GET", "/v1/batches", params=params)

    def cancel_batch(self, batch_id: str) -> dict:
        return self._call("POST", f"/v1/batches/{batch_id}/cancel")

    def wait_batch(self, batch_id: str, *, poll_s: float = 1.0, timeout: float | None = None,
                   on_update: Callable[[dict], None] | None = None) -> dict:
        """Poll until the batch ends; `on_update` sees every state read."""
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            batch = self.get_batch(batch_id)
            if on_update:
                on_update(batch)
            if batch["status"] in BATCH_TERMINAL:
                return batch
            if deadline and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} did not end within {timeout}s")
            time.sleep(poll_s)

    def batch_results(self, batch_id: str) -> builtins.list[dict]:
        """Every answered line (output and error files), in the input's line order."""
        batch = self.get_batch(batch_id)
        lines = []
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                lines += [json.loads(x) for x in self.file_content(file_id).splitlines() if x]
        return sorted(lines, key=_line_order)


class AsyncMonkeyClient(_Base):
    """The asynchronous client: the same methods, awaited."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, api_key, timeout=timeout)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers(),
                                       timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncMonkeyClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kw) -> Any:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        _raise_for(resp, resp.content)
        return resp.json() if "json" in resp.headers.get("content-type", "") else resp.content

    async def submit(self, model: str, prompt: str | None = None, *,
                     idempotency_key: str | None = None, **kw) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call("POST", "/v1/jobs", json=job_body(model, prompt, **kw),
                                headers=headers)

    async def get(self, job_id: str) -> dict:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def list(self, *, status: str | None = None, kind: str | None = None,
                   limit: int = 20, after: str | None = None) -> dict:
        params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit,
                                    "after": after}.items() if v is not None}
        return await self._call("GET", "/v1/jobs", params=params)

    async def cancel(self, job_id: str) -> dict:
        return await self._call("POST", f"/v1/jobs/{job_id}/cancel")

    async def events(self, job_id: str, *, last_event_id: str | None = None,
                     timeout: float | None = None) -> AsyncIterator[Event]:
        last, failures = last_event_id, 0
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                async with self._http.stream("GET", f"/v1/jobs/{job_id}/events",
                                             headers=headers,
                                             timeout=self._stream_timeout()) as resp:
                    if resp.status_code >= 400:
                        _raise_for(resp, await resp.aread())
                    parser = SSEParser()
                    async for line in resp.aiter_lines():
                        _check(deadline, job_id, timeout)
                        event = parser.feed(line)
                        if event is None:
                            continue
                        last, failures = event.id or last, 0
                        yield event
                        if event.type == "done":
                            return
                    # Closed before `done` (an API restart, a proxy): resume like a drop.
                    raise httpx.RemoteProtocolError("the event stream ended before done")
            except httpx.TransportError as exc:
                failures += 1
                if failures > _RETRIES:
                    raise _unreachable(self.base_url, exc) from exc
                _check(deadline, job_id, timeout)
                await asyncio.sleep(min(0.25 * 2 ** failures, 5.0))

    async def wait(self, job_id: str, *, timeout: float | None = None) -> dict:
        async for event in self.events(job_id, timeout=timeout):
            if event.type == "done":
                return event.data
        raise MonkeyAPIError(0, "stream_error", f"job {job_id}: stream ended without done")

    async def upload_file(self, file: str | Path | bytes | IO[bytes], *,
                          purpose: str = "batch", filename: str | None = None) -> dict:
        if isinstance(file, str | Path):
            # httpx's async client takes bytes or an async stream, not a sync file.
            data = await asyncio.to_thread(Path(file).read_bytes)
            return await self.upload_file(data, purpose=purpose,
                                          filename=filename or Path(file).name)
        name = filename or getattr(file, "name", None) or "upload.jsonl"
        content = file if isinstance(file, bytes) else file.read()
        return await self._call("POST", "/v1/files", data={"purpose": purpose},
                                files={"file": (Path(str(name)).name, content)},
                                timeout=httpx.Timeout(self.timeout, write=600.0, read=600.0))

    async def file_content(self, file_id: str) -> bytes:
        return await self._call("GET", f"/v1/files/{file_id}/content")

    async def create_batch(self, input_file_id: str, endpoint: str, *,
                           completion_window: str = "24h", metadata: dict | None = None) -> dict:
        body: dict[str, Any] = {"input_file_id": input_file_id, "endpoint": endpoint,
                "completion_window": completion_window}
        if metadata:
            body["metadata"] = metadata
        return await self._call("POST", "/v1/batches", json=body)

    async def submit_batch(self, path: str | Path, *, endpoint: str | None = None,
                           metadata: dict | None = None) -> dict:
        endpoint = endpoint or endpoint_of(await asyncio.to_thread(_first_line, Path(path)))
        f = await self.upload_file(path)
        return await self.create_batch(f["id"], endpoint, metadata=metadata)

    async def get_batch(self, batch_id: str) -> dict:
        return await self._call("GET", f"/v1/batches/{batch_id}")

    async def list_batches(self, *, limit: int = 20, after: str | None = None) -> dict:
        params = {"limit": limit, **({"after": after} if after else {})}
        return await self._call("GET", "/v1/batches", params=params)

    async def cancel_batch(self, batch_id: str) -> dict:
        return await self._call("POST", f"/v1/batches/{batch_id}/cancel")

    async def wait_batch(self, batch_id: str, *, poll_s: float = 1.0,
                         timeout: float | None = None,
                         on_update: Callable[[dict], None] | None = None) -> dict:
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            batch = await self.get_batch(batch_id)
            if on_update:
                on_update(batch)
            if batch["status"] in BATCH_TERMINAL:
                return batch
            if deadline and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} did not end within {timeout}s")
            await asyncio.sleep(poll_s)

    async def batch_results(self, batch_id: str) -> builtins.list[dict]:
        batch = await self.get_batch(batch_id)
        lines = []
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                content = await self.file_content(file_id)
                lines += [json.loads(x) for x in content.splitlines() if x]
        return sorted(lines, key=_line_order)


__all__ = ["AsyncMonkeyClient", "Event", "MonkeyAPIError", "MonkeyClient", "SSEParser",
           "default_api_key", "job_body"]
