"""Network namespaces: bring up a new namespace's loopback (an ioctl, fast, on the jail's start path) and, with
pyroute2 (imported here only, lazily), named namespaces joined to the host by a veth pair: the tests' own
hosts on this machine (say 10.251.0.2 and 169.254.77.2) whose listeners record any connection that escapes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import namespaces

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
NETNS_DIR = "/var/run/netns"


def loopback_up() -> None:
    """Set lo up in the caller's network namespace (a new one starts with lo down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


def interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


@contextlib.contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with this thread in the network namespace at path (setns is per thread)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        namespaces.setns(target, namespaces.CLONE_NEWNET)
        try:
            yield
        finally:
            namespaces.setns(own, namespaces.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)


@dataclass
class VethHost:
    """A named namespace reached from the host through a veth pair: host side addresses host_addrs, the
    namespace side peer_addrs (CIDR strings)."""
    name: str
    host_if: str
    host_addrs: list[str]
    peer_addrs: list[str]
    path: str = ""
    _ipr: object = field(default=None, repr=False)

    def create(self) -> VethHost:
        from pyroute2 import IPRoute, NetNS, netns  # the one place pyroute2 is imported

        netns.create(self.name)
        self.path = os.path.join(NETNS_DIR, self.name)
        peer_if = self.host_if + "p"
        with IPRoute() as ipr:
            ipr.link("add", ifname=self.host_if, kind="veth", peer={"ifname": peer_if, "net_ns_fd": self.name})
            idx = ipr.link_lookup(ifname=self.host_if)[0]
            for cidr in self.host_addrs:
                addr, plen = cidr.split("/")
                ipr.addr("add", index=idx, address=addr, prefixlen=int(plen))
            ipr.link("set", index=idx, state="up")
        with NetNS(self.name) as ns:
            pidx = ns.link_lookup(ifname=peer_if)[0]
            for cidr in self.peer_addrs:
                addr, plen = cidr.split("/")
                ns.addr("add", index=pidx, address=addr, prefixlen=int(plen))
            ns.link("set", index=pidx, state="up")
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
        return self

    def destroy(self) -> None:
        from pyroute2 import IPRoute, netns

        with contextlib.suppress(Exception), IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.host_if)
            if found:
                ipr.link("del", index=found[0])
        with contextlib.suppress(Exception):
            netns.remove(self.name)


class RecordingListener:
    """TCP listeners on (addr, port) pairs inside a namespace that record every connection they accept."""

    def __init__(self, ns_path: str, addrs: list[tuple[str, int]]) -> None:
        self.connections: list[tuple[str, int]] = []
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        with entered(ns_path):
            for addr, port in addrs:
                fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
                s.listen(16)
                s.settimeout(0.1)
                self._socks.append(s)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for s in self._socks:
                try:
                    conn, _ = s.accept()
                except (TimeoutError, OSError):
                    continue
                self.connections.append(s.getsockname()[:2])
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self._socks:
            s.close()
