"""sd_notify: telling the service manager (systemd, `Type=notify`) READY=1, STATUS=..., WATCHDOG=1 and
STOPPING=1 over the datagram socket named by $NOTIFY_SOCKET.  Without $NOTIFY_SOCKET every call does nothing,
so `clawfs serve` behaves the same in a terminal.

The protocol is one AF_UNIX datagram of newline-separated KEY=VALUE lines; a name starting with '@' is in the
abstract namespace (a leading NUL byte).  Written here rather than taken from a package: it is twenty lines, and
python-systemd would pull libsystemd bindings in for them.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("clawfs.notify")


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        name = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if name.startswith("@"):
            self.address = b"\0" + name[1:].encode()
        elif name.startswith("/"):
            self.address = name
        elif name:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name; not notifying", name)
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of KEY=VALUE lines (READY=1, STATUS=...); False when not under a manager or the
        manager did not take it (logged: a failed notify must not stop the service)."""
        if self.address is None:
            return False
        text = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(text.encode(), self.address)
        except OSError as e:
            log.warning("sd_notify %s failed: %s", ", ".join(fields), e)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)


def _watchdog_interval(env: dict[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC (systemd's advice), None when no watchdog is
    set or it is meant for another process ($WATCHDOG_PID)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid is not None and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2 / 1e6
