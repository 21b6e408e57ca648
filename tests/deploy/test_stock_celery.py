"""Stock Celery and Flower, with no config of ours, against a live stack's Redis.

An operator runs `celery --broker $REDIS_URL inspect ping` (or `status`, `purge`,
`events`, `flower`) from any Celery install: no `-A`, no config file, only the broker
URL. That works only while our Redis layout is kombu's default one (priority lists
named with kombu's separator and steps, binding tables in its format) and our workers
answer a stock client's broadcast without a "Control command error". Each stock
command runs here as a subprocess of the Celery in this environment, from an empty
directory and without PYTHONPATH, so nothing of ours can reach it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from common.constants import BROKER_EPOCH, PRIORITY_SEP, PRIORITY_STEPS
from monkey.embedded import free_port
from tests.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CELERY = Path(sys.executable).with_name("celery")
CONTROL_ERROR = "Control command error"


@pytest.fixture
def stock(tmp_path):
    """Runs the stock `celery` command: celery(url, *args) -> CompletedProcess."""
    cwd = tmp_path / "stock"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("CELERY_", "FLOWER_"))}
    env["PYTHONUNBUFFERED"] = "1"

    def run(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(CELERY), "--broker", url, *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def spawn(url: str, *args: str, name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen([str(CELERY), "--broker", url, *args], cwd=cwd, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = tmp_path / f"{name}.log"
        return proc

    run.spawn = spawn
    return run


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _priority_lists(queue: str) -> list[str]:
    return [f"{queue}{PRIORITY_SEP}{step}" if step else queue for step in PRIORITY_STEPS]


def _no_control_errors(stack) -> None:
    for proc in stack.procs:
        log = proc.log_path.read_text(errors="replace")
        assert CONTROL_ERROR not in log, f"{proc.log_path.name}:\n{log[-4000:]}"


def test_inspect_status_and_events_reach_our_workers(make_stack, stock):
    stack = make_stack("sqlite")
    worker = stack.start_worker("llm", concurrency=2)
    url = stack.redis_url
    name = f"llm-{worker.pid}@"

    # As a user would: a broadcast to every worker, which waits out its timeout.
    [(node, pong)] = json.loads(_ok(stock(url, "inspect", "ping", "-j", "-t", "5"))).items()
    assert node.startswith(name) and pong == {"ok": "pong"}
    assert "1 node online." in _ok(stock(url, "status", "-t", "5"))
    # Then to that node, which answers as soon as it replied. A worker that had choked
    # on a broadcast would have reset its control consumer and could miss these.
    at = ("-d", node, "-t", "20")
    assert "pong" in _ok(stock(url, "inspect", "ping", *at))
    info = json.loads(_ok(stock(url, "inspect", "stats", "-j", *at)))[node]
    assert info["pool"]["max-concurrency"] == 2
    queues = json.loads(_ok(stock(url, "inspect", "active_queues", "-j", *at)))[node]
    assert [q["name"] for q in queues] == ["llm"]

    # `celery events --dump` sees a job's task go by: the API's sent event and the
    # worker's (batched) task events.
    dump = stock.spawn(url, "events", "--dump", name="events")
    try:
        wait_until(lambda: "starting capture" in dump.log_path.read_text(), 30,
                   "celery events capturing", dump)
        job = stack.submit(input={"prompt": "seen by celery events"})
        assert stack.wait(job["id"])["status"] == "succeeded"
        wait_until(lambda: "task succeeded" in dump.log_path.read_text(), 30,
                   "celery events shows the task succeeded", dump)
    finally:
        _stop(dump)
    events = dump.log_path.read_text()
    assert f"monkey.generate({job['id']}." in events, events
    assert "task sent" in events and "task started" in events, events
    _no_control_errors(stack)


def test_purge_and_flower_see_our_queues(make_stack, stock):
    stack = make_stack("sqlite")
    stack.start_worker("llm", concurrency=1)
    url = stack.redis_url
    r = redis.Redis.from_url(url)

    # The one worker thread runs a long job and fetches nothing more, so whatever is
    # submitted next waits on Redis: interactive and batch priorities, and the gpu
    # queue (no gpu worker).
    blocker = stack.submit(input={"prompt": " ".join(["w"] * 300)}, params={"delay_ms": 500})
    stack.wait(blocker["id"], until={"running"})
    for i in range(3):
        stack.submit(input={"prompt": f"interactive {i}"})
    for i in range(2):
        stack.submit(input={"prompt": f"batch {i}"}, priority="batch")
    stack.submit(kind="embed", model="local/all-MiniLM-L6-v2", input={"texts": ["x"]})

    def depth(queue: str) -> int:
        return sum(r.llen(key) for key in _priority_lists(queue))

    wait_until(lambda: depth("llm") == 5 and depth("gpu") == 1, 20, "jobs on the broker")
    assert r.llen("llm") == 3 and r.llen(_priority_lists("llm")[-1]) == 2

    # Flower as we run it, and stock Flower with the broker URL alone.
    # Flower's HTTP API wants a password even on loopback.
    ours_port, stock_port = free_port(), free_port()
    auth = ("admin", "stock-" + secrets.token_hex(8))
    flowers = [
        stack.spawn("flower", ["flower", "--port", str(ours_port), "--address", "127.0.0.1"],
                    {"FLOWER_BASIC_AUTH": ":".join(auth)}),
        stock.spawn(url, "flower", f"--port={stock_port}", "--address=127.0.0.1",
                    f"--basic-auth={':'.join(auth)}", name="stock-flower"),
    ]
    try:
        for port, proc in zip((ours_port, stock_port), flowers, strict=True):
            base = f"http://127.0.0.1:{port}"

            def lengths(base=base) -> dict[str, int]:
                try:
                    resp = httpx.get(f"{base}/api/queues/length", auth=auth, timeout=10)
                except httpx.HTTPError:
                    return {}
                assert resp.status_code == 200, resp.text
                return {q["name"]: q["messages"] for q in resp.json()["active_queues"]}

            # Flower names the queues the workers consume once it inspected them.
            wait_until(lambda lengths=lengths: lengths().get("llm") == 5, 60,
                       f"Flower on :{port} reports the llm queue's depth", proc, interval=0.5)
            page = httpx.get(f"{base}/broker", auth=auth, timeout=10)
            assert page.status_code == 200 and "llm" in page.text

        # Purging the queues our jobs use empties every priority list of each.
        out = _ok(stock(url, "purge", "-f", "-Q", "llm,gpu"))
        assert "Purged 6 messages from 2 known task queues." in out, out
        for queue in ("llm", "gpu"):
            assert depth(queue) == 0
        assert [k for k in r.scan_iter() if r.type(k) == b"list"] == []
        assert httpx.get(f"http://127.0.0.1:{stock_port}/api/queues/length", auth=auth,
                         timeout=10).json()["active_queues"] == [{"name": "llm", "messages": 0}]
    finally:
        for proc in flowers:
            _stop(proc)
    cancel = stack.default_client.post(f"/v1/jobs/{blocker['id']}/cancel")
    assert cancel.status_code == 202, cancel.text
    stack.wait(blocker["id"])
    _no_control_errors(stack)


def test_jobs_queued_under_the_legacy_layout_still_run(make_stack, stock):
    """Before kombu's default layout, batch messages sat on `llm:9` and bindings used
    ":": after the deploy, they move to today's names and the jobs run."""
    stack = make_stack("sqlite")
    r = redis.Redis.from_url(stack.redis_url)
    # Once the reconciler's marker is set, no reconciler republishes these jobs: they
    # can only run from the messages they have.
    wait_until(lambda: r.exists(BROKER_EPOCH), 30, "the reconciler's first pass")
    jobs = [stack.submit(input={"prompt": f"legacy {i}"}, priority="batch") for i in range(2)]
    batch = _priority_lists("llm")[-1]
    wait_until(lambda: r.llen(batch) == 2, 20, "batch jobs on the broker")
    stack.kill(stack.api_proc, signal.SIGTERM)  # the old deployment goes; Redis stays
    r.rename(batch, "llm:9")
    r.sadd("_kombu.binding.reply.celery.pidbox", "ticket::old.reply.celery.pidbox")

    stack.start_api()  # on a new port: a new client
    stack.start_worker("llm", concurrency=2)
    client = stack.client()
    for job in jobs:
        assert stack.wait(job["id"], client=client)["status"] == "succeeded"
    assert not r.exists("llm:9")
    assert "pong" in _ok(stock(stack.redis_url, "inspect", "ping", "-t", "5"))
    _no_control_errors(stack)
