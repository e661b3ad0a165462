"""No plaintext on disk: file contents, names, directory names, symlink targets, xattr names and values never
reach the store file, its WAL or its shared-memory index, neither while mounted nor after unmount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import StoreFixture, store_bytes

pytestmark = pytest.mark.fuse

MARKERS = {
    "content": "QzContentMarker7Hq2Vw",
    "big": "QzBigFileMarker4Rt8Kp",
    "file name": "QzFileNameMarker9Lm3Xd",
    "dir name": "QzDirNameMarker2Bn6Yc",
    "old name": "QzRenamedAwayMarker5Jg1",
    "symlink target": "QzSymlinkTargetMarker8Wf4",
    "xattr name": "QzXattrNameMarker3Tu7",
    "xattr value": "QzXattrValueMarker6Ea9",
    "dir xattr value": "QzDirXattrValueMarker1Ks5",
    "deleted": "QzDeletedFileMarker0Pz2",
}


def _needles(marker: str) -> dict[str, bytes]:
    return {
        "utf-8": marker.encode(),
        "lowercase": marker.lower().encode(),
        "uppercase": marker.upper().encode(),
        "utf-16-le": marker.encode("utf-16-le"),
        "utf-16-be": marker.encode("utf-16-be"),
    }


def _assert_no_marker(store: StoreFixture, when: str) -> int:
    raw = store_bytes(store.path)
    found = [f"{what} ({enc})" for what, marker in MARKERS.items() for enc, needle in _needles(marker).items()
             if needle in raw]
    assert not found, f"plaintext in the store files {when}: {', '.join(found)}"
    return len(raw)


def _write_tree(mnt: Path) -> int:
    """Put every marker through the mount; returns how many content bytes were written."""
    m = MARKERS
    written = 0

    def put(path: Path, data: bytes) -> None:
        nonlocal written
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        written += len(data)

    put(mnt / "small.txt", f"secret: {m['content']}\n".encode())
    put(mnt / "utf16.txt", m["content"].encode("utf-16"))
    big_unit = (m["big"] + "\n").encode()
    put(mnt / "big-repeated.txt", big_unit * (3 * 1024 * 1024 // len(big_unit)))
    # a large file written in many small unaligned writes, spanning block boundaries
    with open(mnt / "big-chunked.txt", "wb") as f:
        for i in range(20000):
            f.write(f"{i:06d} {m['big']} {m['content']}\n".encode())
        f.flush()
        os.fsync(f.fileno())
        written += f.tell()
    # sparse: a marker far out past a hole
    with open(mnt / "sparse.bin", "wb") as f:
        f.seek(5 * 1024 * 1024 + 123)
        f.write(m["content"].encode() * 50)
        f.flush()
        os.fsync(f.fileno())

    d = mnt / f"dir-{m['dir name']}"
    d.mkdir()
    (d / f"sub-{m['dir name']}").mkdir()
    put(d / f"file-{m['file name']}.txt", b"named file\n")
    put(mnt / f"{m['file name']}", m["content"].encode())
    put(mnt / f"{m['old name']}.txt", b"to be renamed\n")
    os.rename(mnt / f"{m['old name']}.txt", d / f"renamed-{m['file name']}.txt")
    put(mnt / f"{m['deleted']}.txt", f"{m['deleted']}\n".encode() * 1000)
    os.unlink(mnt / f"{m['deleted']}.txt")

    os.symlink(f"/somewhere/{m['symlink target']}/x", mnt / "link")
    os.symlink(m["symlink target"] * 40, d / "long-link")

    os.setxattr(mnt / "small.txt", f"user.{m['xattr name']}", f"v={m['xattr value']}".encode())
    os.setxattr(mnt / "small.txt", "user.big", m["xattr value"].encode() * 200)
    os.setxattr(d, f"user.{m['xattr name']}.dir", m["dir xattr value"].encode())

    for p in (mnt, d):
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return written


def test_no_plaintext_in_store_files(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    store.mount(mnt)
    try:
        written = _write_tree(mnt)
        # the markers really are in the filesystem, readable through the mount
        d = mnt / f"dir-{MARKERS['dir name']}"
        assert MARKERS["content"] in (mnt / "small.txt").read_text()
        assert os.readlink(mnt / "link") == f"/somewhere/{MARKERS['symlink target']}/x"
        assert f"user.{MARKERS['xattr name']}".encode() in [n.encode() for n in os.listxattr(mnt / "small.txt")]
        assert os.getxattr(d, f"user.{MARKERS['xattr name']}.dir") == MARKERS["dir xattr value"].encode()
        assert f"renamed-{MARKERS['file name']}.txt" in os.listdir(d)
        size = _assert_no_marker(store, "while mounted")
        assert size >= written, (f"the store files hold {size} bytes while {written} were fsync'd: the grep "
                                 "did not see the data")
    finally:
        store.umount(mnt)
    _assert_no_marker(store, "after unmount")
    assert store.path.stat().st_size >= written, "after unmount the store is smaller than the data it holds"
    store.assert_clean()
