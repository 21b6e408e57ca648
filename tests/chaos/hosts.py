"""Other machines for chaos tests: a network namespace per host, and links from it to
the services of this one (Postgres, Redis) that a test can cut and heal.

Postgres and Redis listen on 127.0.0.1 here, which no other namespace can reach, so
each link is a veth pair of its own with a `Forwarder` on this side, bound to the
pair's address and moving bytes to the service. A cut sets this side's end down:
the host's end loses its carrier and drops what it sends, so a connection hangs and
a new one times out, and nothing is reset, as in a real partition. A heal sets it up
again; TCP retransmits, and the connections that hung go on where they stopped.

Every host also has a `lan` link that is never cut: the test reaches services that
run in the host (an API) at `host.ip`.

Namespace and device names are random, so parallel test sessions do not clash; a
host is removed with its processes, links and forwarders when its test ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379}


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Forwarder:
    """Accepts connections on `listen_ip` (any port) and moves bytes between each one
    and a connection of its own to `target`, a thread per direction. It never ends a
    connection on its own account: only its ends do, or `close()`."""

    def __init__(self, listen_ip: str, target: tuple[str, int]):
        self.target = target
        self.server = socket.create_server((listen_ip, 0))
        self.server.settimeout(0.2)  # so that the accept loop sees close()
        self.address = self.server.getsockname()[:2]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True,
                         name=f"forward-{target[1]}").start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                near, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                far = socket.create_connection(self.target, timeout=5)
            except OSError:
                near.close()
                continue
            near.settimeout(None)
            far.settimeout(None)
            with self._lock:
                self._sockets += [near, far]
            for src, dst in ((near, far), (far, near)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    # One end went away: so does the other (neither client here half-closes).
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@dataclass
class Link:
    name: str
    outer_dev: str  # this namespace's end (a cut sets it down)
    inner_dev: str  # the host's end
    outer_ip: str
    inner_ip: str
    forwarders: list[Forwarder]


def _mac(dev: str, netns: str | None = None) -> str:
    out = ip(*(["-n", netns] if netns else []), "-o", "link", "show", "dev", dev).split()
    return out[out.index("link/ether") + 1]


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 that no address here is in (10.128.0.0/9, picked at random)."""
    used = [ipaddress.ip_interface(word) for line in ip("-o", "-4", "addr", "show").splitlines()
            for word in line.split()[3:4]]
    for _ in range(100):
        b, c, d = random.randint(128, 254), random.randint(0, 255), 4 * random.randint(0, 63)
        net = ipaddress.ip_network(f"10.{b}.{c}.{d}/30")
        if not any(i.network.overlaps(net) for i in used):
            return net
    raise RuntimeError("no free /30 found in 10.128.0.0/9")


class Host:
    """One network namespace standing for another machine (see the module's docstring)."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(4)
        self.name = f"monkey-{self.token}"
        self.links: dict[str, Link] = {}
        ip("netns", "add", self.name)
        try:
            ip("-n", self.name, "link", "set", "lo", "up")
            self.ip = self.link("lan").inner_ip
        except BaseException:
            self.close()
            raise

    @property
    def wrap(self) -> list[str]:
        """The command prefix that runs a process on this host."""
        return ["ip", "netns", "exec", self.name]

    def link(self, name: str) -> Link:
        """The host's link called `name`, made on first use."""
        if name in self.links:
            return self.links[name]
        n = len(self.links)
        outer, inner = f"mk{self.token}{n}o", f"mk{self.token}{n}i"
        net = _free_subnet()
        outer_ip, inner_ip = (str(a) for a in net.hosts())
        ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", self.name)
        link = self.links[name] = Link(name, outer, inner, outer_ip, inner_ip, [])
        ip("addr", "add", f"{outer_ip}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("-n", self.name, "addr", "add", f"{inner_ip}/30", "dev", inner)
        ip("-n", self.name, "link", "set", inner, "up")
        # Fixed neighbours: during a cut, a connect then sends its SYN into the void and
        # hangs, instead of failing at once when ARP finds no one ("no route to host").
        ip("neigh", "replace", inner_ip, "lladdr", _mac(inner, self.name), "dev", outer,
           "nud", "permanent")
        ip("-n", self.name, "neigh", "replace", outer_ip, "lladdr", _mac(outer), "dev", inner,
           "nud", "permanent")
        return link

    def reach(self, url: str, link: str) -> str:
        """`url` (a service of this machine) as the host reaches it: over `link`,
        through a forwarder of its own."""
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS[parts.scheme.split("+")[0]]
        lnk = self.link(link)
        fwd = Forwarder(lnk.outer_ip, (parts.hostname or "127.0.0.1", port))
        lnk.forwarders.append(fwd)
        user, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user}{at}{fwd.address[0]}:{fwd.address[1]}"))

    def cut(self, link: str) -> None:
        ip("link", "set", self.links[link].outer_dev, "down")

    def heal(self, link: str) -> None:
        ip("link", "set", self.links[link].outer_dev, "up")

    def pids(self) -> list[int]:
        with contextlib.suppress(RuntimeError):
            return [int(p) for p in ip("netns", "pids", self.name).split()]
        return []

    def close(self) -> None:
        """Kill what runs on the host, then remove it with its links and forwarders."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for link in self.links.values():
            for fwd in link.forwarders:
                fwd.close()
        with contextlib.suppress(RuntimeError):
            ip("netns", "delete", self.name)  # its devices go with it, and their peers
        for link in self.links.values():  # a pair whose end never reached the namespace
            with contextlib.suppress(RuntimeError):
                ip("link", "delete", link.outer_dev)
