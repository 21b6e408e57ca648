"""`monkey up`: the whole stack on one machine, on embedded defaults.

SQLite under .monkey/, a private Redis server (unless REDIS_URL is set), migrations,
an API key on first run, then the API (serving the built web UI), a worker for each
queue and Flower, as child processes. Ctrl-C, SIGTERM (a platform's redeploy, when
the whole stack is one service) or the terminal closing stops all of them: each child
gets SIGTERM and its drain window (MONKEY_DRAIN_S) before SIGKILL; none is left behind.
The children run in process groups of their own, so a Ctrl-C on the terminal reaches
`monkey up` alone and each child is stopped once, the way a platform stops it.

The children's output comes through `monkey up`: a reader thread per child reads its
pipe line by line and writes whole lines under one lock, so lines never interleave.
On a terminal (or with MONKEY_LOG_FORMAT=text) each line reads
`api        | 12:01:02 INFO  message`; otherwise every line is a JSON object with a
`service` field (see monkey/logs.py). Celery's startup banner is folded to one line.
"Monkey Coder is up" is printed once, when every service is ready: the API's /readyz,
each worker's presence in Redis marked ready (the gpu worker after loading its
models), Flower's port. On a terminal, a one-line reminder of the URLs and the key
comes back when the banner has scrolled away and the output goes quiet.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from common.settings import Settings
from monkey import logs
from monkey.embedded import EmbeddedRedis

log = logging.getLogger("monkey.up")

API_READY_TIMEOUT_S = 60.0
WAIT_NOTE_EVERY_S = 15.0  # "waiting for: ..." again while nothing changes
REMINDER_IDLE_S = float(os.environ.get("MONKEY_UP_REMINDER_IDLE_S", "5"))
REMINDER_EVERY_S = 300.0  # under output that never pauses
_HINTS = {"gpu-worker": "loading models"}
_PREFIX_COLOURS = ("36", "35", "34", "33", "32", "96", "95")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_key(settings: Settings) -> str | None:
    """Create a key on the first run and keep it in .monkey/api-key (mode 600)."""
    from common.keys import create_api_key

    path = settings.data_dir / "api-key"
    if path.exists():
        return None
    key = asyncio.run(create_api_key(settings, "local"))
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


class _Stopped(Exception):
    """Ctrl-C, SIGTERM or SIGHUP arrived: stop the children."""


# The signal handlers only note the request; the main loop stops at its next check. An
# exception raised from a handler could land anywhere, inside a lock the output threads
# and the logging module share as well, and the stop would then wait on it for ever.
_stop_requested = threading.Event()
_stop_signal: list[int] = []


def _request_stop(signum: int, _frame: object) -> None:
    _stop_signal.append(signum)
    _stop_requested.set()


def _pause(seconds: float) -> None:
    """Sleep, or raise _Stopped as soon as a stop is requested."""
    if _stop_requested.wait(seconds):
        raise _Stopped(_stop_signal[0] if _stop_signal else signal.SIGTERM)


# Output ------------------------------------------------------------------------------
class Console:
    """Every line `monkey up` shows: whole lines, one writer at a time. In text mode a
    line from a service gets the service's prefix; in JSON mode JSON lines pass as
    they are and anything else is wrapped in a JSON object."""

    def __init__(self, stream: IO[str], fmt: str, colour: bool, names: list[str]) -> None:
        self.stream = stream
        self.fmt = fmt
        self.colour = colour
        self.width = max(len(n) for n in names)
        self._colours = {n: _PREFIX_COLOURS[i % len(_PREFIX_COLOURS)]
                         for i, n in enumerate(names)}
        self._lock = threading.Lock()
        self.last_line_at = time.monotonic()
        self.lines_since_banner = 0

    def prefix(self, name: str) -> str:
        tag = f"{name:<{self.width}} |"
        if self.colour:
            tag = f"\x1b[{self._colours.get(name, '0')}m{tag}\x1b[0m"
        return tag + " "

    def write(self, text: str, *, counts: bool = True) -> None:
        """Write complete lines (text without its final newline)."""
        with self._lock:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stderr: keep draining
                pass
            if counts:
                self.last_line_at = time.monotonic()
                self.lines_since_banner += text.count("\n") + 1

    def service_line(self, name: str, line: str) -> None:
        if not line.strip():
            return
        if self.fmt == "json":
            self.write(line if _is_json_object(line) else _wrap_json(name, line))
            return
        if line.startswith("{"):  # a child that logs JSON anyway: shown as text
            line = _json_as_text(line)
        self.write("\n".join(self.prefix(name) + part for part in line.split("\n")))

    def banner_done(self) -> None:
        with self._lock:
            self.lines_since_banner = 0


class ConsoleStream:
    """A file-like stream for `monkey up`'s own logging handler: its lines go through
    the console under the `monkey` prefix."""

    def __init__(self, console: Console, name: str = "monkey") -> None:
        self.console = console
        self.name = name
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        if lines:
            self.console.service_line(self.name, "\n".join(lines))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _is_json_object(line: str) -> bool:
    if not (line.startswith("{") and line.rstrip().endswith("}")):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _wrap_json(name: str, line: str) -> str:
    now = time.time()
    return json.dumps({
        "ts": round(now, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)),
        "level": "info", "logger": "output", "msg": line, "service": name,
    })


def _json_as_text(line: str) -> str:
    try:
        rec = json.loads(line)
        stamp = time.strftime("%H:%M:%S", time.localtime(float(rec["ts"])))
        return f"{stamp} {str(rec.get('level', 'info')).upper():<5} {rec['msg']}"
    except (ValueError, KeyError, TypeError):
        return line


class CeleryBannerFolder:
    """Celery's startup banner (the ASCII art, [config], [queues], [tasks]) as one line:
    `celery 5.7.0 llm-123@host: queues llm, concurrency 32 (thread), 2 tasks`."""

    _HEAD = re.compile(r"^\s*-{5,} (\S+@\S+) v(\S+)")
    _QUEUE = re.compile(r"^\s+\.> (\S+)\s+exchange=")
    _MAX_LINES = 60

    def __init__(self) -> None:
        self._held: list[str] | None = None
        self._info: dict[str, list[str]] = {}
        self._section = ""

    def feed(self, line: str) -> list[str]:
        plain = _ANSI.sub("", line)
        if self._held is None:
            head = self._HEAD.match(plain)
            if not head:
                return [line]
            self._held, self._section = [line], ""
            self._info = {"host": [head.group(1)], "version": [head.group(2)],
                          "queues": [], "concurrency": [], "tasks": []}
            return []
        self._held.append(line)
        stripped = plain.strip()
        if stripped in ("[config]", "[queues]", "[tasks]") or stripped.endswith("[queues]"):
            self._section = stripped.strip("-* ").strip("[]")
        elif ".> concurrency:" in plain:
            self._info["concurrency"].append(plain.split(".> concurrency:", 1)[1].strip())
        elif self._section == "queues" and (queue := self._QUEUE.match(plain)):
            self._info["queues"].append(queue.group(1))
        elif self._section == "tasks" and stripped.startswith(". "):
            self._info["tasks"].append(stripped[2:])
        elif self._section == "tasks" and not stripped and self._info["tasks"]:
            return [self._summary()]
        if len(self._held) > self._MAX_LINES:  # not the banner we know: show it as it was
            return self.flush()
        return []

    def _summary(self) -> str:
        info, self._held = self._info, None
        parts = [f"queues {', '.join(info['queues']) or '?'}"]
        if info["concurrency"]:
            parts.append(f"concurrency {info['concurrency'][0]}")
        parts.append(f"{len(info['tasks'])} tasks")
        return f"celery {info['version'][0]} {info['host'][0]}: {', '.join(parts)}"

    def flush(self) -> list[str]:
        held, self._held = self._held or [], None
        return held


def _pump(name: str, pipe: IO[bytes], console: Console) -> None:
    """A child's output, line by line, to the console (until the pipe closes)."""
    folder = CeleryBannerFolder()
    try:
        for raw in iter(pipe.readline, b""):
            # A progress bar redraws itself with \r: its last state is the line.
            text = raw.decode("utf-8", "replace").rstrip("\r\n").rsplit("\r", 1)[-1]
            for line in folder.feed(text):
                console.service_line(name, line)
        for line in folder.flush():
            console.service_line(name, line)
    except (OSError, ValueError):
        pass
    finally:
        pipe.close()


# Readiness ---------------------------------------------------------------------------
class Readiness:
    """Which services are ready: the API's /readyz, each worker's presence in Redis
    marked ready (as the worker publishes it: pid and ready=1), Flower's port."""

    def __init__(self, procs: dict[str, subprocess.Popen], *, port: int, flower_port: int,
                 redis_url: str) -> None:
        import redis

        self.procs = procs
        self.port = port
        self.flower_port = flower_port
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=1,
                                          socket_timeout=2)
        self.ready: set[str] = set()

    def pending(self) -> list[str]:
        waiting = [n for n in self.procs if n not in self.ready]
        workers = [n for n in waiting if n.endswith("worker")]
        ready_pids = self._ready_worker_pids() if workers else set()
        for name in waiting:
            if name.endswith("worker"):
                ok = self.procs[name].pid in ready_pids
            elif name == "api":
                ok = self._api_ready()
            elif name == "flower":
                ok = _port_open(self.flower_port)
            else:
                ok = True
            if ok:
                self.ready.add(name)
        return [n for n in self.procs if n not in self.ready]

    def _api_ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _ready_worker_pids(self) -> set[int]:
        import redis

        from common.constants import WORKER_KEY

        pids = set()
        try:
            for key in self.redis.scan_iter(match=WORKER_KEY.format(worker_id="*")):
                info = self.redis.hmget(key, "pid", "ready")
                if info[1] == b"1" and info[0] is not None:
                    pids.add(int(info[0]))
        except (redis.RedisError, ValueError):
            pass
        return pids

    def close(self) -> None:
        self.redis.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _waiting_note(pending: list[str], port: int) -> str:
    note = "waiting for: " + ", ".join(
        f"{n} ({_HINTS[n]})" if n in _HINTS else n for n in pending)
    if "api" not in pending:  # a model may take minutes to load: the UI works already
        note += f"; the UI answers already on http://127.0.0.1:{port}"
    return note


# The stack ---------------------------------------------------------------------------
def run_up(*, host: str | None, port: int | None, flower_port: int, gpu_worker: bool) -> int:
    env = dict(os.environ)
    fmt, colour = logs.log_format(sys.stderr), logs.use_colour(sys.stderr)
    names = ["api", "llm-worker", "gpu-worker", "flower", "monkey"]
    console = Console(sys.stderr, fmt, colour and fmt == "text", names)
    _own_logging(console, fmt)

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    redis_server = None
    if "REDIS_URL" not in env:
        redis_server = EmbeddedRedis(settings.data_dir / "redis").start()
        env["REDIS_URL"] = redis_server.url
    env.setdefault("DATABASE_URL", settings.database_url)
    settings = Settings(redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"])
    port = port or settings.port
    # The children log as we show them; their stderr is a pipe to us, not the terminal.
    env.update(MONKEY_LOG_FORMAT=fmt, MONKEY_LOG_COLOR="1" if console.colour else "0",
               PYTHONUNBUFFERED="1")

    from common.migrate import upgrade

    upgrade(settings)
    new_key = _first_key(settings)

    commands = _commands(host, port, flower_port, gpu_worker)
    procs: dict[str, subprocess.Popen] = {}
    readers: dict[str, threading.Thread] = {}
    readiness: Readiness | None = None
    _stop_requested.clear()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(sig, _request_stop)
    try:
        for name, cmd in commands.items():
            _pause(0)
            _start(name, cmd, env, console, procs, readers)
        readiness = Readiness(procs, port=port, flower_port=flower_port,
                              redis_url=env["REDIS_URL"])
        code = _wait_ready(readiness, readers)
        if code is not None:
            return code
        readiness.close()
        view = _View(port, flower_port, settings, new_key)
        view.banner(console)
        return _run(procs, readers, view, console)
    except (KeyboardInterrupt, _Stopped) as exc:
        ctrl_c = isinstance(exc, KeyboardInterrupt) or exc.args == (signal.SIGINT,)
        if ctrl_c and console.fmt == "text":
            console.write("", counts=False)  # past the terminal's ^C
        log.info("stopping...")
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the stop
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # nor a second Ctrl-C
        _stop_all(procs, grace_s=settings.drain_s + 4)
        deadline = time.monotonic() + 3
        for reader in readers.values():  # the children's last lines
            reader.join(max(0.0, deadline - time.monotonic()))
        if readiness is not None:
            readiness.close()
        if redis_server:
            redis_server.stop()


def _commands(host: str | None, port: int, flower_port: int,
              gpu_worker: bool) -> dict[str, list[str]]:
    monkey = [sys.executable, "-m", "monkey.cli"]
    commands = {
        "api": [*monkey, "api", "--port", str(port), *(["--host", host] if host else [])],
        "llm-worker": [*monkey, "worker", "--queues", "llm"],
        "flower": [*monkey, "flower", "--port", str(flower_port)],
    }
    if gpu_worker and importlib.util.find_spec("torch") is not None:
        commands["gpu-worker"] = [*monkey, "worker", "--queues", "gpu", "--concurrency", "64"]
    elif gpu_worker:
        log.warning("torch is not installed: no gpu worker (pip install '.[ml]' to add one)")
    return commands


def _start(name: str, cmd: list[str], env: dict[str, str], console: Console,
           procs: dict[str, subprocess.Popen], readers: dict[str, threading.Thread]) -> None:
    """A child in a process group of its own, its output read by a thread of ours."""
    proc = subprocess.Popen(cmd, env={**env, "MONKEY_SERVICE": name},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, process_group=0)
    procs[name] = proc
    assert proc.stdout is not None
    readers[name] = threading.Thread(target=_pump, args=(name, proc.stdout, console),
                                     name=f"output-{name}", daemon=True)
    readers[name].start()


def _run(procs: dict[str, subprocess.Popen], readers: dict[str, threading.Thread],
         view: _View, console: Console) -> int:
    """Up: until a child exits (its code is ours then)."""
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                readers[name].join(1.0)  # its last lines first
                log.error("%s exited with code %s; stopping", name, proc.returncode)
                return proc.returncode or 1
        view.maybe_remind(console)
        _pause(0.5)


def _own_logging(console: Console, fmt: str) -> None:
    """`monkey up`'s own log lines (migrations, progress) through the console."""
    handler = logging.StreamHandler(ConsoleStream(console))
    handler.setFormatter(logs.TextFormatter(colour=console.colour) if fmt == "text"
                         else logs.JsonFormatter(service="monkey"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # 7 lines a start


def _wait_ready(readiness: Readiness, readers: dict[str, threading.Thread]) -> int | None:
    """Until every service is ready: None then, else the exit code to stop with."""
    started = time.monotonic()
    shown, shown_at = "", started
    while True:
        for name, proc in readiness.procs.items():
            if proc.poll() is not None:
                readers[name].join(1.0)
                log.error("%s exited with code %s before it was ready; stopping",
                          name, proc.returncode)
                return proc.returncode or 1
        pending = readiness.pending()
        if not pending:
            return None
        now = time.monotonic()
        if "api" in pending and now - started > API_READY_TIMEOUT_S:
            log.error("the API did not become ready in %.0fs; see its lines above",
                      API_READY_TIMEOUT_S)
            return 1
        note = _waiting_note(pending, readiness.port)
        if (note != shown and now - shown_at >= 2) or now - shown_at >= WAIT_NOTE_EVERY_S:
            log.info(note)
            shown, shown_at = note, now
        _pause(0.25)


class _View:
    """The banner, and on a terminal its one-line reminder."""

    def __init__(self, port: int, flower_port: int, settings: Settings,
                 new_key: str | None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.flower = f"http://127.0.0.1:{flower_port}"
        self.key_file = Path(settings.data_dir) / "api-key"
        self.new_key = new_key
        self.database = _safe_url(settings.database_url)
        self.reminded_at = time.monotonic()

    def _key(self) -> str | None:
        if self.new_key:
            return self.new_key
        try:
            return self.key_file.read_text().strip() or None
        except OSError:
            return None

    def banner(self, console: Console) -> None:
        if console.fmt == "json":  # a log line; the key stays in its file
            log.info("Monkey Coder is up", extra={
                "url": self.url, "flower": self.flower, "database": self.database,
                "api_key_file": str(self.key_file), "new_api_key": bool(self.new_key)})
        else:
            console.write("\n".join(self._banner_lines(console.colour)), counts=False)
        console.banner_done()
        self.reminded_at = time.monotonic()

    def _banner_lines(self, colour: bool) -> list[str]:
        def bold(text: str) -> str:
            return f"\x1b[1m{text}\x1b[0m" if colour else text

        key = self._key()
        lines = [
            "",
            f"  Monkey Coder is up: {bold(self.url)}",
            f"  Flower:             {self.flower}",
            f"  Database:           {self.database}",
        ]
        if self.new_key:
            lines.append(f"  Your API key:       {bold(self.new_key)}   (also in {self.key_file})")
        elif key:
            lines.append(f"  API key:            {key}   (from {self.key_file})")
        else:
            lines.append(f"  API key:            in {self.key_file}"
                         " (or: monkey keys create --name NAME)")
        lines += ["  Ctrl-C stops everything.", ""]
        return lines

    def reminder(self) -> str:
        key = self._key()
        return (f"-- UI {self.url} | Flower {self.flower} | key "
                f"{key or self.key_file} | Ctrl-C stops --")

    def maybe_remind(self, console: Console) -> None:
        """Text mode: once the banner has scrolled off (a screenful of lines since), show
        the reminder when the output pauses, or every few minutes if it never does."""
        if console.fmt != "text":
            return
        rows = shutil.get_terminal_size((80, 24)).lines
        if console.lines_since_banner < max(rows - 2, 5):
            return
        now = time.monotonic()
        if (now - console.last_line_at >= REMINDER_IDLE_S
                or now - self.reminded_at >= REMINDER_EVERY_S):
            console.write(self.reminder(), counts=False)
            console.banner_done()
            self.reminded_at = now


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - shown, never needed
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _stop_all(procs: dict[str, subprocess.Popen], *, grace_s: float) -> None:
    """SIGTERM to every child, then SIGKILL to those still alive after grace_s (the
    workers' drain window and a margin)."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
