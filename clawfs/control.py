"""The `.clawfs/` control tree: a read-only virtual directory at the root of every mount, reachable by name but
not listed (as ZFS's `.zfs`), so copies of a mount (`rsync -a`, `tar`, `cp -r`) hold the agent's files only.

    .clawfs/status                  JSON: embedder, files/chunks/vectors indexed, pending changes, last indexed
    .clawfs/search/<query>/         symlinks `NN-<name>` to the matching files, best first
                                    (scores: xattr `user.clawfs.scores` of the query directory; Linux allows no
                                    user.* xattrs on symlinks, so they cannot carry their own)
    .clawfs/search/<query>/.results.json   rank, score, path and snippet of every hit (not listed)

Nothing here is stored: nodes live in memory with inode numbers from CTL_BASE up, and the indexer never sees
them.  A search runs on the request path when its directory is looked up (one query embedding, ~20 ms).
"""

from __future__ import annotations

import json
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CTL_BASE = 1 << 56
NAME = b".clawfs"
MAX_QUERIES = 64  # query directories kept; older ones vanish (their inode numbers then answer ENOENT)


@dataclass
class Node:
    ino: int
    mode: int
    parent: int
    children: dict[bytes, int] = field(default_factory=dict)
    data: bytes = b""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    hidden: set[bytes] = field(default_factory=set)


SearchFn = Callable[[str, int], list[dict[str, Any]]]


class ControlTree:
    def __init__(self, search: SearchFn | None, status: Callable[[], dict[str, Any]], uid: int, gid: int) -> None:
        self._search = search
        self._status = status
        self.uid, self.gid = uid, gid
        self.created_ns = time.time_ns()
        self.nodes: dict[int, Node] = {}
        self._next = CTL_BASE
        self._queries: OrderedDict[bytes, int] = OrderedDict()
        self.root = self._add(stat.S_IFDIR | 0o555, parent=0).ino
        self.status_ino = self._add(stat.S_IFREG | 0o444, self.root, b"status").ino
        self.search_ino = self._add(stat.S_IFDIR | 0o555, self.root, b"search").ino

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
        return self.nodes.get(ino)

    def lookup(self, parent: int, name: bytes) -> Node | None:
        p = self.nodes.get(parent)
        if p is None:
            return None
        if parent == self.search_ino and self._search is not None:
            return self._query_dir(name)  # searched again at every lookup: results follow the files
        if name in p.children:
            return self.node(p.children[name])
        return None

    def listing(self, ino: int) -> list[tuple[bytes, Node]]:
        n = self.nodes[ino]
        return [(name, node) for name, c in n.children.items()
                if name not in n.hidden and (node := self.node(c)) is not None]

    def _query_dir(self, name: bytes) -> Node:
        assert self._search is not None
        hits = self._search(name.decode("utf-8", "replace"), 20)
        old = self._queries.pop(name, None)
        if old is not None and old in self.nodes:  # refresh in place: the directory keeps its inode number
            d = self.nodes[old]
            for child in d.children.values():
                self.nodes.pop(child, None)
            d.children.clear()
            d.hidden.clear()
        else:
            d = self._add(stat.S_IFDIR | 0o555, self.search_ino, name)
        lines = []
        for rank, hit in enumerate(hits, 1):
            path: bytes = hit["path"]
            entry = b"%02d-" % rank + path.rsplit(b"/", 1)[-1]
            self._add(stat.S_IFLNK | 0o777, d.ino, entry, data=b"../../../" + path)
            lines.append(b"%02d %.6f %s" % (rank, hit["score"], path))
        results = [{**h, "rank": i, "path": h["path"].decode("utf-8", "surrogateescape")}
                   for i, h in enumerate(hits, 1)]
        self._add(stat.S_IFREG | 0o444, d.ino, b".results.json", hidden=True,
                  data=(json.dumps(results, indent=2) + "\n").encode())
        d.xattrs[b"user.clawfs.scores"] = b"\n".join(lines)
        self._queries[name] = d.ino
        if len(self._queries) > MAX_QUERIES:
            self._drop(self._queries.popitem(last=False)[1])
        return d

    def _drop(self, ino: int) -> None:
        node = self.nodes.pop(ino)
        for child in node.children.values():
            self.nodes.pop(child, None)
        parent = self.nodes.get(node.parent)
        if parent:
            for name, c in list(parent.children.items()):
                if c == ino:
                    del parent.children[name]
