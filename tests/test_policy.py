"""Policy is the owner's (clawfs/policy.py, checked in clawfs/router.py), without the kernel: every way in the
issue lists, tried as the agent uid through the router, is refused with EACCES, changes nothing and is audited;
the owner's same calls pass; a third uid gets nothing at all.  Over a real store."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clawfs import policy
from clawfs.control import ControlTree
from clawfs.errors import FsError
from clawfs.keys import Credentials
from clawfs.router import Router
from clawfs.store import ROOT, Store
from clawfs.vfs import RENAME_EXCHANGE, VFS, Ctx

PW = b"policy passphrase"
OWNER_UID = 1234
AGENT_UID = 64010
OWNER = Ctx(uid=OWNER_UID, gid=OWNER_UID)
AGENT = Ctx(uid=AGENT_UID, gid=AGENT_UID, pid=77)
OTHER = Ctx(uid=4321, gid=4321)
LLM = b'[llm]\nbase_url = "https://api.example.test/v1"\n'


class Home:
    """A router over a real store with a small agent home, built by the owner."""

    def __init__(self, fs: Router, store: Store, audit: policy.AuditLog) -> None:
        self.fs, self.store, self.audit = fs, store, audit

    def ino(self, path: str) -> int:
        ino = ROOT
        for part in path.split("/"):
            ino = self.fs.lookup(ino, part.encode(), ctx=OWNER).ino
        return ino

    def write(self, path: str, data: bytes, ctx: Ctx = OWNER) -> None:
        *dirs, name = path.split("/")
        parent = ROOT
        for d in dirs:
            found = self.store.lookup(parent, d.encode())
            parent = found if found is not None else self.fs.mkdir(parent, d.encode(), 0o755, ctx).ino
        existing = self.store.lookup(parent, name.encode())
        if existing is None:
            fh, _ = self.fs.create(parent, name.encode(), 0o644, os.O_WRONLY, ctx)
        else:
            fh = self.fs.open(existing, os.O_WRONLY | os.O_TRUNC, ctx)
        self.fs.write(fh, 0, data)
        self.fs.release(fh)

    def read(self, path: str, ctx: Ctx = OWNER) -> bytes:
        fh = self.fs.open(self.ino(path), os.O_RDONLY, ctx)
        try:
            return self.fs.read(fh, 0, 1 << 20)
        finally:
            self.fs.release(fh)

    def names(self, path: str) -> list[bytes]:
        ino = self.ino(path) if path else ROOT
        return sorted(n for n, _, _ in self.fs.readdir(self.fs.opendir(ino, OWNER), 0) if n not in (b".", b".."))

    def snapshot(self) -> dict[str, Any]:
        """Every name, mode, size and content the policy guards (and the tree around it)."""
        out: dict[str, Any] = {}

        def walk(ino: int, prefix: str) -> None:
            for name, attr, _ in self.fs.readdir(self.fs.opendir(ino, OWNER), 0):
                if name in (b".", b".."):
                    continue
                path = prefix + name.decode()
                out[path] = (attr.mode, attr.size, sorted(self.fs.listxattr(attr.ino)))
                if stat.S_ISDIR(attr.mode):
                    walk(attr.ino, path + "/")
                elif stat.S_ISREG(attr.mode) and "secrets" not in path.split("/"):
                    out[path + "#"] = self.read(path)

        walk(ROOT, "")
        return out

    def refusals(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.text().decode().splitlines()]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    path = str(tmp_path / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store = Store.open(path, Credentials(passphrases=[PW]))
    try:
        tree = ControlTree(None, lambda: {}, OWNER_UID, OWNER_UID)
        audit = policy.AuditLog(store)
        tree.add_generated(b"audit", b"files.jsonl", audit.text)
        fs = Router(VFS(store), tree, policy.Access(OWNER_UID, AGENT_UID), audit)
        h = Home(fs, store, audit)
        h.write("settings/llm.toml", LLM)
        h.write("tools/echo/tool.wasm", b"\0asm-installed")
        h.write("tools/echo/capabilities.json", b'{"http": null}')
        h.write("channels/mail/channel.toml", b"kind = 'mail'\n")
        h.fs.mkdir(h.ino("channels/mail"), b"inbox", 0o755, OWNER)
        h.write("secrets/github_token", b"ghp_secret")
        h.write("users/bob/secrets/key", b"bob-secret")
        h.write("MEMORY.md", b"# memory\n")
        h.write("memory/prepared.toml", b'[llm]\nbase_url = "http://127.0.0.1:9/"\n')
        yield h
    finally:
        store.close()


def errno_of(call: Callable[[], Any]) -> int | None:
    try:
        call()
    except FsError as e:
        return e.errno
    return None


# -- the rule itself -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "expected"), [
    ("settings", True), ("settings/llm.toml", True), ("settings/a/b", True), ("tools", True),
    ("tools/x/tool.wasm", True), (".clawfs/status", True), ("secrets", True), ("secrets/k", True),
    ("users/bob/secrets", True), ("users/bob/secrets/k", True), ("channels/mail/channel.toml", True),
    ("channels/mail", False), ("channels/mail/inbox/new/1", False), ("users/bob", False), ("users", False),
    ("memory/secrets/x", False), ("MEMORY.md", False), ("proposals/tools/x/tool.wasm", False),
    ("proposals/network.toml", False), ("", False), ("memory/settings/llm.toml", False),
])
def test_what_is_policy(path: str, expected: bool) -> None:
    assert policy.is_policy(policy.parts(path.encode())) is expected


# -- the agent: refused by every way in, nothing changes -------------------------------------------------------
def _attempts(h: Home) -> dict[str, Callable[[], Any]]:
    settings, llm, tools = h.ino("settings"), h.ino("settings/llm.toml"), h.ino("tools")
    echo, cap, wasm = h.ino("tools/echo"), h.ino("tools/echo/capabilities.json"), h.ino("tools/echo/tool.wasm")
    memory, prepared = h.ino("memory"), h.ino("memory/prepared.toml")
    ctl = h.ino(".clawfs")
    symlink = h.fs.symlink(memory, b"llm-link", b"../settings/llm.toml", AGENT)  # harmless until written through

    def write_through(ino: int, flags: int) -> Callable[[], Any]:
        return lambda: h.fs.open(ino, flags, AGENT)

    return {
        "append llm.toml": write_through(llm, os.O_WRONLY | os.O_APPEND),
        "overwrite llm.toml": write_through(llm, os.O_RDWR),
        "open llm.toml O_TRUNC": write_through(llm, os.O_RDONLY | os.O_TRUNC),
        "truncate llm.toml": lambda: h.fs.setattr(llm, size=0, ctx=AGENT),
        "unlink llm.toml": lambda: h.fs.unlink(settings, b"llm.toml", AGENT),
        "rename over llm.toml": lambda: h.fs.rename(memory, b"prepared.toml", settings, b"llm.toml", ctx=AGENT),
        "exchange with llm.toml": lambda: h.fs.rename(memory, b"prepared.toml", settings, b"llm.toml",
                                                     RENAME_EXCHANGE, ctx=AGENT),
        "rename llm.toml out": lambda: h.fs.rename(settings, b"llm.toml", memory, b"stolen", ctx=AGENT),
        "rename settings away": lambda: h.fs.rename(ROOT, b"settings", memory, b"old-settings", ctx=AGENT),
        "rmdir tools/echo": lambda: h.fs.rmdir(tools, b"echo", AGENT),
        "create settings/network.toml": lambda: h.fs.create(settings, b"network.toml", 0o644, os.O_WRONLY, AGENT),
        "mkdir tools/evil": lambda: h.fs.mkdir(tools, b"evil", 0o755, AGENT),
        "mknod tools/echo/fifo": lambda: h.fs.mknod(echo, b"fifo", stat.S_IFIFO | 0o644, 0, AGENT),
        "symlink in tools": lambda: h.fs.symlink(echo, b"tool.wasm2", b"/tmp/x", AGENT),
        "overwrite capabilities.json": write_through(cap, os.O_WRONLY),
        "overwrite tool.wasm": write_through(wasm, os.O_WRONLY),
        "hard link llm.toml into memory": lambda: h.fs.link(llm, memory, b"llm-hard", AGENT),
        "hard link a file into tools": lambda: h.fs.link(prepared, echo, b"extra", AGENT),
        "write through a symlink (its target)": write_through(llm, os.O_WRONLY),
        "chmod llm.toml": lambda: h.fs.setattr(llm, mode=0o666, ctx=AGENT),
        "chown llm.toml": lambda: h.fs.setattr(llm, uid=AGENT_UID, ctx=AGENT),
        "utimens llm.toml": lambda: h.fs.setattr(llm, mtime_ns=1, ctx=AGENT),
        "setxattr llm.toml": lambda: h.fs.setxattr(llm, b"user.x", b"1", AGENT),
        "removexattr llm.toml": lambda: h.fs.removexattr(llm, b"user.owner", AGENT),
        "write a secret": write_through(h.ino("secrets/github_token"), os.O_WRONLY),
        "create a secret": lambda: h.fs.create(h.ino("secrets"), b"new", 0o600, os.O_WRONLY, AGENT),
        "create in users/bob/secrets": lambda: h.fs.create(h.ino("users/bob/secrets"), b"k2", 0o600,
                                                           os.O_WRONLY, AGENT),
        "overwrite channel.toml": write_through(h.ino("channels/mail/channel.toml"), os.O_WRONLY),
        "rename a channel away": lambda: h.fs.rename(h.ino("channels"), b"mail", memory, b"mail", ctx=AGENT),
        "create under .clawfs": lambda: h.fs.create(ctl, b"x", 0o644, os.O_WRONLY, AGENT),
        "read .clawfs/audit": lambda: h.fs.opendir(h.ino(".clawfs/audit"), AGENT),
        "open .clawfs/audit/files.jsonl": lambda: h.fs.open(h.ino(".clawfs/audit/files.jsonl"), os.O_RDONLY, AGENT),
        "_symlink": lambda: symlink,
    }


def test_every_way_in_is_refused_for_the_agent_and_changes_nothing(home: Home) -> None:
    home.fs.setxattr(home.ino("settings/llm.toml"), b"user.owner", b"yes", OWNER)
    attempts = _attempts(home)
    attempts.pop("_symlink")()
    before = home.snapshot()
    results = {what: errno_of(call) for what, call in attempts.items()}
    expected = {what: errno.EROFS if what == "create under .clawfs" else errno.EACCES for what in results}
    assert results == expected, "each is refused, by the policy (.clawfs: by the control tree, read-only)"
    assert home.snapshot() == before
    audited = home.refusals()
    assert len(audited) >= len([e for e in results.values() if e == errno.EACCES])
    assert {r["who"] for r in audited} == {"agent"} and {r["uid"] for r in audited} == {AGENT_UID}
    assert any(r["path"] == "/settings/llm.toml" and r["op"] == "truncate" for r in audited)


def test_a_descriptor_opened_before_a_move_under_policy_writes_no_more(home: Home) -> None:
    memory = home.ino("memory")
    fh, _ = home.fs.create(memory, b"tool.wasm", 0o644, os.O_WRONLY, AGENT)
    assert home.fs.write(fh, 0, b"fine while it is the agent's") > 0
    home.fs.rename(memory, b"tool.wasm", home.ino("tools/echo"), b"tool.wasm", ctx=OWNER)  # the owner installs it
    assert errno_of(lambda: home.fs.write(fh, 0, b"evil")) == errno.EACCES
    home.fs.release(fh)
    assert home.read("tools/echo/tool.wasm") == b"fine while it is the agent's"


def test_a_directory_holding_policy_cannot_be_moved_in_or_out(home: Home) -> None:
    home.write("memory/fake/channel.toml", b"kind = 'evil'\n", AGENT)
    assert errno_of(lambda: home.fs.rename(home.ino("memory"), b"fake", home.ino("channels"), b"fake",
                                           ctx=AGENT)) == errno.EACCES
    home.write("memory/u/secrets/k", b"x", AGENT)
    assert errno_of(lambda: home.fs.rename(home.ino("memory"), b"u", home.ino("users"), b"eve",
                                           ctx=AGENT)) == errno.EACCES
    home.fs.mkdir(home.ino("memory"), b"tools", 0o755, AGENT)
    assert errno_of(lambda: home.fs.rename(home.ino("memory"), b"tools", ROOT, b"settings2", ctx=AGENT)) is None
    assert errno_of(lambda: home.fs.rename(ROOT, b"users", home.ino("memory"), b"users", ctx=AGENT)) == errno.EACCES


def test_the_agent_keeps_its_own_reach(home: Home) -> None:
    assert home.read("settings/llm.toml", AGENT) == LLM
    assert home.read("tools/echo/capabilities.json", AGENT) == b'{"http": null}'
    home.write("MEMORY.md", b"# remembered\n", AGENT)
    home.write("memory/2026-12-05.md", b"notes\n", AGENT)
    home.write("daily/today.md", b"d\n", AGENT)
    home.write("channels/mail/inbox/new/1", b"mail\n", AGENT)
    home.write("proposals/tools/weather/tool.wasm", b"\0asm", AGENT)
    home.write("proposals/tools/weather/capabilities.json", b"{}", AGENT)
    home.write("proposals/network.toml", b'allow = ["api.weather.test"]\n', AGENT)
    home.fs.setattr(home.ino("MEMORY.md"), size=3, ctx=AGENT)
    home.fs.setxattr(home.ino("MEMORY.md"), b"user.tag", b"x", AGENT)
    home.fs.rename(home.ino("memory"), b"2026-12-05.md", ROOT, b"moved.md", ctx=AGENT)
    home.fs.unlink(ROOT, b"moved.md", AGENT)
    assert home.read("MEMORY.md") == b"# r"
    assert home.names("proposals/tools/weather") == [b"capabilities.json", b"tool.wasm"]
    assert home.refusals() == []


def test_the_owner_writes_policy(home: Home) -> None:
    home.write("settings/llm.toml", b'[llm]\nbase_url = "http://127.0.0.1:8080/v1"\n', OWNER)
    home.write("tools/new/tool.wasm", b"\0asm", OWNER)
    home.fs.rename(home.ino("tools"), b"new", home.ino("tools"), b"newer", ctx=OWNER)
    home.fs.setattr(home.ino("settings/llm.toml"), mode=0o600, ctx=OWNER)
    assert b"127.0.0.1:8080" in home.read("settings/llm.toml", AGENT)
    assert home.refusals() == []
    assert home.read(".clawfs/audit/files.jsonl") == b""


def test_anyone_else_gets_nothing(home: Home) -> None:
    memory = home.ino("memory")
    for call in (lambda: home.fs.lookup(ROOT, b"MEMORY.md", ctx=OTHER), lambda: home.fs.getattr(memory, OTHER),
                 lambda: home.fs.opendir(ROOT, OTHER), lambda: home.fs.open(home.ino("MEMORY.md"), os.O_RDONLY, OTHER),
                 lambda: home.fs.create(memory, b"x", 0o644, os.O_WRONLY, OTHER),
                 lambda: home.fs.unlink(ROOT, b"MEMORY.md", OTHER), lambda: home.fs.listxattr(memory, OTHER),
                 lambda: home.fs.readlink(memory, OTHER)):
        assert errno_of(call) == errno.EACCES
    assert {r["who"] for r in home.refusals()} == {"other"}


def test_the_kernel_sees_the_owner_and_the_agent_group_only(home: Home) -> None:
    attr = home.fs.getattr(home.ino("MEMORY.md"), OWNER)
    assert (attr.uid, attr.gid, attr.mode & 0o777) == (OWNER_UID, AGENT_UID, 0o660)
    root = home.fs.getattr(ROOT, OWNER)
    assert root.mode & 0o007 == 0, "others cannot even walk into the mount"
    audit = home.fs.getattr(home.ino(".clawfs/audit/files.jsonl"), OWNER)
    assert audit.mode & 0o070 == 0, "the audit is not the agent group's"


def test_the_audit_rotates_by_size(home: Home) -> None:
    memory = home.ino("settings")
    for _ in range(3):
        errno_of(lambda: home.fs.create(memory, b"x" * 200, 0o644, os.O_WRONLY, AGENT))
    first = home.refusals()
    assert len(first) == 3
    lines = policy.AUDIT_MAX // len(json.dumps(first[0]))
    for _ in range(lines + 5):
        errno_of(lambda: home.fs.create(memory, b"x" * 200, 0o644, os.O_WRONLY, AGENT))
    total = len(home.audit.text())
    assert total <= 2 * policy.AUDIT_MAX + 4096
    assert len(home.store.setting(policy.AUDIT_KEY) or []) < lines


def test_a_single_user_mount_refuses_nothing_to_its_owner(tmp_path: Path) -> None:
    path = str(tmp_path / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store = Store.open(path, Credentials(passphrases=[PW]))
    try:
        fs = Router(VFS(store), None, policy.Access(OWNER_UID))
        d = fs.mkdir(ROOT, b"settings", 0o755, OWNER)
        fh, attr = fs.create(d.ino, b"llm.toml", 0o644, os.O_WRONLY, OWNER)
        fs.write(fh, 0, b"x")
        fs.release(fh)
        assert attr.mode & 0o777 == 0o644 and attr.uid == OWNER_UID, "shown as stored"
        assert errno_of(lambda: fs.open(attr.ino, os.O_WRONLY, Ctx(AGENT_UID, AGENT_UID))) == errno.EACCES
    finally:
        store.close()


def test_a_hard_link_is_policy_if_any_of_its_links_is(home: Home) -> None:
    """The owner links an older file of the agent's into settings/: written through either name it is policy (the
    gap this closed: an inode used to be judged by its oldest link alone).  Unlinked from settings/ it is the
    agent's again."""
    memory, settings = home.ino("memory"), home.ino("settings")
    home.write("memory/shared.toml", b"from the agent\n", AGENT)
    shared = home.ino("memory/shared.toml")
    home.fs.link(shared, settings, b"shared.toml", OWNER)
    for call in (lambda: home.fs.open(shared, os.O_WRONLY, AGENT), lambda: home.fs.setattr(shared, size=0, ctx=AGENT),
                 lambda: home.fs.setxattr(shared, b"user.x", b"1", AGENT),
                 lambda: home.fs.link(shared, memory, b"another", AGENT)):
        assert errno_of(call) == errno.EACCES
    assert home.read("memory/shared.toml", AGENT) == b"from the agent\n"
    assert {r["path"] for r in home.refusals()} == {"/settings/shared.toml"}, "the policy name is the one logged"
    fh = home.fs.open(home.ino("MEMORY.md"), os.O_WRONLY, AGENT)  # its own files stay its own
    home.fs.release(fh)
    home.fs.unlink(settings, b"shared.toml", OWNER)
    home.write("memory/shared.toml", b"the agent's again\n", AGENT)
    assert home.read("memory/shared.toml") == b"the agent's again\n"


def test_a_write_handle_opened_before_the_owner_links_the_file_into_policy(home: Home) -> None:
    home.write("memory/later.toml", b"x", AGENT)
    later = home.ino("memory/later.toml")
    fh = home.fs.open(later, os.O_WRONLY, AGENT)
    home.fs.link(later, home.ino("tools/echo"), b"later.toml", OWNER)
    assert errno_of(lambda: home.fs.write(fh, 0, b"evil")) == errno.EACCES
    home.fs.release(fh)
    assert home.read("tools/echo/later.toml") == b"x"
