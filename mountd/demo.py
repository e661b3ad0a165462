"""`make demo`: create an encrypted agent home from the embedded sample, mount it, look around, unmount.

Runs the real commands a user would type and prints each one before its output, like a terminal session.
Everything lives under ./demo (the store, its passphrase and recovery key, the mountpoint).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).with_name("demo_home")
CLAWFS = str(Path(sys.executable).with_name("clawfs"))


def sh(*args: str, check: bool = True, show: str | None = None) -> subprocess.CompletedProcess[str]:
    print(f"\n\033[1m$ {show or shlex.join(args)}\033[0m", flush=True)
    proc = subprocess.run(args, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if check and proc.returncode:
        raise SystemExit(f"demo: `{shlex.join(args)}` failed with exit code {proc.returncode}")
    return proc


def main() -> None:
    root = Path("demo").resolve()
    store, mnt, pw = root / "agent.claw", root / "mnt", root / "passphrase"
    if mnt.exists() and subprocess.run(["mountpoint", "-q", str(mnt)]).returncode == 0:
        subprocess.run([CLAWFS, "umount", str(mnt)])
    shutil.rmtree(root, ignore_errors=True)
    mnt.mkdir(parents=True)
    pw.write_text("demo passphrase, use a real one\n")
    pw.chmod(0o600)
    c = "clawfs"
    sh(CLAWFS, "mkfs", str(store), "--passphrase-file", str(pw), "--recovery-key-file", str(root / "recovery.key"),
       show=f"{c} mkfs demo/agent.claw --passphrase-file demo/passphrase --recovery-key-file demo/recovery.key")
    sh(CLAWFS, "mount", str(store), str(mnt), "-o", f"passphrase_file={pw}",
       show=f"{c} mount demo/agent.claw demo/mnt -o passphrase_file=demo/passphrase")
    try:
        sh("cp", "-r", f"{SAMPLE}/.", str(mnt), show="cp -r <sample agent home>/. demo/mnt")
        sh("ls", "-la", str(mnt), show="ls -la demo/mnt")
        sh("cat", str(mnt / "IDENTITY.md"), show="cat demo/mnt/IDENTITY.md")
        sh("grep", "-rn", "deadline", str(mnt), show="grep -rn deadline demo/mnt")
        sh("df", "-h", str(mnt), show="df -h demo/mnt")
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
