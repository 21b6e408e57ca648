"""A queue-based scaler for a Railway service: Railway has none of its own.

Railway scales a service by its replica count, set by hand (Settings -> Deploy ->
Replicas, or `railway scale`), and offers no autoscaler that reads a queue. This script
is the missing loop: it reads the API's queue gauges from /metrics (the same figures
KEDA reads on Kubernetes: messages on the lists, prefetched by live workers, running),
works out the replicas that work needs, and sets them through Railway's public GraphQL
API (`serviceInstanceUpdate`, input `numReplicas`, the field the dashboard's replica
setting writes). Run it anywhere that reaches both, e.g. as a small Railway service
with a cron schedule (`python deploy/railway/scale.py --once`) or in a loop.

    RAILWAY_TOKEN=...  python deploy/railway/scale.py \
        --metrics-url https://$BACKEND/metrics --service-id ... --environment-id ... \
        --queue gpu --per-replica 32 --min 0 --max 4 [--dry-run] [--once]

Railway applies a replica change by redeploying the service (its replicas restart and
drain on SIGTERM), so the script changes the count only when the target moved, never
more often than --cooldown seconds (scale-ups go out at once). Scaling the ML service
to zero this way also works; the seed's other way, Railway's Serverless sleep woken by
the API through ML_SERVICE_URL (`monkey ml-service`), needs no token and no loop.

Standard library only, so it runs from any Python 3.11 without installing the project.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.request

ENDPOINT = "https://backboard.railway.com/graphql/v2"
MUTATION = (
    "mutation scale($serviceId: String!, $environmentId: String, $input: "
    "ServiceInstanceUpdateInput!) { serviceInstanceUpdate(serviceId: $serviceId, "
    "environmentId: $environmentId, input: $input) }"
)
WORK = ("monkey_queue_messages", "monkey_queue_prefetched", "monkey_queue_running")


def work_of(metrics_text: str, queue: str) -> float:
    """Jobs waiting or running on `queue`, all priorities, from a /metrics body."""
    total = 0.0
    for line in metrics_text.splitlines():
        name, _, rest = line.partition("{")
        if name in WORK and f'queue="{queue}"' in rest:
            total += float(rest.rsplit("}", 1)[1].split()[0])
    return total


def desired(work: float, *, per_replica: int, low: int, high: int) -> int:
    return max(low, min(high, math.ceil(work / per_replica)))


def request_body(service_id: str, environment_id: str, replicas: int) -> dict:
    return {"query": MUTATION, "variables": {
        "serviceId": service_id, "environmentId": environment_id,
        "input": {"numReplicas": replicas}}}


def set_replicas(token: str, body: dict, endpoint: str = ENDPOINT) -> dict:
    req = urllib.request.Request(endpoint, data=json.dumps(body).encode(), headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - fixed https URL
        answer = json.loads(resp.read())
    if answer.get("errors"):
        raise RuntimeError(f"Railway refused the change: {answer['errors']}")
    return answer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--metrics-url", required=True)
    p.add_argument("--service-id", required=True)
    p.add_argument("--environment-id", required=True)
    p.add_argument("--queue", default="gpu")
    p.add_argument("--per-replica", type=int, default=32)
    p.add_argument("--min", dest="low", type=int, default=0)
    p.add_argument("--max", dest="high", type=int, default=4)
    p.add_argument("--interval", type=float, default=30.0)
    p.add_argument("--cooldown", type=float, default=300.0)
    p.add_argument("--once", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    token = os.environ.get("RAILWAY_TOKEN", "")
    if not token and not args.dry_run:
        p.error("set RAILWAY_TOKEN (an account or workspace token) or use --dry-run")
    current, changed_at = None, float("-inf")
    while True:
        with urllib.request.urlopen(args.metrics_url, timeout=10) as resp:  # noqa: S310
            work = work_of(resp.read().decode(), args.queue)
        target = desired(work, per_replica=args.per_replica, low=args.low, high=args.high)
        down_too_soon = current is not None and target < current \
            and time.monotonic() - changed_at < args.cooldown
        if target != current and not down_too_soon:
            print(json.dumps({"queue": args.queue, "work": work, "replicas": target}))
            if not args.dry_run:
                set_replicas(token, request_body(args.service_id, args.environment_id, target))
            current, changed_at = target, time.monotonic()
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
