"""A real mount driven by the ordinary tools people use on it: cp, cat, grep, ls, mv, ln, tar, rsync, du, df,
setfattr/getfattr and stat, run as subprocesses.

Round trips go plain directory -> mount -> plain directory and compare a manifest of the trees: the sha256 of
every file, modes, owners, mtimes, symlink targets and which names are hard links of each other.  Every test
runs on the `mounted` fixture, so it also ends with `clawfs fsck` reporting the store clean.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import StoreFixture

pytestmark = pytest.mark.fuse

KiB, MiB = 1024, 1024 * 1024
LONG_ASCII = "L" * 255
LONG_UTF8 = "é" * 127 + "z"  # 255 bytes
BASE_NS = 1_600_000_000_123_456_789  # a fixed mtime with a nanosecond part


# -- helpers ----------------------------------------------------------------------------------------------------
def sh(*args: str | Path, cwd: Path | None = None, input: bytes | None = None,
       ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[bytes]:
    """Run a tool; an exit code outside `ok` fails the test with its output."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, input=input, capture_output=True, timeout=120,
                          env={**os.environ, "LC_ALL": "C"})  # messages are matched in English
    assert proc.returncode in ok, (f"{' '.join(map(str, args))} exited {proc.returncode}:\n"
                                   f"{proc.stderr.decode(errors='replace')}")
    return proc


def out(*args: str | Path, cwd: Path | None = None) -> str:
    return sh(*args, cwd=cwd).stdout.decode()


def remount(store: StoreFixture, mnt: Path) -> None:
    store.umount(mnt)
    store.mount(mnt)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    kind: str  # "file", "dir", "link", "fifo"
    mode: int
    uid: int
    gid: int
    size: int
    content: str  # sha256 of a file, target of a symlink, "" otherwise
    mtime_ns: int
    nlink: int


def manifest(root: Path, *, dir_times: bool = True) -> dict[str, Entry]:
    """Everything below `root` (not root itself), keyed by relative path; mtimes in nanoseconds (cp -a, tar's
    pax format and rsync all keep them).  With dir_times=False a directory's mtime is left out."""
    result: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                kind, content = "file", sha256(p)
            elif stat.S_ISDIR(st.st_mode):
                kind, content = "dir", ""
            elif stat.S_ISLNK(st.st_mode):
                kind, content = "link", os.readlink(p)
            elif stat.S_ISFIFO(st.st_mode):
                kind, content = "fifo", ""
            else:
                kind, content = f"other-{stat.S_IFMT(st.st_mode):o}", ""
            mt = st.st_mtime_ns
            if kind == "dir" and not dir_times:
                mt = 0
            size = st.st_size if kind != "dir" else 0  # a directory's size is filesystem-specific
            result[str(p.relative_to(root))] = Entry(kind, st.st_mode, st.st_uid, st.st_gid, size, content, mt,
                                                     st.st_nlink)
    return result


def hardlink_groups(root: Path) -> set[frozenset[str]]:
    """Sets of relative paths that are names of one (multiply linked) inode."""
    by_ino: dict[int, set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                by_ino.setdefault(st.st_ino, set()).add(str(p.relative_to(root)))
    return {frozenset(v) for v in by_ino.values()}


def inode_map(root: Path) -> dict[str, int]:
    return {str(Path(d, n).relative_to(root)): os.lstat(Path(d, n)).st_ino
            for d, dirs, files in os.walk(root) for n in dirs + files}


def assert_same_tree(a: dict[str, Entry], b: dict[str, Entry]) -> None:
    assert sorted(a) == sorted(b), f"names differ: only in first {sorted(set(a) - set(b))}, " \
                                   f"only in second {sorted(set(b) - set(a))}"
    diffs = [f"{k}:\n  {a[k]}\n  {b[k]}" for k in sorted(a) if a[k] != b[k]]
    assert not diffs, f"{len(diffs)} entries differ:\n" + "\n".join(diffs[:20])


def build_tree(root: Path, seed: int = 1234) -> None:
    """A tree with nested dirs, symlinks, hard links, binary files of awkward sizes, odd names, modes, owners
    and mtimes with nanoseconds."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    nested = root / "a" / "b" / "c" / "d"
    nested.mkdir(parents=True)
    (root / "empty dir").mkdir()
    (root / "ünïcødé dir ✓").mkdir()
    sizes = {"zero": 0, "one": 1, "exact64k": 64 * KiB, "64k-plus-1": 64 * KiB + 1, "4095": 4095,
             "4097": 4097, "mib-plus-123": MiB + 123, "two-blocks-minus-1": 128 * KiB - 1}
    for name, size in sizes.items():
        (root / f"{name}.bin").write_bytes(rng.randbytes(size))
    (nested / "deep.txt").write_text("the needle is deep down here\n")
    (nested / "deep.bin").write_bytes(rng.randbytes(200_000))
    (root / "a" / "with space.txt").write_bytes(b"spaces in the name\n")
    (root / "ünïcødé dir ✓" / "日本語のファイル.txt").write_bytes("こんにちは\n".encode())
    (root / LONG_ASCII).write_bytes(b"255-byte name\n")
    (root / "a" / LONG_UTF8).write_bytes(rng.randbytes(3000))
    (root / "newline\nin name").write_bytes(b"nl\n")
    (root / "sparse.img").write_bytes(b"")
    with open(root / "sparse.img", "r+b") as f:
        f.seek(3 * MiB)
        f.write(b"end of a sparse file")
    # modes and owners
    os.chmod(root / "one.bin", 0o600)
    os.chmod(root / "4095.bin", 0o755)
    os.chmod(root / "zero.bin", 0o444)
    os.chown(root / "4097.bin", 1000, 1000)  # chown first: it clears set-user-ID
    os.chmod(root / "4097.bin", 0o4750)
    os.chown(root / "a" / "with space.txt", 4242, 100)
    os.chmod(root / "a" / "b", 0o750)
    # symlinks: relative, to a directory, absolute-looking, dangling, unicode
    os.symlink("../../../../exact64k.bin", nested / "up.bin")
    os.symlink("a/b", root / "dirlink")
    os.symlink("/nonexistent/absolute/target", root / "abs-dangling")
    os.symlink("ünïcødé dir ✓/日本語のファイル.txt", root / "unicode-link")
    # hard links, including across directories
    os.link(root / "mib-plus-123.bin", root / "a" / "hard-of-mib")
    os.link(root / "mib-plus-123.bin", nested / "another hard link")
    os.link(root / "one.bin", root / "ünïcødé dir ✓" / "one-again")
    os.mkfifo(root / "a" / "fifo")
    # mtimes, deepest first so directory times stick
    entries = sorted((Path(d, n) for d, dirs, files in os.walk(root) for n in dirs + files),
                     key=lambda p: -len(p.parts))
    for i, p in enumerate(entries):
        ns = BASE_NS + i * 1_000_000_007
        os.utime(p, ns=(ns, ns), follow_symlinks=False)


# -- cp, cat, grep, ls ------------------------------------------------------------------------------------------
def test_cp_and_cat(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    src = mnt.parent / "plain"
    build_tree(src)
    data = (src / "mib-plus-123.bin").read_bytes()
    sh("cp", src / "mib-plus-123.bin", mnt / "copy.bin")
    assert sh("cat", mnt / "copy.bin").stdout == data
    sh("cmp", src / "mib-plus-123.bin", mnt / "copy.bin")
    # cat concatenates, and writes through a shell redirection
    (mnt / "x").write_bytes(b"first\n")
    (mnt / "y").write_bytes(b"second\n")
    assert sh("cat", mnt / "x", mnt / "y").stdout == b"first\nsecond\n"
    sh("sh", "-c", 'cat > "$1"', "sh", mnt / "from-stdin", input=data[:100_000])
    assert (mnt / "from-stdin").read_bytes() == data[:100_000]
    sh("sh", "-c", 'cat "$1" >> "$2"', "sh", mnt / "y", mnt / "x")
    assert (mnt / "x").read_bytes() == b"first\nsecond\n"
    assert sh("cat", mnt / "missing", ok=(1,)).stderr.endswith(b"No such file or directory\n")
    # cp -a keeps the whole tree: modes, owners, ns mtimes, symlinks, hard links, fifos
    sh("cp", "-a", src, mnt / "tree")
    want = manifest(src)
    assert_same_tree(want, manifest(mnt / "tree"))
    assert hardlink_groups(mnt / "tree") == hardlink_groups(src)
    sh("cp", "-a", mnt / "tree", mnt.parent / "back")
    assert_same_tree(want, manifest(mnt.parent / "back"))
    remount(store, mnt)
    assert_same_tree(want, manifest(mnt / "tree"))


def test_grep_recursive(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    deep = mnt / "one" / "two" / "three"
    deep.mkdir(parents=True)
    (deep / "notes.txt").write_text("alpha\nthe marmalade word is here\nomega\n")
    (mnt / "one" / "other.txt").write_text("nothing to see\n")
    (mnt / "one" / "two" / "blob.bin").write_bytes(os.urandom(70_000).replace(b"marmalade", b"x"))
    found = sh("grep", "-rn", "marmalade", ".", cwd=mnt)
    assert found.stdout == b"./one/two/three/notes.txt:2:the marmalade word is here\n"
    assert sh("grep", "-rl", "marmalade", mnt).stdout.decode().splitlines() == [str(deep / "notes.txt")]
    assert sh("grep", "-rc", "nothing", "one/other.txt", cwd=mnt).stdout == b"1\n"
    missing = sh("grep", "-r", "no-such-word-anywhere", mnt, ok=(1,))
    assert missing.stdout == b""
    assert sh("grep", "-r", "marmalade", mnt / "nowhere", ok=(2,)).returncode == 2


def test_ls_long_listing(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    (mnt / "dir" / "sub1").mkdir(parents=True)
    (mnt / "dir" / "sub2").mkdir()
    (mnt / "file").write_bytes(b"x" * 12345)
    os.chmod(mnt / "file", 0o640)
    os.link(mnt / "file", mnt / "hard")
    os.symlink("file", mnt / "sym")
    (mnt / "exec").write_bytes(b"")
    os.chmod(mnt / "exec", 0o755)
    os.chown(mnt / "exec", 1001, 2002)
    lines = out("ls", "-ln", "--time-style=+%s", mnt).splitlines()
    assert lines[0].startswith("total ")
    rows = {}
    for line in lines[1:]:
        mode, links, uid, gid, size, _mtime, rest = line.split(None, 6)
        rows[rest] = (mode, int(links), int(uid), int(gid), int(size))
    assert rows == {
        "dir": ("drwxr-xr-x", 4, 0, 0, rows["dir"][4]),
        "exec": ("-rwxr-xr-x", 1, 1001, 2002, 0),
        "file": ("-rw-r-----", 2, 0, 0, 12345),
        "hard": ("-rw-r-----", 2, 0, 0, 12345),
        "sym -> file": ("lrwxrwxrwx", 1, 0, 0, 4),
    }
    # -i shows one inode number for both hard links; -d shows the directory itself
    inos = dict(reversed(line.split(None, 1)) for line in out("ls", "-1i", mnt).splitlines())
    assert inos["file"] == inos["hard"] != inos["exec"]
    assert out("ls", "-ld", mnt / "dir").startswith("drwxr-xr-x 4 ")
    assert out("ls", "-A", mnt / "dir").split() == ["sub1", "sub2"]


# -- mv and ln --------------------------------------------------------------------------------------------------
def test_mv_files_and_directories(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    for d in ("src", "dst", "src/tree/inner"):
        (mnt / d).mkdir(parents=True)
    (mnt / "src" / "f.txt").write_text("moving file\n")
    (mnt / "src" / "tree" / "inner" / "g.txt").write_text("moving dir\n")
    (mnt / "dst" / "existing.txt").write_text("to be replaced\n")
    ino_f = os.stat(mnt / "src" / "f.txt").st_ino
    sh("mv", mnt / "src" / "f.txt", mnt / "dst" / "f-renamed.txt")
    sh("mv", mnt / "src" / "tree", mnt / "dst")
    assert os.listdir(mnt / "src") == []
    assert (mnt / "dst" / "f-renamed.txt").read_text() == "moving file\n"
    assert os.stat(mnt / "dst" / "f-renamed.txt").st_ino == ino_f, "mv within a filesystem is a rename"
    assert (mnt / "dst" / "tree" / "inner" / "g.txt").read_text() == "moving dir\n"
    assert os.stat(mnt / "src").st_nlink == 2 and os.stat(mnt / "dst").st_nlink == 3
    sh("mv", "-f", mnt / "dst" / "f-renamed.txt", mnt / "dst" / "existing.txt")
    assert (mnt / "dst" / "existing.txt").read_text() == "moving file\n"
    # mv in from and out to another filesystem (copy + delete)
    outside = mnt.parent / "outside"
    outside.mkdir()
    (outside / "incoming").mkdir()
    (outside / "incoming" / "h.bin").write_bytes(b"\x00\xff" * 40_000)
    sh("mv", outside / "incoming", mnt / "src")
    assert not (outside / "incoming").exists()
    assert (mnt / "src" / "incoming" / "h.bin").read_bytes() == b"\x00\xff" * 40_000
    sh("mv", mnt / "dst" / "tree", outside)
    assert not (mnt / "dst" / "tree").exists()
    assert (outside / "tree" / "inner" / "g.txt").read_text() == "moving dir\n"
    # mv a directory into itself fails
    bad = sh("mv", mnt / "src", mnt / "src" / "incoming", ok=(1,))
    assert b"subdirectory of itself" in bad.stderr
    remount(store, mnt)
    assert sorted(os.listdir(mnt / "dst")) == ["existing.txt"]
    assert (mnt / "src" / "incoming" / "h.bin").read_bytes() == b"\x00\xff" * 40_000


def test_ln_hard_and_symbolic(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "d").mkdir()
    (mnt / "orig").write_text("original\n")
    sh("ln", mnt / "orig", mnt / "d" / "hard")
    st = os.stat(mnt / "orig")
    assert st.st_nlink == 2
    assert os.stat(mnt / "d" / "hard").st_ino == st.st_ino
    sh("ln", "-s", "../orig", mnt / "d" / "soft")
    sh("ln", "-s", "d", mnt / "dirlink")
    assert out("readlink", mnt / "d" / "soft") == "../orig\n"
    assert out("cat", mnt / "dirlink" / "soft") == "original\n"
    assert out("readlink", "-f", mnt / "dirlink" / "hard") == f"{mnt / 'd' / 'hard'}\n"
    sh("ln", "-sfn", "elsewhere", mnt / "d" / "soft")  # replace a symlink in place
    assert os.readlink(mnt / "d" / "soft") == "elsewhere"
    assert sh("ln", mnt / "d", mnt / "dhard", ok=(1,)).returncode == 1  # no hard links to directories
    assert sh("ln", mnt / "orig", mnt / "d" / "hard", ok=(1,)).returncode == 1  # exists
    (mnt / "d" / "hard").write_text("changed via the link\n")
    assert (mnt / "orig").read_text() == "changed via the link\n"
    sh("rm", mnt / "orig")
    assert os.stat(mnt / "d" / "hard").st_nlink == 1
    remount(store, mnt)
    assert (mnt / "d" / "hard").read_text() == "changed via the link\n"
    assert os.readlink(mnt / "dirlink") == "d"
    assert os.stat(mnt / "d" / "hard").st_ino == st.st_ino


# -- tar and rsync round trips ----------------------------------------------------------------------------------
def test_tar_round_trip(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    tmp = mnt.parent
    src = tmp / "src"
    build_tree(src)
    want = manifest(src)
    links = hardlink_groups(src)
    assert len(links) == 2 and len(want) > 25  # the tree really has what this test is about
    sh("tar", "--format=posix", "--numeric-owner", "--sparse", "-cf", tmp / "in.tar", "-C", src, ".")
    (mnt / "x").mkdir()
    sh("tar", "--numeric-owner", "-xpf", tmp / "in.tar", "-C", mnt / "x")
    assert_same_tree(want, manifest(mnt / "x"))
    assert hardlink_groups(mnt / "x") == links
    assert os.stat(mnt / "x" / "sparse.img").st_blocks * 512 <= 256 * KiB
    # and back out
    sh("tar", "--format=posix", "--numeric-owner", "--sparse", "-cf", tmp / "out.tar", "-C", mnt / "x", ".")
    (tmp / "back").mkdir()
    sh("tar", "--numeric-owner", "-xpf", tmp / "out.tar", "-C", tmp / "back")
    assert_same_tree(want, manifest(tmp / "back"))
    assert hardlink_groups(tmp / "back") == links
    # tar's own view of both archives lists the same members
    def members(archive: Path) -> list[str]:
        return sorted(out("tar", "-tf", archive).splitlines())
    assert members(tmp / "in.tar") == members(tmp / "out.tar")
    sh("tar", "--compare", "-f", tmp / "in.tar", "-C", mnt / "x")  # `tar -d`: content, mode, owner, mtime
    inos = inode_map(mnt / "x")
    remount(store, mnt)
    assert_same_tree(want, manifest(mnt / "x"))
    assert inode_map(mnt / "x") == inos


def test_rsync_round_trip(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    tmp = mnt.parent
    src = tmp / "src"
    build_tree(src)
    want = manifest(src)
    sh("rsync", "-aH", f"{src}/", f"{mnt / 'r'}/")
    assert_same_tree(want, manifest(mnt / "r"))
    assert hardlink_groups(mnt / "r") == hardlink_groups(src)
    sh("rsync", "-aH", f"{mnt / 'r'}/", f"{tmp / 'back'}/")
    assert_same_tree(want, manifest(tmp / "back"))
    assert hardlink_groups(tmp / "back") == hardlink_groups(src)
    # a second rsync finds nothing to do (sizes and mtimes match), and --checksum finds no difference either
    again = sh("rsync", "-aHi", "--checksum", f"{src}/", f"{mnt / 'r'}/").stdout.decode()
    assert again.strip() == "", f"rsync wanted to change: {again}"
    # an incremental change with --delete goes through
    (src / "one.bin").write_bytes(b"changed")
    os.utime(src / "one.bin", ns=(BASE_NS, BASE_NS))
    (src / "a" / "with space.txt").unlink()
    (src / "new file").write_bytes(os.urandom(5000))
    sh("rsync", "-aH", "--delete", f"{src}/", f"{mnt / 'r'}/")
    # (rsync leaves the mtime of a directory it deleted from as the deletion set it, on any filesystem)
    assert_same_tree(manifest(src, dir_times=False), manifest(mnt / "r", dir_times=False))
    updated = manifest(mnt / "r")
    inos = inode_map(mnt / "r")
    remount(store, mnt)
    assert_same_tree(updated, manifest(mnt / "r"))
    assert inode_map(mnt / "r") == inos


def test_remount_keeps_tree_and_inode_numbers(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    build_tree(mnt / "t")
    sh("sync")
    before, inos, links = manifest(mnt / "t"), inode_map(mnt / "t"), hardlink_groups(mnt / "t")
    root_ino = os.stat(mnt / "t").st_ino
    remount(store, mnt)
    assert_same_tree(before, manifest(mnt / "t"))
    assert inode_map(mnt / "t") == inos
    assert hardlink_groups(mnt / "t") == links
    assert os.stat(mnt / "t").st_ino == root_ino
    # the same checksums through the tool
    listing = out("sh", "-c", "find . -type f -print0 | sort -z | xargs -0 sha256sum", cwd=mnt / "t")
    remount(store, mnt)
    assert out("sh", "-c", "find . -type f -print0 | sort -z | xargs -0 sha256sum", cwd=mnt / "t") == listing
    assert listing.count("\n") >= 15


# -- du, df, xattrs, stat ---------------------------------------------------------------------------------------
def test_du_on_sparse_file(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    f = mnt / "sparse"
    sh("truncate", "-s", "1G", f)
    sh("dd", f"of={f}", "bs=1", "seek=500000000", "conv=notrunc", "status=none", input=b"hello")
    assert f.stat().st_size == 1024 * MiB

    def du_kib(*flags: str) -> int:
        return int(out("du", "-k", *flags, f).split()[0])

    assert du_kib("--apparent-size") == 1024 * 1024
    assert du_kib() <= 1024, f"du reports {du_kib()} KiB for a 1 GiB file with 5 bytes written"
    with open(f, "rb") as fh:
        fh.seek(500000000 - 3)
        assert fh.read(10) == b"\0\0\0hello\0\0"
    remount(store, mnt)
    assert du_kib() <= 1024
    assert du_kib("--apparent-size") == 1024 * 1024
    # filling some data makes du grow accordingly
    sh("dd", "if=/dev/urandom", f"of={f}", "bs=1M", "count=4", "conv=notrunc", "status=none")
    remount(store, mnt)
    assert 4 * 1024 <= du_kib() <= 4 * 1024 + 1024


def test_df_and_stat_f(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    lines = out("df", "-P", "-k", mnt).splitlines()
    assert len(lines) == 2
    fields = lines[1].split()
    assert fields[-1] == str(mnt)
    total, used, avail = int(fields[1]), int(fields[2]), int(fields[3])
    assert total > 0 and 0 <= avail <= total and used >= 0
    assert out("df", "--output=fstype", mnt).splitlines()[1].strip() == "fuse.clawfs"
    inode_line = out("df", "-i", "-P", mnt).splitlines()[1].split()
    assert int(inode_line[1]) > 0
    assert out("stat", "-f", "-c", "%l", mnt).strip() == "255"


def test_setfattr_getfattr(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    f = mnt / "tagged"
    f.write_text("x")
    sh("setfattr", "-n", "user.color", "-v", "blue", f)
    sh("setfattr", "-n", "user.hex", "-v", "0x00ff10", f)
    sh("setfattr", "-n", "user.empty", f)
    assert sh("getfattr", "--only-values", "-n", "user.color", f).stdout == b"blue"
    assert sh("getfattr", "--only-values", "-n", "user.hex", f).stdout == b"\x00\xff\x10"
    dump = out("getfattr", "-d", "--absolute-names", f)
    assert 'user.color="blue"' in dump
    names = sorted(line for line in out("getfattr", "-m", "-", "--absolute-names", f).splitlines()
                   if line and not line.startswith("#"))
    assert names == ["user.color", "user.empty", "user.hex"]
    sh("setfattr", "-x", "user.color", f)
    gone = sh("getfattr", "-n", "user.color", f, ok=(1,))
    assert b"No such attribute" in gone.stderr
    refused = sh("setfattr", "-n", "trusted.x", "-v", "1", f, ok=(1,))
    assert re.search(rb"Operation not (supported|permitted)", refused.stderr), refused.stderr
    remount(store, mnt)
    assert sh("getfattr", "--only-values", "-n", "user.hex", f).stdout == b"\x00\xff\x10"
    assert sh("getfattr", "-n", "user.color", f, ok=(1,)).returncode == 1


def test_stat_output(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    (mnt / "dir" / "sub").mkdir(parents=True)
    (mnt / "file").write_bytes(b"y" * 70_000)
    os.chmod(mnt / "file", 0o604)
    os.chown(mnt / "file", 321, 654)
    os.utime(mnt / "file", ns=(BASE_NS, BASE_NS + 5))
    os.symlink("file", mnt / "link")
    os.mkfifo(mnt / "fifo")
    fmt = "%n|%s|%h|%a|%F|%i|%u|%g|%.9Y|%b|%B"
    for name, kind in (("file", "regular file"), ("dir", "directory"), ("link", "symbolic link"),
                       ("fifo", "fifo")):
        line = out("stat", "-c", fmt, name, cwd=mnt).strip()
        n, size, links, mode, ftype, ino, uid, gid, mtime, blocks, bunit = line.split("|")
        st = os.lstat(mnt / name)
        assert (n, ftype) == (name, kind)
        assert int(size) == st.st_size and int(links) == st.st_nlink
        assert int(mode, 8) == stat.S_IMODE(st.st_mode)
        assert int(ino) == st.st_ino and int(uid) == st.st_uid and int(gid) == st.st_gid
        assert mtime == f"{st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9:09d}"
        assert int(blocks) * int(bunit) == st.st_blocks * 512
    line = out("stat", "-c", fmt, "file", cwd=mnt).strip().split("|")
    assert line[1:5] == ["70000", "1", "604", "regular file"]
    assert line[6:9] == ["321", "654", f"{BASE_NS // 10**9}.{(BASE_NS + 5) % 10**9:09d}"]
    assert out("stat", "-c", "%h", mnt / "dir").strip() == "3"
    assert out("stat", "-L", "-c", "%s", mnt / "link").strip() == "70000"
