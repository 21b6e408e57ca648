"""`monkey flower`: Flower on our Celery app.

Flower is started through its own command (what `celery --app ... flower` runs), on
the app that `make_celery(settings)` builds, so it reads the same broker URL and the
same visibility timeout as the API and the workers (on kombu's own Redis transport:
see flower_app). Stock Flower (`celery --broker $REDIS_URL flower`) works as well.
Basic auth comes from FLOWER_BASIC_AUTH ("user:password[,user2:password2]") and is
required whenever Flower listens beyond loopback. Flower's own `/metrics` and
`/healthcheck` stay open (Flower never puts them behind auth); everything else, its
HTTP API included, needs the password.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import click

from common.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "FlowerConfigError",
    "flower_app",
    "flower_argv",
    "is_loopback",
    "parse_basic_auth",
    "run_flower",
]

log = logging.getLogger(__name__)


class FlowerConfigError(click.ClickException):
    """Flower would start exposed or with unusable settings; the message says what to set.

    A ClickException, so `monkey flower` prints it and exits 1 without a traceback.
    Messages never contain a password.
    """


def is_loopback(address: str) -> bool:
    """True only for addresses that no other machine can reach ("" means every interface)."""
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # An empty string (all interfaces) or a host name that may resolve anywhere.
        return False


def parse_basic_auth(value: str) -> list[str]:
    """Split FLOWER_BASIC_AUTH into "user:password" entries, refusing malformed ones."""
    entries = [part.strip() for part in value.split(",") if part.strip()]
    for number, entry in enumerate(entries, start=1):
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise FlowerConfigError(
                f"FLOWER_BASIC_AUTH entry {number} is not user:password "
                "(several entries are separated by commas)"
            )
    return entries


def flower_argv(
    settings: Settings, *, port: int = 5555, address: str = "127.0.0.1", url_prefix: str = ""
) -> list[str]:
    """The `flower` command line for these settings; raises FlowerConfigError if unsafe.

    The result holds the passwords: pass it to Flower, never log it.
    """
    if not 0 <= port <= 65535:
        raise FlowerConfigError(f"Flower port {port} is out of range")
    credentials = parse_basic_auth(settings.flower_basic_auth)
    if not credentials and not is_loopback(address):
        shown = address or "every interface"
        raise FlowerConfigError(
            f"Flower would listen on {shown} without a password: set FLOWER_BASIC_AUTH="
            "user:password, or listen on 127.0.0.1"
        )
    argv = [
        "flower",
        f"--port={port}",
        # Tornado binds "::" to IPv6 only; "" binds every interface on IPv4 and IPv6.
        f"--address={'' if address.strip() in ('::', '[::]') else address.strip()}",
    ]
    prefix = url_prefix.strip().strip("/")
    if prefix:
        argv.append(f"--url_prefix={prefix}")
    if credentials:
        argv.append(f"--basic_auth={','.join(credentials)}")
    return argv


def flower_app(settings: Settings) -> Celery:
    """Our Celery app as Flower needs it.

    Flower consumes no task, so it needs none of our transport's fixes; and it picks
    its broker client (the Broker tab, /api/queues/length) from the scheme of the
    connection's URL, which kombu writes from the transport's name. So Flower runs on
    kombu's own Redis transport, chosen by the URL's scheme, and that stays `redis://`.
    """
    from common.celery_app import make_celery

    app = make_celery(settings)
    app.conf.broker_transport = None
    return app


def run_flower(
    settings: Settings, *, port: int = 5555, address: str = "127.0.0.1", url_prefix: str = ""
) -> None:
    """Run Flower in this process until it is stopped (SIGINT or SIGTERM).

    Raises FlowerConfigError before starting anything when FLOWER_BASIC_AUTH is missing
    for a non-loopback address or malformed.
    """
    argv = flower_argv(settings, port=port, address=address, url_prefix=url_prefix)
    app = flower_app(settings)
    host = address.strip() or "*"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    prefix = url_prefix.strip().strip("/")
    log.info(
        "starting Flower on http://%s:%d/%s (basic auth %s)",
        host,
        port,
        f"{prefix}/" if prefix else "",
        "on" if settings.flower_basic_auth.strip() else "off: loopback only",
    )
    app.start(argv)
