"""The FastAPI app: `create_app(settings)`; uvicorn runs it as a factory. Tests run it
in-process with `create_app(settings, producer=StubProducer())`."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match

from api import errors, responses
from api.deps import get_principal
from api.limits import BodyLimit
from api.request_id import RequestId
from api.routes import batches, files, jobs, openai_chat, ops, system, webhooks
from api.routes import responses as responses_api
from api.state import close_state, open_state
from common.errors import NotFound
from common.producer import Producer
from common.settings import Settings, get_settings

log = logging.getLogger("monkey.api")

DEFAULT_WEB_DIR = Path(__file__).resolve().parent.parent / "web" / "out"


def create_app(settings: Settings | None = None, *, producer: Producer | None = None
               ) -> FastAPI:
    """`producer`: where job tasks go (by default Celery's, on settings.redis_url); the
    app closes it on shutdown."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = open_state(settings, producer)
        app.state.monkey = state
        state.producer.start()
        state.shutdown.install()
        try:
            yield
        finally:
            state.shutdown.uninstall()
            await close_state(state)

    app = FastAPI(title="Monkey Coder", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    # Routers behind a key answer AUTHED's errors on every route; system.py declares its
    # own (health and metrics need no key).
    keyed = responses.AUTHED
    # The OpenAI-compatible routes answer a malformed request 400 and an unknown model
    # 404, as OpenAI does (api/errors.py).
    openai_keyed = {**keyed, **responses.errors(400, 404)}
    app.include_router(jobs.router, responses=keyed)
    app.include_router(system.router)
    app.include_router(ops.router, responses=keyed)
    app.include_router(openai_chat.router, responses=openai_keyed)
    app.include_router(responses_api.router, responses=openai_keyed)
    app.include_router(webhooks.router, responses=keyed)
    app.include_router(files.router, responses=openai_keyed)
    app.include_router(batches.router, responses=openai_keyed)
    origins = settings.cors_origin_list()
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Idempotency-Key",
                           "Prefer", "X-Request-Id"],
            expose_headers=["Retry-After", "Location", "X-Request-Id"], max_age=600,
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       overrides={"/v1/files": settings.max_file_bytes + 1_000_000})
    app.add_middleware(RequestId)  # added last: outside CORS and the body limit
    # After every API route and before the web UI's mount: an unknown API path is a
    # JSON 404 and a known one asked with another method a JSON 405, whatever the
    # method, never the UI's page (or its 405 for a POST).
    app.add_api_route("/v1/{path:path}", _unknown_route, include_in_schema=False,
                      methods=_ANY_METHOD,
                      dependencies=[Depends(get_principal)])
    web_dir = settings.web_dir or DEFAULT_WEB_DIR
    if (web_dir / "index.html").exists():
        app.mount("/", StaticFiles(directory=web_dir, html=True), name="web")
    return app


_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


async def _unknown_route(request: Request, path: str) -> None:
    # RFC 9110: a 405 names the methods the resource has in `Allow`. The routes before
    # this one are the API's; the web UI's mount after it would match anything.
    routes = request.app.router.routes
    api_routes = routes[:next(i for i, r in enumerate(routes)
                              if getattr(r, "endpoint", None) is _unknown_route)]
    allowed = [m for m in _ANY_METHOD if any(
        r.matches({**request.scope, "method": m})[0] is Match.FULL for r in api_routes)]
    if allowed:
        raise HTTPException(405, headers={"Allow": ", ".join(allowed)})
    raise NotFound(f"no route /v1/{path}")
