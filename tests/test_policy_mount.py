"""Policy is the owner's, on a real mount made with `-o agent_uid=N` (so allow_other): the agent uid's every way
in at policy fails and changes nothing, while it still reads settings and writes its memory; a third uid can
neither list, stat nor read anything, even entries the kernel has cached; the owner's writes pass.  Processes run
as the other uids through `setpriv` (util-linux) with the system python3 and the standard library only."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import StoreFixture, is_mounted

AGENT_UID = 64010
THIRD_UID = 64011
PYTHON = "/usr/bin/python3"
LLM = b'[llm]\nbase_url = "https://api.example.test/v1"\n'

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs processes as other uids (setpriv): needs root, as CI"),
    pytest.mark.skipif(shutil.which("setpriv") is None or not os.path.exists(PYTHON),
                       reason="needs util-linux setpriv and /usr/bin/python3 to act as another uid"),
]

# Run as the agent: each attempt -> "ok" or the errno's name.  Paths are relative to the mount (the cwd).
AGENT_BATTERY = r'''
import errno, json, os, sys
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)
def write_existing(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
attempt("append llm.toml", lambda: write("settings/llm.toml", b"evil", "ab"))
attempt("overwrite llm.toml", lambda: write_existing("settings/llm.toml", b"evil"))
attempt("truncate llm.toml", lambda: os.truncate("settings/llm.toml", 0))
attempt("unlink llm.toml", lambda: os.unlink("settings/llm.toml"))
attempt("rename a prepared file over llm.toml", lambda: os.rename("memory/prepared.toml", "settings/llm.toml"))
attempt("rename settings away", lambda: os.rename("settings", "memory/old-settings"))
attempt("create settings/network.toml", lambda: write("settings/network.toml", b"allow = ['*']"))
attempt("mkdir tools/evil", lambda: os.mkdir("tools/evil"))
attempt("create tools/evil/tool.wasm", lambda: write("tools/evil/tool.wasm", b"\0asm"))
attempt("create tools/evil/capabilities.json", lambda: write("tools/evil/capabilities.json", b"{}"))
attempt("overwrite capabilities.json", lambda: write_existing("tools/echo/capabilities.json", b"{}"))
attempt("overwrite tool.wasm", lambda: write_existing("tools/echo/tool.wasm", b"\0evil"))
attempt("hard link llm.toml", lambda: os.link("settings/llm.toml", "memory/llm-hard"))
attempt("write through the hard link", lambda: write_existing("memory/llm-hard", b"evil"))
attempt("symlink llm.toml", lambda: os.symlink("../settings/llm.toml", "memory/llm-sym"))
attempt("write through the symlink", lambda: write_existing("memory/llm-sym", b"evil"))
attempt("chmod llm.toml", lambda: os.chmod("settings/llm.toml", 0o666))
attempt("setxattr llm.toml", lambda: os.setxattr("settings/llm.toml", "user.evil", b"1"))
attempt("write under .clawfs", lambda: write(".clawfs/evil", b"x"))
attempt("list .clawfs/audit", lambda: os.listdir(".clawfs/audit"))
attempt("read .clawfs/audit/files.jsonl", lambda: open(".clawfs/audit/files.jsonl", "rb").read())
attempt("overwrite a secret's neighbour", lambda: write("secrets/new_token", b"x"))
attempt("rename a channel away", lambda: os.rename("channels/mail", "memory/mail"))
# what the agent keeps
attempt("read llm.toml", lambda: out.__setitem__("llm.toml", open("settings/llm.toml").read()))
attempt("write memory/", lambda: write("memory/note.md", b"remembered\n"))
attempt("write MEMORY.md", lambda: write("MEMORY.md", b"# the agent's memory\n"))
attempt("write a channel inbox", lambda: write("channels/mail/inbox/1", b"mail\n"))
attempt("propose a tool", lambda: (os.makedirs("proposals/tools/weather"),
                                  write("proposals/tools/weather/capabilities.json", b"{}")))
print(json.dumps(out))
'''

THIRD_BATTERY = r'''
import errno, json, os
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
mnt = os.environ["MNT"]
attempt("list the root", lambda: os.listdir(mnt))
attempt("stat MEMORY.md (cached)", lambda: os.stat(mnt + "/MEMORY.md"))
attempt("read MEMORY.md", lambda: open(mnt + "/MEMORY.md", "rb").read())
attempt("read llm.toml", lambda: open(mnt + "/settings/llm.toml", "rb").read())
attempt("list memory/", lambda: os.listdir(mnt + "/memory"))
attempt("write memory/x", lambda: open(mnt + "/memory/x", "wb").write(b"x"))
attempt("list .clawfs", lambda: os.listdir(mnt + "/.clawfs"))
print(json.dumps(out))
'''

AGENT_KEEPS = ("read llm.toml", "write memory/", "write MEMORY.md", "write a channel inbox", "propose a tool",
               "symlink llm.toml")


def as_uid(uid: int, script: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    proc = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", PYTHON, "-c", script],
                          cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def snapshot(mnt: Path) -> dict[str, object]:
    """Everything under the policy places (names, modes, owners, xattrs, contents) as the owner sees it."""
    out: dict[str, object] = {}
    for top in ("settings", "tools", "channels", "secrets"):
        for root, dirs, files in os.walk(mnt / top):
            for name in sorted(dirs + files):
                p = Path(root) / name
                st = p.lstat()
                rel = str(p.relative_to(mnt))
                out[rel] = (st.st_mode, st.st_uid, st.st_size, sorted(os.listxattr(p, follow_symlinks=False)))
                if p.is_file() and "secrets" not in rel and "inbox" not in rel:
                    out[rel + "#"] = hashlib.sha256(p.read_bytes()).hexdigest()
    out[".clawfs"] = sorted(os.listdir(mnt / ".clawfs"))
    return out


@pytest.fixture
def agent_mount(store: StoreFixture) -> Iterator[tuple[StoreFixture, Path]]:
    """A mount with agent_uid, on a mountpoint the other uids can reach (the test's tmp_path is root's 0700)."""
    top = Path(tempfile.mkdtemp(prefix="clawfs-policy-", dir="/tmp"))
    top.chmod(0o711)
    mnt = top / "mnt"
    store.mount(mnt, f"agent_uid={AGENT_UID}")
    try:
        for d in ("settings", "tools/echo", "channels/mail/inbox", "secrets", "memory"):
            (mnt / d).mkdir(parents=True)
        (mnt / "settings/llm.toml").write_bytes(LLM)
        (mnt / "tools/echo/tool.wasm").write_bytes(b"\0asm-installed")
        (mnt / "tools/echo/capabilities.json").write_bytes(b'{"http": null}')
        (mnt / "channels/mail/channel.toml").write_bytes(b"kind = 'mail'\n")
        (mnt / "secrets/github_token").write_bytes(b"ghp_secret")
        (mnt / "MEMORY.md").write_bytes(b"# memory\n")
        (mnt / "memory/prepared.toml").write_bytes(b'[llm]\nbase_url = "http://127.0.0.1:9/"\n')
        yield store, mnt
    finally:
        if is_mounted(mnt):
            store.umount(mnt)
        shutil.rmtree(top, ignore_errors=True)
    store.assert_clean()


def test_the_agent_cannot_touch_policy_and_keeps_its_own_reach(agent_mount: tuple[StoreFixture, Path]) -> None:
    _, mnt = agent_mount
    before = snapshot(mnt)
    out = as_uid(AGENT_UID, AGENT_BATTERY, mnt)
    llm = out.pop("llm.toml", None)
    refused = {k: v for k, v in out.items() if k not in AGENT_KEEPS}
    escapes = {k: v for k, v in refused.items() if v not in ("EACCES", "EPERM", "EROFS", "ENOENT")}
    assert not escapes, f"escapes: {escapes}"
    # ENOENT only where an earlier refusal left nothing to act on (the link and the tools/evil/ folder)
    assert {k for k, v in refused.items() if v == "ENOENT"} <= {
        "write through the hard link", "create tools/evil/tool.wasm", "create tools/evil/capabilities.json"}
    assert {k: out[k] for k in AGENT_KEEPS} == dict.fromkeys(AGENT_KEEPS, "ok")
    assert llm == LLM.decode()
    after = snapshot(mnt)
    after.pop("channels/mail/inbox/1", None)
    assert after == before, "a refused attempt changed something"
    assert (mnt / "MEMORY.md").read_bytes() == b"# the agent's memory\n"
    assert (mnt / "memory/note.md").read_bytes() == b"remembered\n"
    assert (mnt / "proposals/tools/weather/capabilities.json").exists()
    # refusals the daemon saw are in the audit, for the owner
    audit = [json.loads(line) for line in (mnt / ".clawfs/audit/files.jsonl").read_text().splitlines()]
    assert audit and {r["uid"] for r in audit} == {AGENT_UID}
    assert {"truncate", "unlink", "rename", "create"} <= {r["op"] for r in audit}
    assert any(r["path"] == "/settings/llm.toml" for r in audit)


def test_a_third_uid_reaches_nothing(agent_mount: tuple[StoreFixture, Path]) -> None:
    _, mnt = agent_mount
    os.stat(mnt / "MEMORY.md")  # the owner looks first: the kernel now holds the entry and its attributes
    os.listdir(mnt / "memory")
    out = as_uid(THIRD_UID, THIRD_BATTERY, Path("/"), {"MNT": str(mnt)})
    assert out == dict.fromkeys(out, "EACCES") and len(out) == 7, out
    assert not (mnt / "memory/x").exists()


def test_the_owners_edit_is_the_approval(agent_mount: tuple[StoreFixture, Path]) -> None:
    _, mnt = agent_mount
    (mnt / "settings/llm.toml").write_bytes(b'[llm]\nbase_url = "http://127.0.0.1:8080/v1"\n')
    (mnt / "tools/new").mkdir()
    (mnt / "tools/new/tool.wasm").write_bytes(b"\0asm")
    os.chmod(mnt / "settings/llm.toml", 0o640)
    os.setxattr(mnt / "settings/llm.toml", "user.approved", b"yes")
    out = as_uid(AGENT_UID, "print(__import__('json').dumps({'llm': open('settings/llm.toml').read()}))", mnt)
    assert "127.0.0.1:8080" in out["llm"]
    st = (mnt / "MEMORY.md").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o007) == (0, AGENT_UID, 0), "owner's, agent's group, others none"
    assert (mnt / ".clawfs/audit/files.jsonl").read_bytes() == b""
