"""The HTTP API fuzzed from its own OpenAPI document with schemathesis, on a live stack.

Every operation of the document is a test of its own. Each case goes to a real API
process with a real llm worker, with the key in its Authorization header, and must pass
schemathesis's checks: no 5xx, only documented status codes, content types and
headers, bodies that match their schemas, a 405 with `Allow` for undeclared methods,
and invalid input refused (the exceptions are explained where they are made). The
phases are the schema's examples, coverage (boundary values, undeclared methods,
missing headers) and MAX_EXAMPLES fuzzed cases per operation, derandomized and without
Hypothesis's example database, so that a rerun (and CI) sends the same cases.

Generated path ids name nothing, so a hook swaps in the ids of real jobs, files and
batches made before the run (KNOWN): their 200s are checked too, and the event stream of
a finished job (its `done` closes the stream), a queued one and a running one (cut after
MAX_STREAM_EVENTS events or the request timeout, as schemathesis reads a stream that
does not end).

The document is built in-process at collection time (so that pytest sees one test per
operation) and test_served_document checks that the live API serves that same document.
schemathesis.pytest.from_fixture, which would load it from the live stack, fails on
pytest 9.2 (schemathesis 4.32 reads the removed `Function._nodeid`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.core.mutations import OperatorKind

from api.main import create_app
from common.migrate import upgrade
from common.schemas import JobEnvelope, JobList
from common.settings import Settings
from tests.conftest import Stack, fresh_redis_url, make_database, parse_sse, wait_until

MAX_EXAMPLES = 200
# A chat completion waits for its job: generous, for a loaded CI machine.
REQUEST_TIMEOUT_S = 20
# How long an event stream is read, at most MAX_STREAM_EVENTS events: a running job's
# stream ends only with the job.
STREAM_TIMEOUT_S = 3
MAX_STREAM_EVENTS = 20

DOCUMENT = create_app(Settings()).openapi()
# Operations whose bodies name a model. Which names are valid depends on the deployment
# (the providers with keys, MONKEY_LOCAL_MODELS), and the input's shape on `kind`, which a
# static schema cannot say: a schema-valid body naming an unserved model is rightly
# refused with 422, so schemathesis's positive_data_acceptance check is off for these.
# The other checks stay on, and the dictionaries below make many cases name debug/echo,
# which every stack serves, so that they go the whole way to a worker and back.
MODEL_OPERATIONS = ["/v1/jobs", "/v1/chat/completions", "/v1/embeddings", "/v1/responses"]

schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    "request-timeout": REQUEST_TIMEOUT_S,
    "max-stream-events": MAX_STREAM_EVENTS,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "dictionaries": {"models": {"values": ["debug/echo"]}, "delays": {"values": [0, 5]},
                     "prefer": {"values": ["wait=1", "respond-async"]}},
    "parameters": {
        "body.model": {"dictionary": "models", "probability": 0.5},
        # debug/echo waits delay_ms (up to a minute) before each word: kept short, so
        # that fuzzed jobs do not hold the worker's slots for the cases after them.
        "body.delay_ms": {"dictionary": "delays"},
        "body.params.delay_ms": {"dictionary": "delays"},
        # POST /v1/jobs with `Prefer: wait=N` answers when the job ends or after N
        # seconds (a job no worker here serves waits all of it): a second at most.
        "header.Prefer": {"dictionary": "prefer"},
    },
    "operations": [
        {"include-path": MODEL_OPERATIONS, "include-method": "POST",
         "checks": {"positive_data_acceptance": {"enabled": False}}},
        {"include-path": "/v1/jobs/{job_id}/events", "request-timeout": STREAM_TIMEOUT_S},
        # With stream=true, a running response's events (cut like a job's).
        {"include-path": "/v1/responses/{response_id}", "include-method": "GET",
         "request-timeout": STREAM_TIMEOUT_S},
    ],
}))

# Ids of real objects by path parameter name, filled by the `stack` fixture. DELETE
# draws from its own, so that it does not take objects from the cases after it.
KNOWN: dict[str, list[str]] = defaultdict(list)
DELETABLE: dict[str, list[str]] = defaultdict(list)
# (operation, status) of every call, for the summary and test_every_operation_answered.
CALLS: Counter = Counter()


@schema.hook
def flatmap_path_parameters(context, path_parameters: dict | None) -> st.SearchStrategy:
    if not path_parameters:  # None for an operation without path parameters
        return st.just(path_parameters)
    pool = DELETABLE if context.operation.method.upper() == "DELETE" else KNOWN
    swaps = [{**path_parameters, name: known}
             for name in path_parameters for known in pool.get(name, ())]
    return st.sampled_from([path_parameters, *swaps])


@schema.hook
def filter_failure(context, failure, case, response) -> bool:
    # A multipart part is bytes, not a JSON value: a negative case that only changes a
    # part's type (an integer `file`) sends bytes that a valid upload could send, and the
    # upload rightly stores them (lines are checked when a batch reads the file).
    # schemathesis lets such cases pass for path and query parameters, not for multipart.
    if failure.code != "ST201" or case.media_type != "multipart/form-data":
        return True
    mutations = getattr(case.meta.phase.data, "mutations", None) or []
    return not mutations or any(m.operator != OperatorKind.CHANGE_TYPE for m in mutations)


@schema.hook
def after_call(context, case, response) -> None:
    CALLS[(case.operation.label, response.status_code)] += 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_base):
    tmp = tmp_path_factory.mktemp("fuzz")
    # Rate limits off: they have tests of their own, and here they would only turn
    # cases into 429s.
    # Fuzzed webhook URLs may name real hosts: the stack's outbound HTTP goes to a dead
    # proxy, so that no delivery ever leaves this machine.
    s = Stack(make_database("sqlite", tmp), fresh_redis_url(redis_base), tmp,
              env={"MONKEY_RATE_LIMIT_PER_S": "0", "HTTP_PROXY": "http://127.0.0.1:9",
                   "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9"})
    upgrade(s.settings)
    s.key = s.new_key()
    s.start_api()
    s.start_worker("llm", concurrency=8)
    KNOWN.clear()
    DELETABLE.clear()
    KNOWN.update(seed_objects(s))
    DELETABLE["file_id"] = [upload(s, [chat_line("spare")]) for _ in range(3)]
    DELETABLE["response_id"] = [respond(s, "spare") for _ in range(3)]
    yield s
    s.stop()
    summary = defaultdict(dict)
    for (label, status), n in sorted(CALLS.items()):
        summary[label][status] = n
    print(f"\nschemathesis: {sum(CALLS.values())} calls\n" + json.dumps(summary, indent=1))


def seed_objects(s: Stack) -> dict[str, list[str]]:
    """A job in each state a client meets, batch files, a finished batch and one that
    runs for the whole session."""
    done = s.submit(input={"prompt": "seeded job"})
    failed = s.submit(input={"prompt": "too slow for its timeout"},
                      params={"delay_ms": 2000}, timeout_s=0.2)
    # No gpu worker runs here: this one stays queued (until the fuzzer cancels it).
    queued = s.submit(kind="embed", model="local/all-MiniLM-L6-v2",
                      input={"texts": ["never taken"]})
    running = s.submit(input={"prompt": " ".join(["slow"] * 100)}, params={"delay_ms": 1000})
    finished = start_batch(s, upload(s, [chat_line("quick")]))
    slow = start_batch(s, upload(s, [chat_line(" ".join(["slow"] * 100), delay_ms=1000)]))
    for job in (done, failed):
        s.wait(job["id"])
    s.wait(running["id"], until={"running"})
    batch = {}

    def batch_done() -> bool:
        batch.update(s.default_client.get(f"/v1/batches/{finished}").json())
        return batch["status"] == "completed"

    wait_until(batch_done, 60, "seeded batch completed")
    return {
        "job_id": [done["id"], failed["id"], queued["id"], running["id"]],
        "file_id": [batch["input_file_id"], batch["output_file_id"]],
        "batch_id": [finished, slow],
        "model_id": ["debug/echo", "local/all-MiniLM-L6-v2"],
        # A completed response, and a background one running for the whole session.
        "response_id": [respond(s, "seeded response"),
                        respond(s, " ".join(["slow"] * 100), background=True, delay_ms=1000)],
    }


def respond(s: Stack, text: str, **body) -> str:
    resp = s.default_client.post("/v1/responses", json={"model": "debug/echo", "input": text,
                                                        **body})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def chat_line(prompt: str, **body) -> dict:
    return {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "debug/echo", "messages": [{"role": "user", "content": prompt}],
                     **body}}


def upload(s: Stack, lines: list[dict]) -> str:
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    resp = s.default_client.post("/v1/files", data={"purpose": "batch"},
                                 files={"file": ("batch.jsonl", data)})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def start_batch(s: Stack, file_id: str) -> str:
    resp = s.default_client.post("/v1/batches", json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


@schema.parametrize()
# Only the one Hypothesis health check that is about generation speed (derandomized,
# the others give the same answer on every run): drawing the larger bodies (a job, a
# chat completion) from their schemas can pass its time limit on a loaded CI machine,
# which says nothing about the API.
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_api(case, stack):
    case.call_and_validate(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"})


def test_every_operation_answered(stack):
    """Runs after test_api (file order): every operation of the document was called,
    none silently skipped, and nothing answered 5xx."""
    if not CALLS:
        pytest.skip("test_api was not selected")
    called = {label for label, _ in CALLS}
    documented = {f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items()
                  for method in ops}
    assert documented <= called, documented - called
    assert not [k for k in CALLS if k[1] >= 500], CALLS


def test_served_document(stack):
    served = httpx.get(f"{stack.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


def test_event_stream(stack):
    """A finished job's event stream is text/event-stream, its `done` (the envelope) at
    once, then the end."""
    job_id = KNOWN["job_id"][0]
    with stack.client().stream("GET", f"/v1/jobs/{job_id}/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = list(parse_sse(resp.iter_lines()))
    assert events[-1][1] == "done"
    assert JobEnvelope.model_validate(events[-1][2]).status == "succeeded"


def test_job_routes_answer_the_envelope(stack):
    """The job routes' bodies against common.schemas.JobEnvelope (extra="forbid": no
    field missing, none undocumented), whatever the document declares for them."""
    client = stack.default_client
    submitted = stack.submit(input={"prompt": "one two"}, metadata={"k": "v"})
    JobEnvelope.model_validate(submitted)
    done = JobEnvelope.model_validate(stack.wait(submitted["id"]))
    assert done.status == "succeeded" and done.output["text"]
    page = client.get("/v1/jobs", params={"limit": 2})
    assert page.status_code == 200
    JobList.model_validate(page.json())
    queued = KNOWN["job_id"][2]
    cancelled = client.post(f"/v1/jobs/{queued}/cancel")
    assert cancelled.status_code == 202
    assert JobEnvelope.model_validate(cancelled.json()).status == "cancelled"
