"""`make demo`: create an encrypted agent home from the embedded sample, mount it, look around, unmount.

Runs the real commands a user would type and prints each one before its output, like a terminal session.
Everything lives under ./demo (the store, its passphrase and recovery key, the mountpoint).  A store an earlier
run left there is moved aside to ./demo.<time>, never replaced.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sandbox import jail

SAMPLE = Path(__file__).with_name("demo_home")
CLAWFS = str(Path(sys.executable).with_name("clawfs"))
LLM_SERVER = Path(__file__).parent.parent / "tests" / "llm_server.py"  # the scripted stand-in LLM


def sh(*args: str, check: bool = True, show: str | None = None) -> subprocess.CompletedProcess[str]:
    print(f"\n\033[1m$ {show or shlex.join(args)}\033[0m", flush=True)
    proc = subprocess.run(args, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if check and proc.returncode:
        raise SystemExit(f"demo: `{shlex.join(args)}` failed with exit code {proc.returncode}")
    return proc


def wait_for_index(mnt: Path, timeout: float = 120.0) -> None:
    """Indexing runs in the background (the first file also loads the model); wait until nothing is pending."""
    print("\n# waiting for the background indexer (.clawfs/status) ...", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads((mnt / ".clawfs" / "status").read_text())
        if status["pending"] == 0 and status["files"]:
            print(f"# indexed: {status['files']} files, {status['chunks']} chunks, embedder {status['embedder']}")
            return
        time.sleep(0.5)
    raise SystemExit("demo: the index did not catch up in time; see the mount log")


def chat_with_agent(mnt: Path, root: Path) -> None:
    """The agent runtime on the mounted home, talking to the scripted stand-in LLM (no model is reachable
    offline), and `clawfs chat` delivering messages into its Maildir inbox."""
    print("\n# the agent lives in the home: `clawfs agent init` adds what is missing (never overwrites)")
    sh(CLAWFS, "agent", "init", str(mnt), show="clawfs agent init demo/mnt")
    print("\n# NOTE: no LLM is reachable offline, so this demo runs a SCRIPTED STAND-IN for an OpenAI-compatible "
          "server\n# (tests/llm_server.py: fixed rules, no model). Point settings/llm.toml at OpenAI, vLLM, "
          "llama.cpp or Ollama for a real one.")
    server = subprocess.Popen([sys.executable, str(LLM_SERVER)], stdout=subprocess.PIPE, text=True)
    agent = None
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        (mnt / "settings" / "llm.toml").write_text(f'[llm]\nbase_url = "{base_url}"\nmodel = "scripted-stand-in"\n')
        sh("cat", str(mnt / "settings" / "llm.toml"), show="cat demo/mnt/settings/llm.toml")
        print("\n# clawfs agent run demo/mnt   (in the background; its log goes to demo/agent.log)")
        with open(root / "agent.log", "wb") as log:
            agent = subprocess.Popen([CLAWFS, "agent", "run", str(mnt)], stdout=log, stderr=log)
        for message in ("when is the analytical engine grant due?", "remember that Ada prefers tea to coffee"):
            sh(CLAWFS, "chat", str(mnt), message, "--timeout", "120",
               show=f"clawfs chat demo/mnt {shlex.quote(message)}")
        sh("tail", "-n", "2", str(mnt / "MEMORY.md"), show="tail -n 2 demo/mnt/MEMORY.md")
        sh("ls", str(mnt / "channels" / "local" / "outbox" / "cur"), show="ls demo/mnt/channels/local/outbox/cur")
        sh(CLAWFS, "agent", "status", str(mnt), show="clawfs agent status demo/mnt")
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)  # finishes the current turn, exits 0
            agent.wait(timeout=60)
        server.terminate()
        server.wait(timeout=30)


def clear_previous(root: Path) -> Path | None:
    """Make room for a new demo at `root`.  A store an earlier run made (and told the user to mount again) is
    never deleted: the whole folder is moved aside to `<root>.<time>` and that is said; returns where."""
    mnt = root / "mnt"
    if mnt.exists() and subprocess.run(["mountpoint", "-q", str(mnt)]).returncode == 0:
        subprocess.run([CLAWFS, "umount", str(mnt)])
    if not (root / "agent.claw").exists():
        shutil.rmtree(root, ignore_errors=True)  # nothing of value: at most a half-made run
        return None
    aside = root.with_name(f"{root.name}.{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = root.with_name(f"{root.name}.{time.strftime('%Y%m%d-%H%M%S')}.{n}")
    root.rename(aside)
    print(f"# the previous demo store was moved aside, not replaced: {aside.name}/agent.claw (its passphrase "
          f"and recovery key beside it); delete {aside.name}/ when you no longer need it", flush=True)
    return aside


def main() -> None:
    root = Path("demo").resolve()
    store, mnt, pw = root / "agent.claw", root / "mnt", root / "passphrase"
    clear_previous(root)
    mnt.mkdir(parents=True)
    pw.write_text("demo passphrase, use a real one\n")
    pw.chmod(0o600)
    c = "clawfs"
    sh(CLAWFS, "mkfs", str(store), "--passphrase-file", str(pw), "--recovery-key-file", str(root / "recovery.key"),
       show=f"{c} mkfs demo/agent.claw --passphrase-file demo/passphrase --recovery-key-file demo/recovery.key")
    # agent_uid: the uid the jailed agent runtime runs as (`clawfs agent run` below); allow_other lets it in, and
    # the policy keeps every third uid out
    opts = f"passphrase_file={pw},allow_other,agent_uid={jail.JAIL_UID}"
    sh(CLAWFS, "mount", str(store), str(mnt), "-o", opts,
       show=f"{c} mount demo/agent.claw demo/mnt -o passphrase_file=demo/passphrase,allow_other,"
            f"agent_uid={jail.JAIL_UID}")
    try:
        sh("cp", "-r", f"{SAMPLE}/.", str(mnt), show="cp -r <sample agent home>/. demo/mnt")
        sh("ls", "-la", str(mnt), show="ls -la demo/mnt")
        sh("cat", str(mnt / "IDENTITY.md"), show="cat demo/mnt/IDENTITY.md")
        sh("grep", "-rn", "deadline", str(mnt), show="grep -rn deadline demo/mnt")
        sh("df", "-h", str(mnt), show="df -h demo/mnt")
        print("\n# grep finds words; the index finds meaning (no file says 'when is the grant due'):")
        sh("grep", "-rli", "when is the grant due", str(mnt), check=False,
           show="grep -rli 'when is the grant due' demo/mnt")
        wait_for_index(mnt)
        sh(CLAWFS, "search", "when is the grant due", "--mount", str(mnt), "-k", "3",
           show=f"{c} search 'when is the grant due' --mount demo/mnt -k 3")
        query = "what did we decide about the deadline"
        sh("ls", str(mnt / ".clawfs" / "search" / query), show=f"ls 'demo/mnt/.clawfs/search/{query}'")
        print("\n# and the files closest in meaning to a file:")
        near = "memory/projects/analytical-engine-grant.md"
        sh("ls", str(mnt / ".clawfs" / "similar" / near), show=f"ls demo/mnt/.clawfs/similar/{near}")
        print("\n# secrets are write-only: the agent's tools get them by injection, nobody reads them back")
        (mnt / "secrets").mkdir()
        sh("sh", "-c", f"echo sk-demo-not-a-real-key > {mnt}/secrets/openai_api_key",
           show="echo sk-demo-not-a-real-key > demo/mnt/secrets/openai_api_key")
        sh("ls", "-l", str(mnt / "secrets"), show="ls -l demo/mnt/secrets")
        sh("cat", str(mnt / "secrets" / "openai_api_key"), check=False, show="cat demo/mnt/secrets/openai_api_key")
        chat_with_agent(mnt, root)
        print("\n# on disk there is only ciphertext: the same grep finds nothing in the store file")
        sh("grep", "-c", "deadline", str(store), str(store) + "-wal", check=False,
           show="grep -c deadline demo/agent.claw demo/agent.claw-wal")
    finally:
        sh(CLAWFS, "umount", str(mnt), show=f"{c} umount demo/mnt")
    sh(CLAWFS, "fsck", str(store), "--passphrase-file", str(pw),
       show=f"{c} fsck demo/agent.claw --passphrase-file demo/passphrase")
    sh(CLAWFS, "info", str(store), show=f"{c} info demo/agent.claw")
    print("\nThe store is demo/agent.claw; mount it again with the command above (passphrase in demo/passphrase).")


if __name__ == "__main__":
    main()
