"""The control process: the reconciler, the batch engine, webhook deliveries and the
retention sweep (api/retention.py) and the release of jobs held back for fair share
between keys, away from the requests.

Reconciling (requeues, expiries, republishing) and a batch's validation, expansion
of up to 50,000 lines and finalization are long pieces of work; on the API's event
loop they would compete with every request for the one thread. They run here, in a
process of their own:

- `monkey control` runs it alone (a deployment that wants it as its own service);
- `monkey api` starts one as its child by default (`MONKEY_CONTROL=child`), so the
  default deployments (`make run`, docker-compose, Railway) need no extra service.
  Set `MONKEY_CONTROL=external` on the API where a separate `monkey control` runs.

Any number may run: a Redis lock makes one the reconciler, and each batch is worked
on by whoever holds its claim. The API kicks the control processes over Redis pub/sub
when a batch is created or cancelled, so its work starts at once instead of at the
next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.reconciler import Reconciler
from api.retention import Sweeper
from api.services import batch_work, fair_release
from api.services.ops_history import HistorySampler
from api.services.webhooks import WebhookDispatcher
from api.state import AppState, close_state, open_state
from api.wake import Waker
from common.constants import CONTROL_CHANNEL
from common.settings import Settings

log = logging.getLogger("monkey.control")

_PR_SET_PDEATHSIG = 1
_SHUTDOWN_S = 15.0


async def kick(redis: aioredis.Redis) -> None:
    """Ask the control processes to look at the batches now (best effort: their next
    pass finds the work anyway)."""
    try:
        await redis.publish(CONTROL_CHANNEL, "batches")
    except (RedisError, OSError) as exc:
        log.warning("control processes not kicked: %s", exc)


def run_control(settings: Settings, *, parent_pid: int | None = None) -> None:
    asyncio.run(_serve(settings, parent_pid))


async def _serve(settings: Settings, parent_pid: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = open_state(settings)
    state.producer.start()
    reconciler = Reconciler(state)
    reconciler.start()
    dispatcher = WebhookDispatcher(sessions=state.sessions, settings=settings)
    dispatcher.start()
    sampler = HistorySampler(sessions=state.sessions, redis=state.redis,
                             every_s=settings.ops_sample_s)
    sampler.start()
    sweeper = Sweeper(sessions=state.sessions, redis=state.redis, settings=settings,
                      leading=lambda: reconciler.leader)
    sweeper.start()
    helpers = [asyncio.create_task(_listen(state), name="control-kicks"),
               # Jobs held back for fair share go out as their keys have room.
               asyncio.create_task(fair_release.release_loop(state, lambda: reconciler.leader),
                                   name="fair-release")]
    if settings.ml_service_url:
        helpers.append(asyncio.create_task(_wake(state, reconciler), name="wake"))
    if parent_pid is not None:
        helpers.append(asyncio.create_task(_watch_parent(parent_pid, stop), name="parent"))
    log.info("control process started (reconciler and batches)")

    async def shut_down() -> None:
        for task in helpers:
            task.cancel()
        await reconciler.stop()
        await dispatcher.stop()
        await sampler.stop()
        await sweeper.stop()
        await batch_work.stop_all()
        await close_state(state)

    try:
        await stop.wait()
    finally:
        try:
            await asyncio.wait_for(shut_down(), _SHUTDOWN_S)
        except TimeoutError:
            # A control process that outlives its API would keep leading the
            # reconciler (and its batches) for a stack that is gone: exit regardless.
            log.error("control process: shutdown took over %.0f s; exiting", _SHUTDOWN_S)
            logging.shutdown()
            os._exit(1)
        log.info("control process stopped")


async def _listen(state: AppState) -> None:
    """Advance the batches whenever the API says one was created or cancelled."""
    while True:
        try:
            async with state.redis.pubsub() as pubsub:
                await pubsub.subscribe(CONTROL_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await batch_work.advance_batches(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis or the database away: passes go on
            log.warning("control kicks interrupted: %s", exc)
            await asyncio.sleep(1.0)


async def _wake(state: AppState, reconciler: Reconciler) -> None:
    """Beside each reconciler pass, on the leader only: wake the ML service when gpu jobs
    wait for a worker that is not there (api/wake.py)."""
    waker = Waker(state)
    while True:
        try:
            if reconciler.leader:
                await waker.maybe_wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database or Redis away: next pass
            log.warning("wake check failed: %s", exc)
        await asyncio.sleep(state.settings.reconcile_s)


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # Where the kernel cannot signal us when the API dies (not Linux), look.
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    log.warning("the API process %d is gone: stopping", parent_pid)
    stop.set()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_child(log_level: str = "INFO") -> subprocess.Popen:
    """`monkey control` as a child of this process; it stops when this process dies."""
    cmd = [sys.executable, "-m", "monkey.cli", "--log-level", log_level, "control",
           "--parent", str(os.getpid())]
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(cmd, preexec_fn=preexec)  # noqa: PLW1509 - prctl only


def stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["kick", "run_control", "start_child", "stop_child"]
