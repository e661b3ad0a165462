"""fsck: prove that every byte of a store authenticates and that its tree is whole.

Checks, each problem named with its inode (and block or entry):
  - every inode row authenticates (its MAC covers all its metadata), every entry is bound to the inode it
    names, every file's stored blocks are the set its row records, and the rows add up to the store root
    (schema v5, clawfs/integrity.py; a root that does not add up names no inode: a sum cannot say which row
    was replaced);
  - every block decrypts under its (store, inode, generation, index) AAD, lies within the file size, is no
    longer than the file allows, and the inode's block count matches;
  - every entry name decrypts under its parent, points at an existing inode, lives in a directory;
  - every symlink target and xattr name and value decrypts;
  - link counts match the entries (files) and the subdirectories (directories); a directory's parent matches
    its one entry; every linked inode is reachable from the root;
  - no blocks or xattrs belong to a missing inode;
  - the index matches the files: no chunks of deleted files, vector reference counts right, every vector and
    the HNSW snapshot authenticate.
Orphans (unlinked while open when the daemon died) are reported as notes: the next mount purges them.
"""

from __future__ import annotations

import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .errors import IntegrityError
from .store import ROOT, Store


@dataclass
class Problem:
    kind: str
    message: str
    inode: int | None = None
    block: int | None = None


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str, inode: int | None = None, block: int | None = None) -> None:
        self.problems.append(Problem(kind, message, inode, block))

    def to_dict(self) -> dict[str, object]:
        return {"clean": self.clean, "problems": [asdict(p) for p in self.problems], "notes": self.notes,
                "counts": self.counts}


def check(store: Store, progress: Callable[[int], None] | None = None) -> Report:
    """Check the whole store; `progress(n)` is called as blocks are verified (for a progress bar)."""
    report = Report()
    inodes = {row.id: row for row in store.all_inodes()}
    refs: Counter[int] = Counter()
    subdirs: Counter[int] = Counter()
    children: dict[int, list[int]] = {}
    entry_parent: dict[int, int] = {}

    root = inodes.get(ROOT)
    if root is None or not stat.S_ISDIR(root.mode):
        report.add("root", "the root directory is missing or not a directory", ROOT)

    for ino, row in inodes.items():
        if not store.inode_authentic(row):
            report.add("inode", f"inode {ino}: its metadata fails authentication (a column edited, e.g. mode, "
                                "owner, size, link count or flags)", ino)
    if not store.root_authentic():
        report.add("root", "the store's inodes and entries do not add up to its root: rows were replaced by older "
                           "copies or removed (a partial rollback), or the root was edited")

    for entry_id, parent, ino, authentic, bound in store.all_entries():
        prow = inodes.get(parent)
        if prow is None or not stat.S_ISDIR(prow.mode):
            report.add("entry", f"entry {entry_id} lives in inode {parent}, which is not a directory", parent)
            continue
        if not authentic:
            report.add("name", f"directory {parent}: entry {entry_id} has a name that fails authentication "
                               "(modified or moved)", parent)
        if not bound:
            report.add("entry", f"directory {parent}: entry {entry_id} is not bound to inode {ino} (re-pointed, "
                                "replayed or modified)", parent)
        child = inodes.get(ino)
        if child is None:
            report.add("entry", f"directory {parent}: entry {entry_id} points to missing inode {ino}", parent)
            continue
        refs[ino] += 1
        children.setdefault(parent, []).append(ino)
        if stat.S_ISDIR(child.mode):
            subdirs[parent] += 1
            entry_parent[ino] = parent

    _check_links(report, inodes, refs, subdirs, entry_parent)
    _check_reachable(report, inodes, children)
    _check_contents(report, store, inodes, progress)
    _check_index(report, store, inodes)
    report.counts = {"inodes": len(inodes), "entries": sum(refs.values()),
                     "blocks": sum(r.nblocks for r in inodes.values())}
    return report


def _check_links(report: Report, inodes: dict, refs: Counter[int], subdirs: Counter[int],  # type: ignore[type-arg]
                 entry_parent: dict[int, int]) -> None:
    for ino, row in inodes.items():
        if row.nlink == 0:
            if refs[ino]:
                report.add("nlink", f"inode {ino} has link count 0 but {refs[ino]} entries", ino)
            else:
                report.notes.append(f"inode {ino} is an orphan (unlinked while open); the next mount purges it")
            continue
        if stat.S_ISDIR(row.mode):
            want_refs = 0 if ino == ROOT else 1
            if refs[ino] != want_refs:
                report.add("nlink", f"directory {ino} has {refs[ino]} entries, expected {want_refs}", ino)
            if row.nlink != 2 + subdirs[ino]:
                report.add("nlink", f"directory {ino} has link count {row.nlink}, expected {2 + subdirs[ino]}", ino)
            if ino != ROOT and entry_parent.get(ino) not in (None, row.parent):
                report.add("parent", f"directory {ino} records parent {row.parent} but lives in "
                                     f"{entry_parent.get(ino)}", ino)
        elif row.nlink != refs[ino]:
            report.add("nlink", f"inode {ino} has link count {row.nlink} but {refs[ino]} entries", ino)


def _check_reachable(report: Report, inodes: dict, children: dict[int, list[int]]) -> None:  # type: ignore[type-arg]
    seen, todo = {ROOT}, [ROOT]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    for ino, row in inodes.items():
        if row.nlink and ino not in seen:
            report.add("tree", f"inode {ino} is not reachable from the root", ino)


def _check_contents(report: Report, store: Store, inodes: dict,  # type: ignore[type-arg]
                    progress: Callable[[int], None] | None) -> None:
    bs = store.block_size
    for ino, count in store.block_owners():
        if ino not in inodes:
            report.add("blocks", f"{count} blocks belong to missing inode {ino}", ino)
    for ino, row in inodes.items():
        n = 0
        for idx, plain in store.stored_blocks(row):
            n += 1
            if progress:
                progress(1)
            if plain is None:
                report.add("block", f"inode {ino} block {idx} fails authentication (modified, swapped or moved)",
                           ino, idx)
                continue
            if idx * bs >= max(row.size, 1) or len(plain) > min(bs, row.size - idx * bs):
                report.add("block", f"inode {ino} block {idx} lies beyond the file size {row.size}", ino, idx)
        if not store.block_set_authentic(row):
            report.add("blockset", f"inode {ino}: its blocks are not the set it records (a block replayed, added "
                                   "or removed)", ino)
        if n != row.nblocks:
            report.add("blocks", f"inode {ino} records {row.nblocks} blocks but has {n}", ino)
        if stat.S_ISLNK(row.mode):
            try:
                store.readlink(row)
            except IntegrityError:
                report.add("symlink", f"inode {ino}: symlink target fails authentication", ino)
        for authentic in store.xattrs_authentic(row):
            if not authentic:
                report.add("xattr", f"inode {ino}: an extended attribute fails authentication", ino)


def _check_index(report: Report, store: Store, inodes: dict) -> None:  # type: ignore[type-arg]
    """The index against the files: chunks of live files only, reference counts, every vector authentic."""
    tables = store.index
    uses: Counter[int] = Counter()
    queued = {ino for ino, _ in tables.queued(1 << 62, 1 << 30)}  # the indexer catches up on these
    for ino, _chunks in tables.indexed_files():
        row = inodes.get(ino)
        if (row is None or row.nlink == 0) and ino not in queued:
            report.add("index", f"the index still holds inode {ino}, which is gone (`clawfs reindex` rebuilds it)", ino)
    vector_ids = tables.vector_ids()
    for ino, vector_id in tables.all_chunks():
        uses[vector_id] += 1
        if ino not in inodes and ino not in queued:
            report.add("index", f"a chunk belongs to missing inode {ino}", ino)
        if vector_id not in vector_ids:
            report.add("index", f"a chunk of inode {ino} uses missing vector {vector_id}", ino)
    indexed = {ino for ino, _ in tables.indexed_files()}
    for ino, row in inodes.items():
        if stat.S_ISREG(row.mode) and row.nlink and row.size and ino not in indexed and ino not in queued:
            report.add("index", f"inode {ino} is neither indexed nor queued (`clawfs reindex` fixes it)", ino)
    for vector_id, digest, sealed in tables.vectors():
        try:
            tables.open_vector(digest, sealed)
        except IntegrityError:
            report.add("index", f"index vector {vector_id} fails authentication")
        refs = tables.vector_refs(vector_id)
        if refs != uses[vector_id]:
            report.add("index", f"index vector {vector_id} counts {refs} uses but {uses[vector_id]} chunks use it")
    try:
        tables.snapshot()
    except IntegrityError:
        report.notes.append("the index snapshot fails authentication; the next mount rebuilds it")
    pending = tables.queue_length()
    if pending:
        report.notes.append(f"{pending} files wait for the indexer (indexed at the next mount)")
