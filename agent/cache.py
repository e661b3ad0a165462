"""Files and folders the runtime reads again and again (the prompt files, thread histories, routines, the channel
list, its own state), kept in memory and read again only when their stat changes.

Why: through the mount, an open/read/close is three or four FUSE round trips, while a stat of an unchanged file
or folder costs none (the kernel keeps the attributes for the mount's attr_timeout, and every write, create or
rename made through the mount updates or invalidates them: every writer of a home goes through the mount).  The
key is (inode, size, mtime_ns): a whole-file replace (rename over) changes the inode, an append the size and the
mtime, a create/unlink/rename in a folder the folder's mtime.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
Key = tuple[int, int, int]
MAX_ENTRIES = 512


def stat_key(st: os.stat_result) -> Key:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileCache(Generic[T]):
    """`path` -> `parse(its bytes)`, read again when the file's stat key changes.  Values are shared: callers
    must not change them (copy first)."""

    def __init__(self, parse: Callable[[bytes], T], max_entries: int = MAX_ENTRIES) -> None:
        self._parse = parse
        self._max = max_entries
        self._entries: OrderedDict[Path, tuple[Key, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> T:
        """The parsed file; raises what open() raises (FileNotFoundError, IsADirectoryError...)."""
        key = stat_key(os.stat(path))
        with self._lock:
            hit = self._entries.get(path)
            if hit is not None and hit[0] == key:
                self._entries.move_to_end(path)
                return hit[1]
        with open(path, "rb") as f:
            # the key of what is read: taken before the read, so a write racing it makes the next get read again
            key = stat_key(os.fstat(f.fileno()))
            value = self._parse(f.read())
        self.put(path, key, value)
        return value

    def cached(self, path: Path) -> tuple[Key, T] | None:
        with self._lock:
            return self._entries.get(path)

    def put(self, path: Path, key: Key, value: T) -> None:
        with self._lock:
            self._entries[path] = (key, value)
            self._entries.move_to_end(path)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._entries.pop(path, None)


class DirCache:
    """A folder's entry names, listed again when the folder's stat key changes, and at least every `max_age`
    seconds whatever the key says (a bound on any change the kernel's attributes would not show)."""

    def __init__(self, max_age: float = 1.0) -> None:
        self._max_age = max_age
        self._entries: dict[Path, tuple[Key, float, list[str]]] = {}
        self._lock = threading.Lock()

    def names(self, path: Path) -> list[str]:
        """Sorted names (shared: not to be changed); raises what os.stat and os.listdir raise."""
        key = stat_key(os.stat(path))
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(path)
        if hit is not None and hit[0] == key and now - hit[1] < self._max_age:
            return hit[2]
        names = sorted(os.listdir(path))
        # a change racing the listing changed the key after our stat: the next call lists again
        with self._lock:
            self._entries[path] = (key, now, names)
        return names
