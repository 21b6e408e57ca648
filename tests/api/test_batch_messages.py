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
