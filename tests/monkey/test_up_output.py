"""How `monkey up` shows its children's output, without starting anything: the log
formats, the prefixes, JSON passed through or wrapped, Celery's banner folded."""

from __future__ import annotations

import io
import json
import logging

import pytest

from monkey import logs
from monkey.up import CeleryBannerFolder, Console, ConsoleStream, _pump, _safe_url

CELERY_BANNER = """\x20
 -------------- llm-18914@vm v5.7.0 (collider)
--- ***** -----\x20
-- ******* ---- Linux-6.18.44-x86_64-with-glibc2.36 2026-12-02 13:45:22
- *** --- * ---\x20
- ** ---------- [config]
- ** ---------- .> app:         monkey:0x7f28f5a9a090
- ** ---------- .> transport:   common.compat.kombu_redis:Transport://:**@127.0.0.1:42903/0
- ** ---------- .> results:     disabled://
- *** --- * --- .> concurrency: 32 (thread)
-- ******* ---- .> task events: ON
--- ***** -----\x20
 -------------- [queues]
                .> llm              exchange=llm(direct) key=llm
                \x20

[tasks]
  . monkey.embed
  . monkey.generate

after the banner""".split("\n")


def test_celery_banner_folds_to_one_line():
    folder = CeleryBannerFolder()
    out = [shown for line in CELERY_BANNER for shown in folder.feed(line)]
    out += folder.flush()
    assert [ln for ln in out if ln.strip()] == [
        "celery 5.7.0 llm-18914@vm: queues llm, concurrency 32 (thread), 2 tasks",
        "after the banner",
    ]


def test_a_child_output_read_whole_lines_progress_bars_at_their_last_state():
    console, stream = _console("text")
    data = "\n".join(CELERY_BANNER).encode() + b"\nLoading 0%\rLoading 100%\r\nlast, no newline"
    _pump("llm-worker", io.BytesIO(data), console)
    assert stream.getvalue().splitlines() == [
        "llm-worker | celery 5.7.0 llm-18914@vm: queues llm, concurrency 32 (thread), 2 tasks",
        "llm-worker | after the banner",
        "llm-worker | Loading 100%",
        "llm-worker | last, no newline",
    ]


def test_something_that_only_starts_like_the_banner_is_shown_as_it_was():
    folder = CeleryBannerFolder()
    lines = [" -------------- a@b v1.0 (x)", *[f"line {i}" for i in range(70)]]
    out = [shown for line in lines for shown in folder.feed(line)] + folder.flush()
    assert out == lines


def _console(fmt: str, colour: bool = False) -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(stream, fmt, colour, ["api", "llm-worker", "monkey"]), stream


def test_text_lines_carry_an_aligned_prefix_on_every_physical_line():
    console, stream = _console("text")
    console.service_line("api", "12:01:02 INFO  started")
    console.service_line("llm-worker", "Traceback:\n  File x")
    console.service_line("api", "   ")  # blank lines are dropped
    assert stream.getvalue().splitlines() == [
        "api        | 12:01:02 INFO  started",
        "llm-worker | Traceback:",
        "llm-worker |   File x",
    ]


def test_text_mode_shows_a_json_line_as_text():
    console, stream = _console("text")
    console.service_line("api", json.dumps({"ts": 0, "level": "warning", "msg": "hm"}))
    assert stream.getvalue().endswith(" WARNING hm\n")
    assert stream.getvalue().startswith("api        | ")


def test_json_mode_passes_json_and_wraps_the_rest():
    console, stream = _console("json")
    line = json.dumps({"msg": "hi", "service": "api"})
    console.service_line("api", line)
    console.service_line("llm-worker", "worker: Warm shutdown (MainProcess)")
    first, second = stream.getvalue().splitlines()
    assert first == line
    wrapped = json.loads(second)
    assert wrapped["service"] == "llm-worker"
    assert wrapped["msg"] == "worker: Warm shutdown (MainProcess)"


def test_colour_prefixes_only_when_asked():
    console, stream = _console("text", colour=True)
    console.service_line("api", "x")
    assert stream.getvalue().startswith("\x1b[")


def test_console_stream_writes_whole_lines_only():
    console, stream = _console("text")
    out = ConsoleStream(console)
    out.write("half")
    assert stream.getvalue() == ""
    out.write(" a line\nnext")
    assert stream.getvalue() == "monkey     | half a line\n"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("env", "tty", "fmt"), [
    ({}, True, "text"),
    ({}, False, "json"),
    ({"MONKEY_LOG_FORMAT": "json"}, True, "json"),
    ({"MONKEY_LOG_FORMAT": "text"}, False, "text"),
    ({"MONKEY_LOG_FORMAT": "auto"}, True, "text"),
])
def test_log_format(monkeypatch, env, tty, fmt):
    monkeypatch.delenv("MONKEY_LOG_FORMAT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert logs.log_format(_Tty() if tty else io.StringIO()) == fmt


@pytest.mark.parametrize(("env", "tty", "colour"), [
    ({}, True, True),
    ({}, False, False),
    ({"NO_COLOR": "1"}, True, False),
    ({"NO_COLOR": "1", "MONKEY_LOG_COLOR": "1"}, True, False),
    ({"MONKEY_LOG_COLOR": "1"}, False, True),
    ({"MONKEY_LOG_COLOR": "0"}, True, False),
    ({"TERM": "dumb"}, True, False),
])
def test_colour(monkeypatch, env, tty, colour):
    for name in ("NO_COLOR", "MONKEY_LOG_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert logs.use_colour(_Tty() if tty else io.StringIO()) is colour


def test_text_formatter_reads_as_a_line_with_its_fields():
    record = logging.makeLogRecord({
        "msg": "lease lost %s", "args": ("now",), "levelname": "WARNING",
        "job_id": "j1", "attempt": 2, "sweep": {"read": 0}, "color_message": "dup",
    })
    line = logs.TextFormatter().format(record)
    assert line.endswith(' WARNING lease lost now job_id=j1 attempt=2 sweep={"read": 0}')
    assert "dup" not in line


def test_json_formatter_names_the_service():
    record = logging.makeLogRecord({"msg": "hi", "levelname": "INFO"})
    out = json.loads(logs.JsonFormatter(service="api").format(record))
    assert out["service"] == "api" and out["msg"] == "hi"


def test_database_url_shown_without_its_password():
    assert _safe_url("postgresql+psycopg://u:secret@db/x") == "postgresql+psycopg://u:***@db/x"
    assert _safe_url("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"
