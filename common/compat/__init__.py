"""The only places that lean on a library's internals, each one for a measured reason.

Everywhere else we extend libraries through their documented extension points. Where
that was not enough, one module per library holds all of it, says why, and names in
`CHECKED` the versions its code was read against; its test (tests/<same path>)
fails when an upgrade leaves that range or changes what the module relies on:

- common.compat.kombu_redis: kombu's Redis transport (ack emulation, `unacked` hash);
- workers.compat.celery_consumer: Celery's consumer (when task events are flushed);
- workers.compat.httpx_pool: httpx's transport (the httpcore pool under it).

On an upgrade, re-read the library code each module names, then move `CHECKED`.
"""

__all__: list[str] = []
