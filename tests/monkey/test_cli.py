"""The `monkey` client commands, run as a script would: `python -m monkey.cli ...` in a
subprocess against the real stack, judged by stdout, the files written and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_REFUSED = 0, 1, 2, 3, 4


def monkey(stack, *args: str, key: str | None = None, stdin: str | None = None,
           timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MONKEY_")}
    base.update(MONKEY_API_URL=stack.url, MONKEY_API_KEY=stack.key if key is None else key,
                MONKEY_DATA_DIR=str(stack.tmp / "no-such-dir"))
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "monkey.cli", *args], cwd=REPO, env=base,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def chat_line(custom_id: str, prompt: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "debug/echo",
                                "messages": [{"role": "user", "content": prompt}], **body}})


def test_submit_prints_the_job_id_and_follow_streams_the_text(stack):
    out = monkey(stack, "submit", "--model", "debug/echo", "hello from the cli")
    assert out.returncode == EXIT_OK, out.stderr
    job_id = out.stdout.strip()
    assert job_id.startswith("job_") and stack.wait(job_id)["status"] == "succeeded"
    out = monkey(stack, "submit", "-m", "debug/echo", "-p", "delay_ms=5", "--follow",
                 "streamed words here")
    assert out.returncode == EXIT_OK, out.stderr
    assert out.stdout == "streamed words here\n"
    out = monkey(stack, "submit", "-m", "debug/echo", "--follow", "--json", "-", stdin="piped")
    assert json.loads(out.stdout)["output"]["text"] == "piped"


def test_watch_streams_tokens_and_exits_by_the_result(stack):
    job = stack.submit(input={"prompt": "watch these words"}, params={"delay_ms": 20})
    out = monkey(stack, "jobs", "watch", job["id"])
    assert out.returncode == EXIT_OK and out.stdout == "watch these words\n"
    slow = stack.submit(input={"prompt": "a b c d e f"}, params={"delay_ms": 400})
    stack.client().post(f"/v1/jobs/{slow['id']}/cancel")
    out = monkey(stack, "jobs", "watch", slow["id"])
    assert out.returncode == EXIT_FAILED and "cancelled" in out.stderr
    out = monkey(stack, "jobs", "watch", "job_nope")
    assert out.returncode == EXIT_REFUSED and "not_found" in out.stderr


def test_jobs_list_get_and_cancel(stack):
    job = stack.submit(input={"prompt": "listed"})
    stack.wait(job["id"])
    out = monkey(stack, "jobs", "list", "--limit", "100")
    assert out.returncode == EXIT_OK and job["id"] in out.stdout
    page = json.loads(monkey(stack, "jobs", "list", "--json").stdout)
    assert page["object"] == "list"
    got = json.loads(monkey(stack, "jobs", "get", job["id"]).stdout)
    assert got["id"] == job["id"] and got["status"] == "succeeded"
    out = monkey(stack, "jobs", "cancel", job["id"])
    assert out.returncode == EXIT_REFUSED and "conflict" in out.stderr


def test_batch_submit_writes_every_line_and_exits_0(stack, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(chat_line(f"q{i}", f"answer {i}") + "\n" for i in range(25)))
    results = tmp_path / "results.jsonl"
    out = monkey(stack, "batch", "submit", str(src), "-o", str(results), "--poll", "0.2")
    assert out.returncode == EXIT_OK, out.stderr
    batch_id = out.stdout.strip()
    assert batch_id.startswith("batch_")
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"q{i}" for i in range(25)]
    assert all(x["error"] is None for x in lines)
    assert lines[7]["response"]["body"]["choices"][0]["message"]["content"] == "answer 7"
    assert "completed, 25 done, 0 failed, 0 remaining" in out.stderr
    status = monkey(stack, "batch", "status", batch_id)
    assert status.returncode == EXIT_OK and "completed" in status.stdout
    again = tmp_path / "again.jsonl"
    out = monkey(stack, "batch", "results", batch_id, "-o", str(again))
    assert out.returncode == EXIT_OK and again.read_text() == results.read_text()
    assert batch_id in monkey(stack, "batch", "list").stdout


def test_batch_submit_exit_code_reflects_a_failed_batch(stack, tmp_path):
    src = tmp_path / "dup.jsonl"
    src.write_text(chat_line("same", "x") + "\n" + chat_line("same", "y") + "\n")
    out = monkey(stack, "batch", "submit", str(src), "--wait", "--poll", "0.2")
    assert out.returncode == EXIT_FAILED
    assert "failed" in out.stderr and "line 2" in out.stderr and "duplicate_custom_id" in out.stderr


def test_batch_with_failing_lines_exits_1_and_answers_every_line(make_stack, tmp_path):
    stack = make_stack("sqlite", env={"OPENAI_API_KEY": "sk-test",
                                      "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                      "MONKEY_PROVIDER_MAX_RETRIES": "0"})
    stack.start_worker("llm", concurrency=4)
    src = tmp_path / "mixed.jsonl"
    src.write_text(chat_line("good", "fine") + "\n" +
                   chat_line("bad", "x", model="openai/gpt-4o-mini") + "\n")
    results = tmp_path / "results.jsonl"
    out = monkey(stack, "batch", "submit", str(src), "-o", str(results), "--poll", "0.2")
    assert out.returncode == EXIT_FAILED, out.stderr
    lines = {x["custom_id"]: x for x in map(json.loads, results.read_text().splitlines())}
    assert set(lines) == {"good", "bad"}
    assert lines["good"]["error"] is None and lines["bad"]["error"]["code"]
    assert "1 done, 1 failed" in out.stderr


def test_batch_results_of_a_running_batch_needs_wait(stack, tmp_path):
    src = tmp_path / "slow.jsonl"
    src.write_text("".join(chat_line(f"s{i}", "a b c", delay_ms=1500) + "\n" for i in range(4)))
    batch_id = monkey(stack, "batch", "submit", str(src)).stdout.strip()
    out = monkey(stack, "batch", "results", batch_id, "-o", str(tmp_path / "r.jsonl"))
    assert out.returncode == EXIT_REFUSED and "--wait" in out.stderr
    out = monkey(stack, "batch", "results", batch_id, "-o", "-", "--wait")
    assert out.returncode == EXIT_OK
    assert len(out.stdout.splitlines()) == 4


@pytest.mark.parametrize("args, key, code", [
    (["jobs", "list"], "mk-wrong", EXIT_AUTH),
    (["jobs", "list"], "", EXIT_AUTH),
    (["batch", "status", "batch_nope"], None, EXIT_REFUSED),
    (["submit", "--model", "nope/x", "hi"], None, EXIT_REFUSED),
    (["submit", "hi"], None, EXIT_USAGE),
    (["batch", "submit", "/no/such/file.jsonl"], None, EXIT_USAGE),
])
def test_exit_codes(stack, args, key, code):
    out = monkey(stack, *args, key=key)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert out.stderr


def test_unreachable_api_exits_3(stack):
    out = monkey(stack, "jobs", "list", "--api-url", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == EXIT_AUTH and "cannot reach" in out.stderr


def test_key_from_the_file_that_monkey_up_writes(stack, tmp_path):
    (tmp_path / "api-key").write_text(stack.key + "\n")
    out = monkey(stack, "jobs", "list", key="", env={"MONKEY_DATA_DIR": str(tmp_path)})
    assert out.returncode == EXIT_OK, out.stderr


def test_batch_results_to_stdout_keep_stdout_clean(stack, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(chat_line(f"o{i}", f"out {i}") + "\n" for i in range(3)))
    out = monkey(stack, "batch", "submit", str(src), "-o", "-", "--poll", "0.2")
    assert out.returncode == EXIT_OK, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["custom_id"] for x in lines] == ["o0", "o1", "o2"]
    assert "batch_" in out.stderr
