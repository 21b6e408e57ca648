"""The control process (reconciler and batch engine) runs beside the API, not in it:
`monkey api` starts one as its child by default, a `monkey control` can run alone, and
the child never outlives its API."""

from __future__ import annotations

import signal
import time

import psutil

from tests.api.test_batches import chat_line, sdk, start_batch, wait_batch
from tests.conftest import wait_until


def _control_children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children()
            if "control" in p.cmdline()]


def test_the_api_starts_its_control_process_and_it_dies_with_the_api(make_stack):
    stack = make_stack("sqlite")
    stack.start_worker("llm", concurrency=2)
    children = _control_children(stack.api_proc.pid)
    assert len(children) == 1, "monkey api starts exactly one control process"
    client = sdk(stack)
    batch = start_batch(client, [chat_line(f"c{i}", "x y") for i in range(5)])
    assert wait_batch(client, batch.id).status == "completed"
    # The API process is killed outright (no chance to stop its child): the kernel
    # tells the child, which stops.
    child = children[0]
    stack.kill(stack.api_proc, signal.SIGKILL)
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 10,
               "the control process stopped with its API")


def test_a_control_process_killed_mid_enqueue_stops_with_its_api(make_stack):
    """The API is killed while its control process inserts a large batch's lines (as
    in the enqueue-resume test): the child still stops. One that lived on kept leading
    the reconciler of a Redis database the next test reused, so that test's jobs were
    never recovered."""
    from tests.api.test_batches import _count_jobs

    stack = make_stack("sqlite", env={"MONKEY_BATCH_WINDOW": "0"})
    [child] = _control_children(stack.api_proc.pid)
    client = sdk(stack)
    batch = start_batch(client, [chat_line(f"k{i}", "x") for i in range(20_000)])
    wait_until(lambda: _count_jobs(stack, batch.id)[0] > 0, 60, "the first lines inserted")
    stack.kill(stack.api_proc, signal.SIGKILL)
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 20,
               "the control process stopped with its API")


def test_with_an_external_control_process_the_api_does_no_batch_work(make_stack):
    stack = make_stack("sqlite", api=False)
    stack.start_api({"MONKEY_CONTROL": "external"})
    assert _control_children(stack.api_proc.pid) == []
    stack.start_worker("llm", concurrency=2)
    client = sdk(stack)
    batch = start_batch(client, [chat_line(f"e{i}", "x y") for i in range(3)])
    # Absence can only be watched for a while: a few reconciler periods (FAST_ENV's
    # are a fraction of a second), and nobody validates it.
    time.sleep(1.5)
    assert client.batches.retrieve(batch.id).status == "validating"
    control = stack.spawn("control", ["control"])
    done = wait_batch(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    control.send_signal(signal.SIGTERM)
    assert control.wait(15) == 0, "monkey control stops cleanly on SIGTERM"
