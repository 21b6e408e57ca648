"""All our use of kombu's Redis transport internals: its QoS, and its `unacked` hash.

1. Our transport survives a broker outage. When the connection drops while tasks run
   (acks late), kombu touches the dead connection twice, and each raises inside
   Celery's reconnect path, so the whole worker exited ("Unrecoverable error"):
   - closing the channel restores the worker's delivered messages through the very
     connection that failed (`virtual.Channel.close` -> `QoS.restore_unacked_once`);
   - a task that finishes later acknowledges its message on that closed channel
     (`redis.QoS.ack` removes it from `unacked` in Redis).
   Measured again on kombu 5.7.0: with Redis stopped, both raise ConnectionError.
   Neither is needed: jobs are recovered from the database by the reconciler
   (leases, and the messages held by a worker that is gone, below). So the channel
   closes without restoring (`do_restore`), a late ack or reject on it only does
   kombu's local bookkeeping (`virtual.QoS`, skipping the Redis QoS), and Celery
   reconnects. No transport option turns either off.

2. The reconciler rescues the jobs whose task message a dead worker had received:
   kombu keeps such a message in its `unacked` hash (delivery tag -> JSON
   `[payload, exchange, routing_key]`) and `unacked_index` sorted set (delivery
   tag -> delivery time), and restores it only after the visibility timeout. The key
   names are kombu's transport options, set to ours in common.celery_app; the
   layout of the entries and how to drop one (both keys, as kombu's own ack does)
   are kombu's internals, read here and nowhere else. `global_keyprefix` must stay
   unset: kombu would prefix these keys.

3. Stock Celery clients (`celery inspect`, `status`, `purge`, Flower) share this
   Redis, so we keep kombu's default layout: the priority lists and the binding
   tables (`_kombu.binding.<exchange>`, members "routing_key SEP pattern SEP queue")
   use kombu's default separator and steps (common/constants.py). Before that we used
   ":" and steps (0, 9): a stock client's binding entry then broke every control reply
   ("Control command error: not enough values to unpack"), and `celery purge` missed
   our batch lists. `adopt_legacy_layout` moves what a deployment of that layout left
   behind, and our channel skips binding entries it cannot parse instead of failing
   the whole lookup (one foreign client must not cut every worker off).

4. The reconciler accounts for every queued job's message (api/recovery.py): kombu
   LPUSHes a message onto its queue's priority list and a worker BRPOPs it from the
   other end, then writes it to `unacked`. A message lost on the way (a worker killed
   between the two, `celery purge`, eviction) is on neither, so the reconciler counts
   both (`message_counts`), reads the lists in slices from their pushing end
   (`job_ids_on_list`: an index there only grows while the message waits, so a sweep
   that walks up the indices misses no message that stays), and the hash
   (`unacked_job_ids`). The job id is in the message's headers; a regular expression
   on the raw bytes reads it thirty times faster than JSON (0.3 ms against 9 ms for
   1,000 messages of 1 KB), and JSON is the fallback for a message it does not match.

5. kombu's bookkeeping of a delivered message costs four Redis commands in two
   MULTI/EXEC transactions (ZADD + HSET when it is delivered, ZREM + HDEL when it is
   acked): eight of the twenty an echo job cost in all. Neither pair needs to be
   atomic (every reader of the two keys, kombu's and ours, takes an index entry
   without its hash entry as nothing), and neither needs to be written at once:
   nothing acts on an entry younger than a lease. So our QoS writes them in the
   background (`Bookkeeper`), without MULTI, many tags to one command, a delivery
   only once it is QOS_DEFER_S old and still unacked; a message acked before that
   (a short job) costs no command at all. What this widens is the moment a dead
   worker loses a message, from kombu's millisecond between its BRPOP and its
   write to up to 2 x QOS_DEFER_S: the reconciler's lost-message sweep (item 4)
   publishes such a message's job again, as it always did for that millisecond. A
   requeue (reject with requeue) writes what is pending first, since kombu restores
   the message from the hash.

Checked against the kombu versions in CHECKED (tests/common/compat/test_kombu_redis.py).
"""

from __future__ import annotations

import base64
import bisect
import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis as redis_lib
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from common.constants import PRIORITY_SEP, PRIORITY_STEPS, QUEUES, TASK_BY_KIND, TASK_CHUNK

CHECKED = {"kombu": ">=5.7.0,<5.8"}

log = logging.getLogger(__name__)

UNACKED_HASH = "unacked"
UNACKED_INDEX = "unacked_index"
_OUR_TASKS = frozenset(TASK_BY_KIND.values())


# A delivery's entry is written once it is this old and still unacked (item 5).
QOS_DEFER_S = 0.05


class Bookkeeper:
    """The unacked entries of one channel's QoS still to be written, and the acks still
    to be erased, written by a thread of its own every QOS_DEFER_S (item 5)."""

    def __init__(self, qos: QoS):
        self.qos = qos
        self._lock = threading.Lock()
        self._adds: dict[str, tuple[float, str]] = {}  # tag -> (delivered at, entry)
        self._acks: list[str] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = False

    def delivered(self, tag: str, entry: str) -> None:
        with self._lock:
            self._adds[tag] = (time.time(), entry)
        self._start()

    def acked(self, tag: str) -> None:
        with self._lock:
            if self._adds.pop(tag, None) is not None:
                return  # never written: nothing to erase
            self._acks.append(tag)
        self._start()

    def _start(self) -> None:
        self._wake.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, daemon=True,
                                                    name="kombu-qos-writer")
                    self._thread.start()

    def _loop(self) -> None:
        while not self.closed:
            self._wake.wait()
            time.sleep(QOS_DEFER_S)
            with self._lock:
                if not self._adds and not self._acks:
                    self._wake.clear()
                    continue
            try:
                self.write(older_than=time.time() - QOS_DEFER_S)
            except (redis_lib.RedisError, OSError) as exc:
                log.warning("unacked bookkeeping not written (retrying): %s", exc)
                time.sleep(1.0)

    def write(self, older_than: float | None = None) -> None:
        """Write the entries delivered before `older_than` (every one when None) and
        erase the acked ones, in one round trip. Raises the client's error, keeping
        what it could not write for the next call."""
        with self._lock:
            adds = {tag: v for tag, v in self._adds.items()
                    if older_than is None or v[0] <= older_than}
            for tag in adds:
                del self._adds[tag]
            acks, self._acks = self._acks, []
        if not adds and not acks:
            return
        qos = self.qos
        try:
            with qos.channel.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                if adds:
                    pipe.zadd(qos.unacked_index_key, {t: at for t, (at, _) in adds.items()})
                    pipe.hset(qos.unacked_key, mapping={t: e for t, (_, e) in adds.items()})
                if acks:
                    pipe.zrem(qos.unacked_index_key, *acks)
                    pipe.hdel(qos.unacked_key, *acks)
                pipe.execute()
        except BaseException:
            with self._lock:  # an ack that came meanwhile is erased after its entry
                self._adds = {**adds, **self._adds}
                self._acks = acks + self._acks
            raise

    def close(self) -> None:
        """Write what is pending, if the broker still answers (best effort)."""
        self.closed = True
        self._wake.set()
        try:
            self.write()
        except (redis_lib.RedisError, OSError) as exc:
            log.info("unacked bookkeeping dropped at close: %s", exc)


class QoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.book = Bookkeeper(self)

    def append(self, message: Any, delivery_tag: str) -> None:
        info = message.delivery_info
        self.book.delivered(delivery_tag, json.dumps(
            [message._raw, info["exchange"], info["routing_key"]]))
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if not self.channel.closed:
            self.book.acked(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # on a closed channel: local bookkeeping only

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self.channel.closed or not requeue:
            self.ack(delivery_tag)  # kombu's reject without requeue is an ack
            return
        self.book.write()  # kombu restores the message from its unacked entry
        super().reject(delivery_tag, requeue=True)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    QoS = QoS
    do_restore = False

    def close(self) -> None:
        qos = self.__dict__.get("_qos")  # only if this channel consumed
        if qos is not None and not self.closed:
            qos.book.close()
        super().close()  # type: ignore[no-untyped-call]  # kombu: untyped

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        """kombu's binding table of `exchange`, less the entries it cannot parse.

        kombu splits every member on its separator and unpacks three fields; one
        member written with another separator (an old deployment, a client configured
        otherwise) raised in each lookup, so a worker could answer no control command.
        """
        table = super().get_table(exchange)  # type: ignore[no-untyped-call]  # kombu: untyped
        rows = [row for row in table if len(row) == 3]
        if len(rows) < len(table):
            log.warning("skipped %d binding(s) of exchange %r written with another "
                        "separator", len(table) - len(rows), exchange)
        return rows


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"


# The layout before kombu's defaults (3. above): lists QUEUE:9 for the batch step.
LEGACY_SEP = ":"
LEGACY_STEPS = (0, 9)
# Exchanges whose binding tables our processes and stock clients write: our queues'
# own, Celery's events, and its remote control (broadcast, replies).
_EXCHANGES = (*QUEUES, "celery", "celeryev", "celery.pidbox", "reply.celery.pidbox")

# KEYS: ARGV[1] pairs (legacy list, its list now), then binding tables; ARGV[2]: sep.
# A legacy list becomes the new one (RENAME) or, if that exists, is appended to its
# consuming end in order, so its messages, the older ones, are served first. Binding
# members without exactly two separators are removed. Returns {moved, dropped}.
_ADOPT_LEGACY = """
local pairs, sep = tonumber(ARGV[1]), ARGV[2]
local moved, dropped = 0, 0
for i = 1, 2 * pairs, 2 do
  local src, dst = KEYS[i], KEYS[i + 1]
  if redis.call('TYPE', src).ok == 'list' then
    local n = redis.call('LLEN', src)
    if redis.call('EXISTS', dst) == 0 then
      redis.call('RENAME', src, dst)
    else
      for first = 0, n - 1, 1000 do
        redis.call('RPUSH', dst, unpack(redis.call('LRANGE', src, first, first + 999)))
      end
      redis.call('DEL', src)
    end
    moved = moved + n
  end
end
for i = 2 * pairs + 1, #KEYS do
  if redis.call('TYPE', KEYS[i]).ok == 'set' then
    for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do
      local count, at = 0, string.find(member, sep, 1, true)
      while at do
        count = count + 1
        at = string.find(member, sep, at + #sep, true)
      end
      if count ~= 2 then
        redis.call('SREM', KEYS[i], member)
        dropped = dropped + 1
      end
    end
  end
end
return {moved, dropped}
"""


def _legacy_moves() -> list[tuple[str, str]]:
    moves = []
    for queue in QUEUES:
        for step in LEGACY_STEPS:
            now = PRIORITY_STEPS[bisect.bisect(PRIORITY_STEPS, step) - 1]
            if step:  # step 0 was and is the bare queue name
                moves.append((f"{queue}{LEGACY_SEP}{step}",
                              f"{queue}{PRIORITY_SEP}{now}" if now else queue))
    return moves


def adopt_legacy_layout(redis: Any) -> Any:
    """Move what the layout before kombu's defaults left on Redis to today's names:
    queued messages on legacy priority lists (`llm:9`), and binding entries written
    with the legacy separator. Idempotent, atomic (one Lua script) and cheap when
    there is nothing to move. `redis` is a redis client: returns [moved, dropped], or
    for a redis.asyncio client an awaitable of it."""
    moves = _legacy_moves()
    tables = [prefix % exchange for exchange in _EXCHANGES
              for prefix in (Channel.keyprefix_queue, Channel.keyprefix_binding_permanent)]
    keys = [key for pair in moves for key in pair] + tables
    return redis.eval(_ADOPT_LEGACY, len(keys), *keys, len(moves), PRIORITY_SEP)


def queue_lists(queues: Iterable[str] = QUEUES) -> list[str]:
    """Every Redis list kombu keeps the messages of `queues` on, one per priority step."""
    return [f"{queue}{PRIORITY_SEP}{step}" if step else queue
            for queue in queues for step in PRIORITY_STEPS]


# The first "task" and "id" keys of a message are its headers': the body before them
# is base64, and no other key is named "id".
_TASK_RE = re.compile(rb'"task": ?"([^"\\]*)"')
_ID_RE = re.compile(rb'"id": ?"([^"\\]*)"')


def _job_id(raw: bytes | str | None, *, wrapped: bool) -> str | None:
    if not raw:  # None: the tag's message is gone from the hash
        return None
    data = raw.encode() if isinstance(raw, str) else raw
    task, task_id = _TASK_RE.search(data), _ID_RE.search(data)
    if task and task_id:
        if task.group(1).decode() not in _OUR_TASKS:
            return None
        return task_id.group(1).decode().split(".", 1)[0]  # task id: "{job_id}.{attempt}"
    try:
        message = json.loads(data)
        headers = (message[0] if wrapped else message)["headers"]
        if headers.get("task") not in _OUR_TASKS:
            return None
        return str(headers["id"]).split(".", 1)[0]
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        return None


def job_id_of_unacked(raw: bytes | str | None) -> str | None:
    """The job id of one of our task messages in the unacked hash, else None."""
    return _job_id(raw, wrapped=True)  # an entry is [message, exchange, routing key]


def job_id_of_message(raw: bytes | str | None) -> str | None:
    """The job id of one of our task messages on a priority list, else None."""
    return _job_id(raw, wrapped=False)


async def message_counts(redis: Any, lists: Iterable[str]) -> tuple[int, int]:
    """(messages on `lists`, entries in the unacked hash), in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for key in lists:
        pipe.llen(key)
    pipe.hlen(UNACKED_HASH)
    *lengths, unacked = await pipe.execute()
    return sum(lengths), unacked


async def job_ids_on_list(redis: Any, key: str, start: int,
                          count: int) -> tuple[list[str], int]:
    """The job ids of our messages at indices start .. start+count-1 of `key`, counted
    from its pushing end, and how many messages were read (fewer than count: the end)."""
    raws = await redis.lrange(key, start, start + count - 1)
    return [job for raw in raws for job in job_ids_of_message(raw)], len(raws)


async def unacked_job_ids(redis: Any) -> set[str]:
    """The jobs whose messages sit in the unacked hash (delivered, not yet acked)."""
    jobs: set[str] = set()
    async for _tag, raw in redis.hscan_iter(UNACKED_HASH, count=1000):
        jobs.update(job_ids_of_unacked(raw))
    return jobs


def job_ids_of_unacked(raw: bytes | str | None) -> list[str]:
    """The job ids of one of our task messages in the unacked hash: its job's, or
    every line's of a chunk (TASK_CHUNK, args [[job ids]])."""
    return _job_ids(raw, wrapped=True)


def job_ids_of_message(raw: bytes | str | None) -> list[str]:
    """The job ids of one of our task messages on a priority list (see above)."""
    return _job_ids(raw, wrapped=False)


def _job_ids(raw: bytes | str | None, *, wrapped: bool) -> list[str]:
    if not raw:
        return []
    data = raw.encode() if isinstance(raw, str) else raw
    task = _TASK_RE.search(data)
    if task is None or task.group(1).decode() != TASK_CHUNK:
        job = _job_id(raw, wrapped=wrapped)
        return [job] if job else []
    try:  # a chunk: its lines are in the body (base64 JSON: [args, kwargs, embed])
        message = json.loads(data)
        body = (message[0] if wrapped else message)["body"]
        return [str(j) for j in json.loads(base64.b64decode(body))[0][0]]
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        return []


async def stale_unacked(redis: Any, *, delivered_before: float,
                        limit: int) -> dict[str, list[bytes]]:
    """Our jobs' messages delivered before `delivered_before` (epoch seconds) and still
    unacked, oldest first: job id -> delivery tags. `redis` is a redis.asyncio client."""
    tags = await redis.zrangebyscore(UNACKED_INDEX, "-inf", delivered_before,
                                     start=0, num=limit)
    if not tags:
        return {}
    by_job: dict[str, list[bytes]] = {}
    for tag, raw in zip(tags, await redis.hmget(UNACKED_HASH, tags), strict=True):
        for job_id in job_ids_of_unacked(raw):
            by_job.setdefault(job_id, []).append(tag)
    return by_job


async def forget_unacked(redis: Any, tags: Iterable[bytes | str]) -> None:
    """Drop messages from kombu's unacked bookkeeping, so it never delivers them again."""
    tags = list(tags)
    if tags:
        await redis.pipeline(transaction=False).zrem(UNACKED_INDEX, *tags) \
            .hdel(UNACKED_HASH, *tags).execute()


__all__ = [
    "CHECKED", "LEGACY_SEP", "LEGACY_STEPS", "QOS_DEFER_S", "TRANSPORT", "UNACKED_HASH",
    "UNACKED_INDEX", "Bookkeeper", "Transport", "adopt_legacy_layout", "forget_unacked",
    "job_id_of_message", "job_id_of_unacked", "job_ids_of_message", "job_ids_of_unacked",
    "job_ids_on_list", "message_counts", "queue_lists", "stale_unacked", "unacked_job_ids",
]
