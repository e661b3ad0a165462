"""The `.clawfs/` control tree: a read-only virtual directory at the root of every mount, reachable by name but
not listed (as ZFS's `.zfs`), so copies of a mount (`rsync -a`, `tar`, `cp -r`) hold the agent's files only.

    .clawfs/status                  JSON: embedder, files/chunks/vectors indexed, pending changes, last indexed,
                                    the model's state ("failed: ..." says why and the fix), why an index is off
    .clawfs/search/<query>/         symlinks `NN-<name>` to the matching files, best first
                                    (scores: xattr `user.clawfs.scores` of the query directory; Linux allows no
                                    user.* xattrs on symlinks, so they cannot carry their own)
    .clawfs/search/<query>/.results.json   rank, score, path and snippet of every hit (not listed)
    .clawfs/search/<query>/.results?k=N&path=P   the same for another count and/or confined to the files
                                    under path P (percent-encoded; not listed): what `clawfs search --mount`
                                    reads for `-k` and `--path`, so they work as on an unmounted store
    .clawfs/audit/files.jsonl       refusals of the mount's policy checks (clawfs/policy.py), JSON lines; the
                                    owner's to read (not the agent's), when the mount has an agent uid
    .clawfs/similar/<path>/         the same for the files most similar in meaning to the indexed file at
                                    <path> (relative to the mount root, walked a component at a time: each
                                    directory on the way is a plain directory), best first, itself left out
                                    (its `.results.json` and `.results?...` as under search/)

Nothing here is stored: nodes live in memory with inode numbers from CTL_BASE up, and the indexer never sees
them.  A search runs when its directory is looked up, in two steps: `prepare` hands the caller the search
itself (a query embedding, ~10-20 ms; or seconds while the model loads at mount, or behind a batch the indexer
is embedding), which the FUSE adapter runs in a worker thread so that no other request waits for it; `lookup`
then builds the result directory from its answer.  A similar/ lookup embeds nothing (the file's stored chunk
vectors are the queries) but goes the same way, since it too waits for the vectors to load.
"""

from __future__ import annotations

import json
import stat
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .index.hits import Hit

CTL_BASE = 1 << 56
NAME = b".clawfs"
MAX_QUERIES = 64  # query directories kept; older ones vanish (their inode numbers then answer ENOENT)
MAX_SIMILAR = 64  # nodes kept under similar/ (directories and result directories), least recently looked up go
MAX_HITS = 20  # the symlinks and `.results.json` of a result directory
MAX_K = 1000  # the most hits a `.results?k=N` file lists
PARAMS = b".results?"


@dataclass
class Node:
    ino: int
    mode: int
    parent: int
    children: dict[bytes, int] = field(default_factory=dict)
    data: bytes = b""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    hidden: set[bytes] = field(default_factory=set)


SearchFn = Callable[[str, int, bytes | None], list[Hit]]
"""(query, k, path prefix or None) -> the k best files, best first."""
SimilarFn = Callable[[bytes, int, bytes | None], list[Hit] | Literal["dir"] | None]
"""(path relative to the mount root, k, path prefix or None) -> the files most like that indexed file, best
first; "dir" for a directory; None when it is neither (missing, or a file with nothing indexed)."""
Answer = list[Hit] | Literal["dir"] | None


@dataclass(frozen=True)
class Prepared:
    """What the search of a prepared lookup found: a SearchFn's or SimilarFn's result."""

    answer: Answer


class ControlTree:
    def __init__(self, search: SearchFn | None, status: Callable[[], dict[str, Any]], uid: int, gid: int,
                 similar: SimilarFn | None = None) -> None:
        self._search = search
        self._similar_fn = similar
        self._status = status
        self.uid, self.gid = uid, gid
        self.created_ns = time.time_ns()
        self.nodes: dict[int, Node] = {}
        self._next = CTL_BASE
        self._queries: OrderedDict[bytes, int] = OrderedDict()
        self._similar: OrderedDict[int, tuple[bytes, bool]] = OrderedDict()  # node -> (path, is a directory)
        self.root = self._add(stat.S_IFDIR | 0o555, parent=0).ino
        self.status_ino = self._add(stat.S_IFREG | 0o444, self.root, b"status").ino
        self.search_ino = self._add(stat.S_IFDIR | 0o555, self.root, b"search").ino
        self.similar_ino = self._add(stat.S_IFDIR | 0o555, self.root, b"similar").ino
        self._generated: dict[int, Callable[[], bytes]] = {}

    def add_generated(self, dirname: bytes, name: bytes, generate: Callable[[], bytes]) -> int:
        """A file `dirname/name` whose contents `generate` makes at each open (e.g. `audit/files.jsonl`)."""
        parent = self.nodes[self.root].children.get(dirname)
        if parent is None:
            parent = self._add(stat.S_IFDIR | 0o555, self.root, dirname).ino
        ino = self._add(stat.S_IFREG | 0o444, parent, name).ino
        self._generated[ino] = generate
        return ino

    @staticmethod
    def owns(ino: int) -> bool:
        return ino >= CTL_BASE

    def _add(self, mode: int, parent: int, name: bytes = b"", data: bytes = b"", hidden: bool = False) -> Node:
        self._next += 1
        node = Node(self._next, mode, parent, data=data)
        self.nodes[node.ino] = node
        if parent:
            self.nodes[parent].children[name] = node.ino
            if hidden:
                self.nodes[parent].hidden.add(name)
        return node

    def node(self, ino: int) -> Node | None:
        if ino == self.status_ino:
            self.nodes[ino].data = (json.dumps(self._status(), indent=2, sort_keys=True) + "\n").encode()
        elif (generate := self._generated.get(ino)) is not None:
            self.nodes[ino].data = generate()
        return self.nodes.get(ino)

    def prepare(self, parent: int, name: bytes) -> Callable[[], Prepared] | None:
        """The search that looking up `name` in `parent` needs (None: none).  It touches no node, so it may run
        in another thread while requests go on; pass its answer to `lookup`."""
        search, similar = self._search, self._similar_fn
        if parent == self.search_ino and search is not None:
            query = name.decode("utf-8", "replace")
            return lambda: Prepared(search(query, MAX_HITS, None))
        if similar is not None and self._is_similar_dir(parent):
            path = self._similar_path(parent, name)
            return lambda: Prepared(similar(path, MAX_HITS, None))
        if (params := parse_results_name(name)) is not None and (source := self._source(parent)) is not None:
            kind, what = source
            if kind == "search" and search is not None:
                return lambda: Prepared(search(what.decode("utf-8", "replace"), *params))
            if kind == "similar" and similar is not None:
                return lambda: Prepared(similar(what, *params))
        return None

    def _source(self, ino: int) -> tuple[Literal["search", "similar"], bytes] | None:
        """What result directory `ino` answers: ("search", its query) or ("similar", its file's path)."""
        query = next((q for q, d in self._queries.items() if d == ino), None)
        if query is not None:
            return "search", query
        path, is_dir = self._similar.get(ino, (b"", True))
        return None if is_dir else ("similar", path)

    def lookup(self, parent: int, name: bytes, prepared: Prepared | None = None) -> Node | None:
        """The node `name` in `parent`.  Under search/ and similar/ that needs what `prepare`'s search found;
        without it (a VFS used without FUSE) the search runs here, in this thread."""
        p = self.nodes.get(parent)
        if p is None:
            return None
        if prepared is None and (work := self.prepare(parent, name)) is not None:
            prepared = work()
        answer = prepared.answer if prepared is not None else None
        if parent == self.search_ino and self._search is not None:
            assert isinstance(answer, list)
            return self._query_dir(name, answer)  # searched again at every lookup: results follow the files
        if self._similar_fn is not None and self._is_similar_dir(parent):
            return self._similar_node(parent, name, answer)  # likewise, and a path may have become a file or gone
        if parse_results_name(name) is not None and self._source(parent) is not None:
            return self._results_file(p, name, answer)
        if name in p.children:
            return self.node(p.children[name])
        return None

    def _is_similar_dir(self, ino: int) -> bool:
        return ino == self.similar_ino or self._similar.get(ino, (b"", False))[1]

    def _similar_path(self, parent: int, name: bytes) -> bytes:
        base = self._similar[parent][0] if parent in self._similar else b""
        return base + b"/" + name if base else name

    def listing(self, ino: int) -> list[tuple[bytes, Node]]:
        n = self.nodes[ino]
        return [(name, node) for name, c in n.children.items()
                if name not in n.hidden and (node := self.node(c)) is not None]

    def _query_dir(self, name: bytes, hits: list[Hit]) -> Node:
        old = self._queries.pop(name, None)
        d = self._results_dir(old if old in self.nodes else None, self.search_ino, name)
        self._fill(d, hits, b"../../../")
        self._queries[name] = d.ino
        if len(self._queries) > MAX_QUERIES:
            self._drop(self._queries.popitem(last=False)[1])
        return d

    def _similar_node(self, parent: int, name: bytes, found: Answer) -> Node | None:
        """`similar/<path>`: a plain directory for a directory of the mount, the results for an indexed file."""
        path = self._similar_path(parent, name)
        old = self.nodes[parent].children.get(name)
        if old is not None and (found is None or self._similar[old][1] != (found == "dir")):
            self._drop(old)  # gone, or a directory became a file (or the other way): start afresh
            old = None
        if found is None:
            return None
        if found == "dir":
            d = self.nodes[old] if old is not None else self._add(stat.S_IFDIR | 0o555, parent, name)
        else:
            d = self._results_dir(old, parent, name)
            self._fill(d, found, b"../" * (path.count(b"/") + 3))  # up from .clawfs/similar/<path>/ to the root
        self._similar[d.ino] = (path, found == "dir")
        chain = [d.ino]
        while (up := self.nodes[chain[-1]].parent) in self._similar:  # a kernel may walk from a cached parent
            chain.append(up)
        for ino in reversed(chain):  # the path just walked is the most recent: eviction never cuts it
            self._similar.move_to_end(ino)
        self._evict_similar(keep=set(chain))
        return d

    def _evict_similar(self, keep: set[int]) -> None:
        for ino in list(self._similar):
            if len(self._similar) <= MAX_SIMILAR:
                return
            if ino in self._similar and ino not in keep:
                self._drop(ino)

    def _results_dir(self, old: int | None, parent: int, name: bytes) -> Node:
        """The result directory `name`, emptied in place if it exists (it keeps its inode number)."""
        if old is None:
            return self._add(stat.S_IFDIR | 0o555, parent, name)
        d = self.nodes[old]
        for child in d.children.values():
            self._discard(child)
        d.children.clear()
        d.hidden.clear()
        return d

    def _fill(self, d: Node, hits: list[Hit], up: bytes) -> None:
        """Symlinks `NN-name` -> `up` + path, the scores xattr and the hidden `.results.json`."""
        lines = []
        for rank, hit in enumerate(hits, 1):
            path = hit.path
            entry = b"%02d-" % rank + path.rsplit(b"/", 1)[-1]
            self._add(stat.S_IFLNK | 0o777, d.ino, entry, data=up + path)
            lines.append(b"%02d %.6f %s" % (rank, hit.score, path))
        self._add(stat.S_IFREG | 0o444, d.ino, b".results.json", hidden=True, data=_results_json(hits))
        d.xattrs[b"user.clawfs.scores"] = b"\n".join(lines)

    def _results_file(self, d: Node, name: bytes, hits: Answer) -> Node | None:
        """The hidden `.results?...` file of result directory `d`, made afresh from its search's answer."""
        if (old := d.children.get(name)) is not None:
            self._drop(old)
        if not isinstance(hits, list):
            return None  # a similar/ file that has gone or become a directory since
        return self._add(stat.S_IFREG | 0o444, d.ino, name, hidden=True, data=_results_json(hits))

    def _drop(self, ino: int) -> None:
        """Forget a node and everything under it (their inode numbers then answer ENOENT)."""
        node = self.nodes.get(ino)
        if node is None:
            return
        parent = self.nodes.get(node.parent)
        if parent:
            for name, c in list(parent.children.items()):
                if c == ino:
                    del parent.children[name]
        self._discard(ino)

    def _discard(self, ino: int) -> None:
        node = self.nodes.pop(ino, None)
        self._similar.pop(ino, None)
        if node is not None:
            for child in node.children.values():
                self._discard(child)


def _results_json(hits: list[Hit]) -> bytes:
    results = [h.to_json(i) for i, h in enumerate(hits, 1)]
    return (json.dumps(results, indent=2) + "\n").encode()


def results_name(k: int, prefix: bytes | None) -> bytes:
    """The name of the hidden file in a result directory that lists `k` hits under `prefix`."""
    query = b"k=%d" % k
    if prefix:
        query += b"&path=" + urllib.parse.quote_from_bytes(prefix, safe="").encode()
    return PARAMS + query


def parse_results_name(name: bytes) -> tuple[int, bytes | None] | None:
    """(k, path prefix or None) of a `results_name`; None for any other name, or a malformed one."""
    if not name.startswith(PARAMS):
        return None
    fields: dict[bytes, bytes] = {}
    for item in name[len(PARAMS):].split(b"&"):
        key, eq, value = item.partition(b"=")
        if not eq or key not in (b"k", b"path") or key in fields:
            return None
        fields[key] = urllib.parse.unquote_to_bytes(value)
    try:
        k = int(fields.get(b"k", b"%d" % MAX_HITS))
    except ValueError:
        return None
    if not 1 <= k <= MAX_K:
        return None
    return k, fields.get(b"path", b"").strip(b"/") or None
