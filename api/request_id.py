"""`x-request-id` on every response: the client's own id when it sent a sane one (an
ASCII token of at most 128 characters), else a new `req_...`; the openai SDK reads it
into `_request_id`, and a client can quote it in a report.

A plain ASGI middleware (streams pass through untouched), outermost but for
Starlette's ServerErrorMiddleware: the id is also left in the scope, where the 500
handler (api/errors.py) finds it, so an unhandled error carries it too.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.ids import new_id

HEADER = b"x-request-id"
SCOPE_KEY = "monkey.request_id"
_SANE = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}$")


def request_id_of(scope: Scope) -> str | None:
    return scope.get(SCOPE_KEY)


class RequestId:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == HEADER), b"")
        rid = sent.decode() if _SANE.match(sent) else new_id("req")
        scope[SCOPE_KEY] = rid
        raw = rid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, raw)]}
            await send(message)

        await self.app(scope, receive, send_with_id)
