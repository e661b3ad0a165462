"""The mount daemon's control socket: where it is, who may speak on it, its messages, and the client side.

A mount's daemon listens on a Unix socket named from its mountpoint (`control_path`): /run/clawfs/<digest>.sock
for a root mount, /tmp/clawfs-<uid>/<digest>.sock otherwise, in a directory of mode 0700 owned by the mounting
uid, the socket itself 0600.  The daemon answers only a peer whose SO_PEERCRED uid is its own (the kernel
vouches for it; the modes already keep others out, the check holds even if a mode is loosened).

Messages are SOCK_SEQPACKET datagrams of JSON (one message, one read: a descriptor handed over with
SCM_RIGHTS arrives with its own message).  One conversation, the proxy lease of a jail (`JailLease`):

1. client `{"op": "serve", "tool": NAME|null}`; daemon `{"ok": true, "agent_uid": N|null, "agent_gid": G|null,
   "ca_pem": the store CA's certificate for the jail's trust bundle}` or `{"error": "cause and fix"}` (e.g. no
   such tool);
2. client `{"op": "socket", "cgroup": {...}|null, "root_dir": PATH}` with the jail's listening proxy socket;
   daemon `{"ok": true, "id": N}`: it serves that socket from now on, for that tool, policy read live;
3. client `{"op": "end"}` once the jail has ended; daemon `{"allowed": A, "refused": R}` and closes.

If the client goes away before `end` (it was killed), the daemon kills the jail's cgroup and stops serving: a
jail never outlives the process that holds it, so no orphaned runtime keeps working on the home.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from clawfs.errors import UserError

MAX_MESSAGE = 64 << 10


def control_dir(uid: int | None = None) -> str:
    uid = os.getuid() if uid is None else uid
    return "/run/clawfs" if uid == 0 else f"/tmp/clawfs-{uid}"


def control_path(mountpoint: str, uid: int | None = None) -> str:
    digest = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:32]
    return os.path.join(control_dir(uid), f"{digest}.sock")


def make_dir(path: str) -> None:
    """The socket's directory: made 0700 if absent; refused if it is not ours or others may enter it (in /tmp
    another uid could have made it first)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not os.path.isdir(path) or os.path.islink(path):
        raise UserError(f"{path} is not a private directory of uid {os.getuid()}: remove it and mount again")


def peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return int(uid)


def send(conn: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(conn, [data], fds)
    else:
        conn.send(data)


def receive(conn: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """(message, descriptors); (None, []) when the peer has gone."""
    data, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, max_fds)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ValueError("a control message is a JSON object")
    return msg, fds


@dataclass
class JailLease:
    """The client side: asks the mount's daemon to serve a jail's proxy socket (module docstring)."""

    conn: socket.socket
    agent_uid: int | None
    agent_gid: int | None
    ca_pem: str = ""

    @classmethod
    def open(cls, mountpoint: str, tool: str | None) -> JailLease:
        path = control_path(mountpoint)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            raise UserError(f"no ClawFS mount daemon answers for {mountpoint} (no control socket at {path}): the "
                            f"jail's egress proxy runs in the daemon of the mount, so mount the store there "
                            f"first (`clawfs mount STORE {mountpoint}`, as uid {os.getuid()}, with this "
                            f"version) and give the mountpoint itself") from None
        except PermissionError:
            conn.close()
            raise UserError(f"the control socket {path} of {mountpoint} is not this uid's: run as the uid that "
                            f"mounted it") from None
        lease = cls(conn, None, None)
        answer = lease._ask({"op": "serve", "tool": tool})
        lease.agent_uid, lease.agent_gid = answer.get("agent_uid"), answer.get("agent_gid")
        lease.ca_pem = str(answer.get("ca_pem") or "")
        return lease

    def _ask(self, msg: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        try:
            send(self.conn, msg, fds)
            answer, _ = receive(self.conn)
        except OSError as e:
            raise UserError(f"the mount daemon's control socket failed: {e}") from None
        if answer is None:
            raise UserError("the mount daemon closed its control socket (was the store unmounted?)")
        if "error" in answer:
            raise UserError(str(answer["error"]))
        return answer

    def hand_over(self, listener: socket.socket, cgroup: dict[str, Any] | None, root_dir: str) -> None:
        """Give the daemon the jail's listening proxy socket (our copy can be closed afterwards)."""
        self._ask({"op": "socket", "cgroup": cgroup, "root_dir": root_dir}, [listener.fileno()])

    def end(self) -> dict[str, int]:
        """The jail has ended: the daemon stops serving it; its counts (allowed, refused)."""
        try:
            answer = self._ask({"op": "end"})
            return {"allowed": int(answer.get("allowed", 0)), "refused": int(answer.get("refused", 0))}
        finally:
            self.conn.close()

    def close(self) -> None:
        self.conn.close()
