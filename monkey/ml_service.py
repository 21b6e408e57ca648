"""`monkey ml-service`: the ML service's start command, so that it can scale to zero.

The seed's plan says the ML service "can scale to 0 when not in use". A gpu worker that
sits idle still holds its models in memory and keeps polling Redis, so nothing can put
its container to sleep; and a worker that simply exits leaves a platform nothing to wake
(Railway treats an exited process as finished, not asleep). So the service runs this
small supervisor instead, with no model and no torch in it:

- it serves `GET /healthz` on PORT at all times, asleep or not (the body says which);
- `POST /wake` starts the worker (`monkey worker --queues gpu --idle-exit S`) if it is
  not running; the API sends it through `ML_SERVICE_URL` when gpu jobs wait and no gpu
  worker is alive (api/wake.py);
- at start, and every `--check-every` seconds while asleep if asked, it looks for task
  messages on its queues and starts the worker for them. Off by default: on Railway any
  outbound packet keeps a Serverless service awake, so an asleep service must not poll;
- when the worker exits 0 after its idle time, the service sleeps until woken; when it
  crashes, it is started again after a backoff;
- SIGTERM or SIGINT stops the worker (which drains) and then the service.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("monkey.ml_service")

_BACKOFF_MAX_S = 30.0


class MLService:
    """The worker child and its state; one lock guards both."""

    def __init__(self, *, queues: list[str], idle_exit_s: float, redis_url: str | None,
                 check_every_s: float = 0.0, log_level: str = "INFO"):
        self.queues = queues
        self.idle_exit_s = idle_exit_s
        self.redis_url = redis_url
        self.check_every_s = check_every_s
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.wakes = 0
        self.last_exit: int | None = None
        self.started_at: float | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._crashes = 0
        self._retry_at = 0.0

    # The worker ---------------------------------------------------------------------
    def command(self) -> list[str]:
        return [sys.executable, "-m", "monkey.cli", "--log-level", self.log_level, "worker",
                "--queues", ",".join(self.queues), "--idle-exit", f"{self.idle_exit_s:g}"]

    def wake(self, reason: str) -> bool:
        """Start the worker unless it runs; True when this call started it."""
        with self._lock:
            self.wakes += reason == "wake"
            self._reap()
            if self._stopping.is_set() or self.proc is not None:
                return False
            self.proc = subprocess.Popen(self.command())  # noqa: S603 - our own CLI
            self.starts += 1
            self.started_at = time.time()
        log.info("worker started (%s)", reason, extra={"pid": self.proc.pid})
        return True

    def _reap(self) -> None:
        """Under the lock: note a worker that exited (sleep after an idle exit, a
        restart with backoff after a crash)."""
        if self.proc is None or self.proc.poll() is None:
            return
        self.last_exit, self.proc = self.proc.returncode, None
        if self.last_exit == 0:
            self._crashes = 0
            log.info("worker exited idle: sleeping until woken")
            return
        self._crashes += 1
        delay = min(2.0 ** (self._crashes - 1), _BACKOFF_MAX_S)
        self._retry_at = time.monotonic() + delay
        log.warning("worker exited with %s: restarting in %.0fs", self.last_exit, delay)

    def status(self) -> dict:
        with self._lock:
            self._reap()
            running = self.proc is not None
            return {"status": "running" if running else "sleeping",
                    "worker_pid": self.proc.pid if running and self.proc else None,
                    "queues": self.queues, "starts": self.starts, "wakes": self.wakes,
                    "last_exit_code": self.last_exit, "idle_exit_s": self.idle_exit_s}

    def work_waiting(self) -> bool:
        """Task messages on our queues' lists (one short connection; errors say yes, so
        that a worker starts and reports the problem itself)."""
        if not self.redis_url:
            return False
        import redis

        from common.constants import PRIORITY_SEP, PRIORITY_STEPS

        names = [f"{q}{PRIORITY_SEP}{s}" if s else q for q in self.queues for s in PRIORITY_STEPS]
        try:
            with redis.Redis.from_url(self.redis_url, socket_connect_timeout=2,
                                      socket_timeout=5) as r:
                pipe = r.pipeline(transaction=False)
                for name in names:
                    pipe.llen(name)
                return sum(pipe.execute()) > 0
        except (redis.RedisError, OSError) as exc:
            log.warning("could not look for waiting work: %s", exc)
            return True

    def watch(self) -> None:
        """Reap the worker: sleep after an idle exit, restart after a crash (backoff)."""
        if self.work_waiting():
            self.wake("work waiting at start")
        last_check = time.monotonic()
        while not self._stopping.wait(0.2):
            with self._lock:
                self._reap()
            now = time.monotonic()
            if self.proc is None and self._crashes and now >= self._retry_at:
                self.wake("restart after a crash")
            elif self.proc is None and self.check_every_s and \
                    now - last_check >= self.check_every_s:
                last_check = now
                if self.work_waiting():
                    self.wake("work waiting")

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the worker drains
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _handler(service: MLService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] in ("/healthz", "/"):
                self._send(200, service.status())
            else:
                self._send(404, {"error": {"type": "not_found", "message": self.path}})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/wake":
                self._send(404, {"error": {"type": "not_found", "message": self.path}})
                return
            started = service.wake("wake")
            self._send(202 if started else 200, service.status())

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - base signature
            log.debug(format, *args)

    return Handler


class _DualStack(ThreadingHTTPServer):
    """`::` accepts IPv4 too (Railway's private network may be IPv6 only)."""

    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _IPv4(ThreadingHTTPServer):
    daemon_threads = True


def run_ml_service(*, host: str, port: int, queues: list[str], idle_exit_s: float,
                   redis_url: str | None, check_every_s: float, log_level: str) -> int:
    service = MLService(queues=queues, idle_exit_s=idle_exit_s, redis_url=redis_url,
                        check_every_s=check_every_s, log_level=log_level)
    server_cls = _DualStack if ":" in host else _IPv4
    server = server_cls((host, port), _handler(service))
    done = threading.Event()

    def _stop(*_a) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    watcher = threading.Thread(target=service.watch, name="watch", daemon=True)
    watcher.start()
    log.info("ml service on %s:%d (queues %s, idle exit %gs)", host, port,
             ",".join(queues), idle_exit_s, extra={"pid": os.getpid()})
    done.wait()
    service.stop()
    server.shutdown()
    return 0


__all__ = ["MLService", "run_ml_service"]
