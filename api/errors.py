"""Every error leaves the API as {"error": {"type", "message", "param", "code"}} with its
status: OpenAI's error body (`param`, the request field at fault, and `code`, a finer
reason, are null when there is none).

The OpenAI-compatible routes (OPENAI_ROUTES) answer as OpenAI does where the native API
answers otherwise: a malformed request or an unsupported parameter is 400 there (422
on the native API), and an unknown model 404 with code `model_not_found`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.request_id import HEADER, request_id_of
from common.errors import InvalidRequest, ModelNotFound, RequestError

log = logging.getLogger("monkey.api")


OPENAI_ROUTES = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/models",
                 "/v1/files", "/v1/batches")


def is_openai_route(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPENAI_ROUTES)


def error_body(type_: str, message: str, *, param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"type": type_, "message": message, "param": param, "code": code}}


def error_response(status: int, type_: str, message: str, retry_after: float | None = None,
                   *, param: str | None = None, code: str | None = None):
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return JSONResponse(error_body(type_, message, param=param, code=code), status_code=status,
                        headers=headers)


def _status(req: Request, status: int) -> int:
    """A 422 is a 400 on the OpenAI-compatible routes."""
    return 400 if status == 422 and is_openai_route(req.url.path) else status


def _param(errors: Sequence[Any]) -> str | None:
    for e in errors[:1]:
        loc = [p for p in e.get("loc", ()) if p not in ("body",)]
        return ".".join(str(p) for p in loc) or None
    return None


def _describe(errors: Sequence[Any]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(req: Request, exc: RequestError):
        status = exc.status
        if isinstance(exc, ModelNotFound) and is_openai_route(req.url.path):
            status = 404
        elif isinstance(exc, InvalidRequest):
            status = _status(req, status)
        return error_response(status, exc.type, exc.message, exc.retry_after,
                              param=exc.param, code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(req: Request, exc: RequestValidationError):
        return error_response(_status(req, 422), "invalid_request", _describe(exc.errors()),
                              param=_param(exc.errors()))

    async def _database_down(_req: Request, exc: Exception):
        if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError | InterfaceError) \
                and not exc.connection_invalidated:
            raise exc
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(503, "unavailable", "the database is unavailable; retry shortly",
                              retry_after=2)

    for exc_type in (DBAPIError, ConnectionError, TimeoutError):
        app.add_exception_handler(exc_type, _database_down)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot parse (broken JSON or multipart): a
            # malformed request, 422 like every other here (and like the OpenAI routes,
            # which parse their own JSON).
            return error_response(_status(req, 422), "invalid_request",
                                  f"the request body cannot be parsed: {exc.detail}")
        types = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                 413: "payload_too_large"}
        resp = error_response(exc.status_code, types.get(exc.status_code, "http_error"),
                              str(exc.detail))
        # Keep the headers the exception carries: a 405's `Allow` (RFC 9110 requires it).
        resp.headers.update(exc.headers or {})
        return resp

    @app.exception_handler(Exception)
    async def _internal(req: Request, exc: Exception):
        # Starlette's ServerErrorMiddleware answers with this (and still raises, so the
        # traceback is logged), outside the RequestId middleware: the id is added here.
        resp = error_response(500, "internal_error",
                              "the server failed to answer this request; retry it")
        rid = request_id_of(req.scope)
        if rid:
            resp.headers[HEADER.decode()] = rid
        return resp
