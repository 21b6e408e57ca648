"""The `monkey` command: each service alone, or the whole stack with `monkey up`."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from common.constants import QUEUE_GPU, QUEUES
from common.settings import get_settings


def _logging(level: str) -> None:
    from monkey.logs import configure

    configure(level)


def _queue_names(queues: str) -> list[str]:
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if not names or unknown:
        raise click.BadParameter(f"unknown queue(s) {unknown}; choose from {', '.join(QUEUES)}")
    return names


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Log level.")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """Monkey Coder: run long AI generation jobs."""
    ctx.obj = {"log_level": log_level.upper()}
    _logging(log_level.upper())


@main.command()
@click.option("--host", default=None, help="Address to bind (default MONKEY_HOST or 127.0.0.1;"
              " '::' binds IPv4 and IPv6).")
@click.option("--port", type=int, default=None, help="Port (default PORT or 8000).")
@click.option("--workers", "processes", type=int, default=1, show_default=True,
              help="API processes.")
def api(host: str | None, port: int | None, processes: int) -> None:
    """Run the HTTP API."""
    import uvicorn

    settings = get_settings()
    child = None
    if settings.control == "child":
        from api.control import start_child

        child = start_child(click.get_current_context().obj["log_level"])
    config = uvicorn.Config(
        "api.main:create_app", factory=True, host=host or settings.host,
        port=port or settings.port, workers=processes, log_config=None,
        proxy_headers=True, forwarded_allow_ips="*", timeout_graceful_shutdown=5,
    )
    try:
        if processes > 1:
            uvicorn.run(config.app, **{k: getattr(config, k) for k in ("host", "port", "workers")},
                        factory=True, log_config=None, proxy_headers=True,
                        forwarded_allow_ips="*")
            return
        # Bind the socket ourselves: for '::' it then accepts IPv4 too (uvicorn's own
        # bind would make it IPv6-only).
        uvicorn.Server(config).run(sockets=[config.bind_socket()])
    finally:
        if child is not None:
            from api.control import stop_child

            stop_child(child)


@main.command()
@click.option("--parent", type=int, default=None, hidden=True,
              help="Stop when this process (the API that started us) is gone.")
def control(parent: int | None) -> None:
    """Run the control process: the reconciler and the batch engine."""
    from api.control import run_control

    run_control(get_settings(), parent_pid=parent)


@main.command()
@click.option("--queues", "-Q", required=True, help="Comma-separated: gpu, llm.")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Task threads (default MONKEY_WORKER_CONCURRENCY, 32).")
@click.option("--idle-exit", "idle_exit", type=click.FloatRange(min=0), default=None,
              metavar="S", help="Exit 0 after S seconds with no job running or held "
              "(to scale to zero).")
@click.pass_context
def worker(ctx: click.Context, queues: str, concurrency: int | None,
           idle_exit: float | None) -> None:
    """Run a Celery worker for QUEUES (threads pool)."""
    from workers.app import run_worker

    names = _queue_names(queues)
    settings = get_settings()
    if QUEUE_GPU in names:
        logging.getLogger("monkey").info("gpu worker: loading local models before consuming")
    run_worker(settings, queues=names, concurrency=concurrency or settings.worker_concurrency,
               loglevel=ctx.obj["log_level"], idle_exit_s=idle_exit)


@main.command("ml-service")
@click.option("--host", default=None, help="Address to bind (default MONKEY_HOST or 127.0.0.1;"
              " '::' binds IPv4 and IPv6).")
@click.option("--port", type=int, default=None, help="Port (default PORT or 8000).")
@click.option("--queues", "-Q", default=QUEUE_GPU, show_default=True,
              help="Comma-separated queues of the worker it starts.")
@click.option("--idle-exit", "idle_exit", type=click.FloatRange(min=0), default=300.0,
              show_default=True, metavar="S",
              help="The worker exits after S idle seconds; the service sleeps until woken.")
@click.option("--check-every", "check_every", type=click.FloatRange(min=0), default=0.0,
              show_default=True, metavar="S",
              help="While asleep, look for waiting task messages every S seconds (0: never;"
              " polling keeps a Railway Serverless service awake).")
@click.pass_context
def ml_service(ctx: click.Context, host: str | None, port: int | None, queues: str,
               idle_exit: float, check_every: float) -> None:
    """Serve /healthz and POST /wake on PORT; run a worker only while there is work."""
    from monkey.ml_service import run_ml_service

    names = _queue_names(queues)
    settings = get_settings()
    sys.exit(run_ml_service(host=host or settings.host, port=port or settings.port,
                            queues=names, idle_exit_s=idle_exit, redis_url=settings.redis_url,
                            check_every_s=check_every, log_level=ctx.obj["log_level"]))


@main.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from common.migrate import upgrade

    upgrade(get_settings())
    click.echo("database is up to date")


@main.group()
def keys() -> None:
    """Manage API keys."""


_WEIGHT = click.FloatRange(min=0, min_open=True, max=1000)


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--weight", type=_WEIGHT, default=1.0, show_default=True,
              help="The key's share of the queue when other keys are busy too (2 runs "
              "twice as many of its jobs as a key of weight 1).")
def keys_create(name: str, weight: float) -> None:
    """Create an API key; the key itself is printed alone on the last line."""
    from common.keys import create_api_key

    key = asyncio.run(create_api_key(get_settings(), name, weight))
    click.echo(f"Created API key {name!r}. Keep it safe: it is shown only once.", err=True)
    click.echo(key)


@keys.command("weight")
@click.argument("key")
@click.argument("weight", type=_WEIGHT)
def keys_weight(key: str, weight: float) -> None:
    """Set the weight of KEY (its id, or its name) to WEIGHT."""
    from common.keys import set_key_weight

    try:
        ids = asyncio.run(set_key_weight(get_settings(), key, weight))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not ids:
        raise click.ClickException(f"no API key with the id or name {key!r}")
    click.echo(f"key {ids[0]}: weight {weight:g} (the API applies it within 10 s)")


@main.command()
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--url-prefix", default="", help="Serve under this path, e.g. flower.")
def flower(port: int, address: str, url_prefix: str) -> None:
    """Run Flower on the Monkey Coder Celery app."""
    from monkey.flower import run_flower

    run_flower(get_settings(), port=port, address=address, url_prefix=url_prefix)


@main.command()
@click.option("--host", default=None, help="API address (default MONKEY_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="API port (default PORT or 8000).")
@click.option("--flower-port", type=int, default=5555, show_default=True)
@click.option("--no-gpu-worker", is_flag=True, help="Do not start the local-model worker.")
def up(host: str | None, port: int | None, flower_port: int, no_gpu_worker: bool) -> None:
    """Start the whole stack on this machine (Ctrl-C stops it)."""
    from monkey.up import run_up

    sys.exit(run_up(host=host, port=port, flower_port=flower_port,
                    gpu_worker=not no_gpu_worker))


# Client commands (on monkey.client): submit, jobs ..., batch ...
from monkey.cli_batch import batch  # noqa: E402 - registered after the group exists
from monkey.cli_jobs import jobs, submit  # noqa: E402

main.add_command(submit)
main.add_command(jobs)
main.add_command(batch)


if __name__ == "__main__":
    main()
