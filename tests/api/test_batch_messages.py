"""How a batch's new lines become task messages (pure: no I/O): lines whose machinery
costs more than their model go out many to a message, in line order; a provider's
lines go out one each, so that their network waits overlap on task threads."""

from __future__ import annotations

from api.services.batch_lines import task_messages
from common.constants import TASK_BY_KIND, TASK_CHUNK


def row(n: int, model: str, kind: str = "generate") -> dict:
    queue = "gpu" if model.startswith("local/") else "llm"
    return {"id": f"job_{n:04d}", "kind": kind, "model": model, "queue": queue,
            "priority": "batch", "attempts": 0}


def test_cheap_lines_go_many_to_a_message_in_line_order():
    rows = [row(i, "debug/echo") for i in range(10)]
    msgs = task_messages(rows, chunk_lines=4)
    assert [m.task for m in msgs] == [TASK_CHUNK] * 3
    assert [m.args for m in msgs] == [[[r["id"] for r in rows[i:i + 4]]] for i in (0, 4, 8)]
    # The first line names the message (its task id), as the reconciler reads it.
    assert [m.task_id.split(".")[0] for m in msgs] == ["job_0000", "job_0004", "job_0008"]
    assert all(m.queue == "llm" and m.priority_value == 9 for m in msgs)


def test_local_embeddings_chunk_and_provider_lines_go_alone():
    rows = ([row(0, "local/all-MiniLM-L6-v2", "embed"), row(1, "local/all-MiniLM-L6-v2", "embed")]
            + [row(2, "openai/gpt-4o-mini"), row(3, "openai/gpt-4o-mini")]
            + [row(4, "debug/echo")])
    msgs = task_messages(rows, chunk_lines=64)
    assert [(m.task, m.args) for m in msgs] == [
        (TASK_CHUNK, [["job_0000", "job_0001"]]),
        (TASK_BY_KIND["generate"], ["job_0002"]),
        (TASK_BY_KIND["generate"], ["job_0003"]),
        (TASK_CHUNK, [["job_0004"]]),
    ]
    assert msgs[0].queue == "gpu"
    # A chunk of one line per message is the old way: every line alone.
    assert all(m.task == TASK_BY_KIND["generate"]
               for m in task_messages([row(i, "debug/echo") for i in range(3)], 1))


def test_line_job_ids_sort_in_line_order_and_never_repeat():
    import json
    import re
    from datetime import UTC, datetime, timedelta

    from api.services.batch_lines import job_rows
    from common.batches_db import Batch
    from common.ids import new_id
    from common.settings import Settings

    batch = Batch(id=new_id("batch"), owner_id="key_1", endpoint="/v1/chat/completions",
                  expires_at=datetime.now(UTC) + timedelta(hours=24))
    lines = [(n, json.dumps({"custom_id": f"r{n}", "method": "POST",
                             "url": "/v1/chat/completions",
                             "body": {"model": "debug/echo",
                                      "messages": [{"role": "user", "content": "hi"}]}}
                            ).encode()) for n in range(1, 301)]
    first, again = (job_rows(Settings(), batch, lines) for _ in range(2))
    ids = [r["id"] for r in first]
    # new_id's shape and length: the prefix, 12 hex digits of the batch's time, 16 more.
    assert all(re.fullmatch(r"job_[0-9a-f]{28}", i) and len(i) == len(new_id("job"))
               for i in ids), ids[:3]
    assert ids == sorted(ids) and [r["custom_id"] for r in first] == [f"r{n}" for n in
                                                                     range(1, 301)]
    # Each line's random tail is its own, and a second enqueue of the same lines (a
    # part written again after a crash) makes other ids.
    assert len({i[-10:] for i in ids}) == len(ids)
    assert not set(ids) & {r["id"] for r in again}
