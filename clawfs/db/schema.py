"""The store's SQLite schema and its numbered migrations.

A store is one SQLite file (plus its `-wal` and `-shm` while open), `PRAGMA application_id` = 0x436C6177
("Claw"), `PRAGMA user_version` = the newest migration applied.  Every migration runs in one transaction
together with its row in `schema_migrations`, so a store is never half-migrated.

Version 1 tables (every BLOB column is ciphertext; see clawfs/crypto.py for the envelopes):

meta(key TEXT PK, value)            store_id (16 B), format_version, block_size, created_ns, header_mac,
                                    mounted (1 while a mount holds it: an unclean shutdown leaves it set),
                                    unclean_shutdowns (count), last_mount_ns, last_clean_unmount_ns
key_slots(id PK, kind, params, wrapped, created_ns)
                                    kind: passphrase | keyfile | recovery (| tpm2 later); params: JSON with the
                                    KDF and its parameters and salt; wrapped: the master key under the slot's KEK
inodes(id PK AUTOINCREMENT, generation, mode, uid, gid, nlink, size, rdev,
       atime_ns, mtime_ns, ctime_ns, nblocks, parent, target)
                                    id is the FUSE inode number (root = 1), never reused (AUTOINCREMENT);
                                    generation is random per inode and bound into every block's AAD;
                                    parent: the containing directory, for directories only (for `..`);
                                    target: the encrypted symlink target; nlink 0 = unlinked but still open
dentries(id PK AUTOINCREMENT, parent, name, ino)   name = AES-SIV(name, parent); UNIQUE(parent, name);
                                    id orders readdir and serves as its stable offset
blocks(ino, idx, data, PK(ino, idx))   one AES-GCM block per `block_size` bytes of plaintext; holes are absent
xattrs(ino, name, value, PK(ino, name))  name = AES-SIV(name, inode), value = AES-GCM
schema_migrations(version PK, description, applied_ns)

Version 2 tables (the semantic index; see clawfs/index/):

index_queue(ino PK, queued_ns)      files whose contents changed and wait for the indexer; written in the same
                                    transaction as the change, so a crash never loses one
index_files(ino PK, generation, indexed_ns, chunks)   what the indexer last saw of each file
chunks(id PK AUTOINCREMENT, ino, seq, start, end, vector_id)   a file's text pieces (character offsets into
                                    its UTF-8 text; the text itself is read from the file when needed)
vectors(id PK AUTOINCREMENT, digest UNIQUE, refs, data)   one embedding per distinct chunk text:
                                    digest = HMAC(index key, text), so copies share a vector; data = AES-GCM
                                    of the float32 vector; refs = chunks that use it
fts(tokens) fts5, contentless       rowid = chunk id; tokens = the chunk's words, each a keyed HMAC (blind)
index_meta(key PK, value)           embedder name and dimension, HNSW parameters, the encrypted HNSW snapshot

Version 3:

inodes.flags                        bit 1 (FLAG_SECRET): a secret's value, or a directory of secrets (see
                                    clawfs/home.py); set when created in or moved into `secrets/`, never cleared
settings(key PK, value)             store settings that are not the index's: `migrate.*` progress and sources

Version 4:

index_meta                          rebuilt as an ordinary rowid table.  WITHOUT ROWID kept each value inside the
                                    key b-tree, so the HNSW snapshot (hundreds of MB at 100k chunks) filled its
                                    leaf overflow chain and every lookup of an absent key walked it: four such
                                    lookups cost a mount over a second.  A rowid table keeps keys in small
                                    interior pages and reads a value only when it is asked for.

Version 5 (metadata integrity; docs/ARCHITECTURE.md "Metadata integrity", clawfs/integrity.py):

inodes.bsum                         32 B: the sum (mod 2^256) of the keyed terms of the file's blocks
inodes.mac                          HMAC of every column of the row (bsum and the sealed target included)
dentries.mac                        HMAC binding (parent, sealed name) to the child inode and its generation
blocks.tag                          the block's GCM tag (its last 16 bytes), indexed with (ino, idx) so that a
                                    file's block set is read without touching the blocks themselves
meta.root                           sum of the keyed terms of every inode and entry MAC, and its HMAC over the
                                    rollback counter value
The SQL adds the columns and fills `tag`; the MACs need the key, so the store computes them in the same
transaction (`KEYED` below), when the store is first opened read-write.
"""

from __future__ import annotations

APPLICATION_ID = 0x436C6177

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema: meta, key slots, inodes, entries, blocks, xattrs",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        CREATE TABLE key_slots (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            params TEXT NOT NULL,
            wrapped BLOB NOT NULL,
            created_ns INTEGER NOT NULL
        );
        CREATE TABLE inodes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            generation INTEGER NOT NULL,
            mode INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            gid INTEGER NOT NULL,
            nlink INTEGER NOT NULL,
            size INTEGER NOT NULL DEFAULT 0,
            rdev INTEGER NOT NULL DEFAULT 0,
            atime_ns INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ctime_ns INTEGER NOT NULL,
            nblocks INTEGER NOT NULL DEFAULT 0,
            parent INTEGER,
            target BLOB
        );
        CREATE INDEX inodes_orphans ON inodes (nlink) WHERE nlink = 0;
        CREATE TABLE dentries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            parent INTEGER NOT NULL,
            name BLOB NOT NULL,
            ino INTEGER NOT NULL,
            UNIQUE (parent, name)
        );
        CREATE INDEX dentries_by_parent ON dentries (parent, id);
        CREATE INDEX dentries_by_ino ON dentries (ino);
        CREATE TABLE blocks (
            ino INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (ino, idx)
        );
        CREATE TABLE xattrs (
            ino INTEGER NOT NULL,
            name BLOB NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (ino, name)
        ) WITHOUT ROWID;
        """,
    ),
]

MIGRATIONS.append((
    2,
    "semantic index: queue, chunks, deduplicated encrypted vectors, blind-token FTS5, index meta",
    """
    CREATE TABLE index_queue (ino INTEGER PRIMARY KEY, queued_ns INTEGER NOT NULL);
    CREATE TABLE index_files (
        ino INTEGER PRIMARY KEY, generation INTEGER NOT NULL, indexed_ns INTEGER NOT NULL,
        chunks INTEGER NOT NULL
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ino INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        start INTEGER NOT NULL,
        end INTEGER NOT NULL,
        vector_id INTEGER NOT NULL
    );
    CREATE INDEX chunks_by_ino ON chunks (ino, seq);
    CREATE INDEX chunks_by_vector ON chunks (vector_id);
    CREATE TABLE vectors (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        digest BLOB NOT NULL UNIQUE,
        refs INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE VIRTUAL TABLE fts USING fts5(tokens, content='', contentless_delete=1);
    CREATE TABLE index_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    INSERT INTO index_queue SELECT id, 0 FROM inodes WHERE nlink > 0 AND (mode & 61440) = 32768;
    """,
))

MIGRATIONS.append((
    3,
    "secrets (inode flags) and store settings",
    """
    ALTER TABLE inodes ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE settings (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    """,
))

MIGRATIONS.append((
    4,
    "index_meta as a rowid table, so a large snapshot value no longer slows key lookups",
    """
    CREATE TABLE index_meta_v4 (key TEXT PRIMARY KEY, value);
    INSERT INTO index_meta_v4 SELECT key, value FROM index_meta;
    DROP TABLE index_meta;
    ALTER TABLE index_meta_v4 RENAME TO index_meta;
    """,
))

MIGRATIONS.append((
    5,
    "metadata integrity: inode and entry MACs, block tags and per-file block sums, the store root",
    """
    ALTER TABLE inodes ADD COLUMN bsum BLOB;
    ALTER TABLE inodes ADD COLUMN mac BLOB;
    ALTER TABLE dentries ADD COLUMN mac BLOB;
    ALTER TABLE blocks ADD COLUMN tag BLOB;
    UPDATE blocks SET tag = substr(data, -16, 16);
    CREATE INDEX blocks_tags ON blocks (ino, idx, tag);
    """,
))

KEYED = frozenset({5})
"""Migrations whose SQL is followed, in the same transaction, by a step that needs the store's key (the caller of
`Database.migrate` passes it)."""

LATEST = MIGRATIONS[-1][0]
