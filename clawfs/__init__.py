"""ClawFS: the filesystem layer (crypto, keys, store, vfs, FUSE adapter, fsck).

Dependencies point down: this package may import `kernel`, never `agent`, `sandbox`, `migrations` or `mountd`.
"""

FORMAT_VERSION = 5
"""On-disk format this program writes and the newest it can open (also the SQLite schema version)."""
