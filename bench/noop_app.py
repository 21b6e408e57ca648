"""A bare Celery app with one no-op task: the baseline our pipeline is compared with."""

import os

from celery import Celery

app = Celery("noop", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(task_serializer="json", accept_content=["json"], worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)


@app.task(name="bench.noop")
def noop() -> None:
    return None
