"""Fair share between keys inside the batch priority: a second key's batch runs while
the first key's bigger batch is still running, instead of after all of it."""

from __future__ import annotations

import time

from tests.api.test_batches import chat_line, sdk, start_batch, wait_batch
from tests.conftest import wait_until


def test_a_second_keys_batch_finishes_while_the_first_keys_batch_runs(make_stack):
    stack = make_stack("postgres", env={"MONKEY_BATCH_WINDOW": "200"})
    stack.start_worker("llm", concurrency=8)
    first, second = sdk(stack), sdk(stack, stack.new_key("second"))
    # 3,000 lines of about 40 ms: enqueued far faster than eight threads run them.
    big = start_batch(first, [chat_line(f"a{i}", "one two", delay_ms=20) for i in range(3000)])
    wait_until(lambda: first.batches.retrieve(big.id).request_counts.completed >= 50, 120,
               "the first key's batch running")
    small = start_batch(second, [chat_line(f"b{i}", "one two") for i in range(300)])
    done = wait_batch(second, small.id, timeout=180)
    assert done.status == "completed" and done.request_counts.completed == 300
    # Enqueued all at once, the big batch's 3,000 lines would all run first. In turns,
    # the small batch waited behind at most a window and a chunk of them.
    big_now = first.batches.retrieve(big.id)
    print(f"\nfirst key's lines done when the second key's batch completed: "
          f"{big_now.request_counts.completed} of 3000")
    assert big_now.status == "in_progress"
    assert big_now.request_counts.completed <= 2000, big_now.request_counts
    assert wait_batch(first, big.id, timeout=300).request_counts.completed == 3000


def test_two_keys_batches_submitted_together_finish_within_a_quarter(make_stack):
    stack = make_stack("postgres", env={"MONKEY_BATCH_WINDOW": "100"})
    stack.start_worker("llm", concurrency=8)
    clients = [sdk(stack), sdk(stack, stack.new_key("second"))]
    lines = [chat_line(f"l{i}", "one two", delay_ms=10) for i in range(1200)]
    started, batches = [], []
    for client in clients:
        started.append(time.monotonic())
        batches.append(start_batch(client, lines))
        time.sleep(1.0)  # one second apart, as a second user would come
    took: dict[int, float] = {}

    def both_done() -> bool:
        for i, (client, batch) in enumerate(zip(clients, batches, strict=True)):
            if i not in took and client.batches.retrieve(batch.id).status == "completed":
                took[i] = time.monotonic() - started[i]
        return len(took) == 2

    wait_until(both_done, 300, "both batches completed", interval=0.2)
    print(f"\nseconds to complete, first and second key: {took[0]:.1f}, {took[1]:.1f}")
    # First come, first served, the second would take about twice as long as the first.
    assert abs(took[0] - took[1]) <= 0.25 * max(took.values()), took
