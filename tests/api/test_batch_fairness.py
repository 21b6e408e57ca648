"""Fair share between keys inside the batch priority: a second key's batch runs while
the first key's bigger batch is still running, instead of after all of it."""

from __future__ import annotations

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
