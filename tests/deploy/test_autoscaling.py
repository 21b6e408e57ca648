"""The autoscaling files: KEDA's ScaledObjects have the shape KEDA's CRD requires and
scale on gauges the API really exports; the Railway scaler reads those gauges from a
real /metrics body and asks Railway for the replicas the work needs."""

from __future__ import annotations

import importlib.util
import re

import jsonschema
import pytest
import yaml
from prometheus_client import generate_latest

from api import metrics
from tests.deploy.files import REPO

KEDA_FILE = REPO / "deploy" / "keda" / "scaledobject.yaml"

# The part of KEDA's ScaledObject CRD (keda.sh/v1alpha1, config/crd/bases in kedacore/keda)
# that these files use: required fields and types.
_INT = {"type": "integer", "minimum": 0}
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"],
                                   "properties": {"name": {"type": "string"}}},
                "minReplicaCount": _INT, "maxReplicaCount": _INT,
                "pollingInterval": _INT, "cooldownPeriod": _INT,
                "advanced": {"type": "object"},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {
                        "type": {"type": "string"},
                        # metadata is a map of strings: a bare number is refused by the API
                        "metadata": {"type": "object",
                                     "additionalProperties": {"type": "string"}},
                    },
                }},
            },
        },
    },
}
PROMETHEUS_REQUIRED = {"serverAddress", "query", "threshold"}


def scaled_objects() -> list[dict]:
    return [d for d in yaml.safe_load_all(KEDA_FILE.read_text()) if d]


def exported() -> dict[str, set[str]]:
    """Gauge name -> its label names, as the API's registry exports them."""
    return {m._name: set(m._labelnames) for m in (metrics.QUEUE_MESSAGES,
            metrics.QUEUE_PREFETCHED, metrics.QUEUE_RUNNING, metrics.QUEUE_DEPTH,
            metrics.QUEUE_OLDEST)}


def test_scaled_objects_have_keda_shape_and_scale_on_exported_gauges():
    docs = scaled_objects()
    assert {d["spec"]["scaleTargetRef"]["name"] for d in docs} == \
        {"monkey-coder-ml", "monkey-coder-llm-worker"}
    names = exported()
    for doc in docs:
        jsonschema.validate(doc, SCALED_OBJECT)
        spec = doc["spec"]
        assert spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "prometheus"
            meta = trigger["metadata"]
            assert PROMETHEUS_REQUIRED <= set(meta)
            float(meta["threshold"])
            used = set(re.findall(r"\bmonkey_\w+", meta["query"]))
            # the prefetched messages are the point: KEDA's redis scaler cannot see them
            assert used == {"monkey_queue_messages", "monkey_queue_prefetched",
                            "monkey_queue_running"}
            for name in used:
                assert name in names
                for label in re.findall(r"(\w+)=\"", meta["query"]):
                    assert label in names[name]
    ml = next(d for d in docs if d["metadata"]["name"] == "monkey-coder-ml")
    assert ml["spec"]["minReplicaCount"] == 0  # the seed's scale to zero


@pytest.fixture
def scaler():
    spec = importlib.util.spec_from_file_location("railway_scale",
                                                  REPO / "deploy" / "railway" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_railway_scaler_reads_the_gauges_and_asks_for_replicas(scaler):
    metrics.observe_broker({
        ("gpu", "interactive"): {"messages": 10, "prefetched": 30, "running": 32},
        ("gpu", "batch"): {"messages": 20, "prefetched": 0, "running": 0},
        ("llm", "interactive"): {"messages": 500, "prefetched": 0, "running": 8},
        ("llm", "batch"): {"messages": 0, "prefetched": 0, "running": 0},
    })
    body = generate_latest(metrics.REGISTRY).decode()
    assert scaler.work_of(body, "gpu") == 92
    assert scaler.desired(92, per_replica=32, low=0, high=4) == 3
    assert scaler.desired(0, per_replica=32, low=0, high=4) == 0
    assert scaler.desired(10_000, per_replica=32, low=0, high=4) == 4
    req = scaler.request_body("svc", "env", 3)
    assert "serviceInstanceUpdate(" in req["query"]
    assert "ServiceInstanceUpdateInput!" in req["query"]
    assert req["variables"] == {"serviceId": "svc", "environmentId": "env",
                                "input": {"numReplicas": 3}}
    assert scaler.main(["--metrics-url", "file:///dev/null", "--service-id", "s",
                        "--environment-id", "e", "--once", "--dry-run"]) == 0
