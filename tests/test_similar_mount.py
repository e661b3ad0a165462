"""`.clawfs/similar/<path>/` through a real mount with the real all-MiniLM-L6-v2 model, driven by ordinary tools.

Five notes on three topics (two about dogs at the vet, two about taxes and invoices, one about gardening) are
written through the mount; once `.clawfs/status` shows them indexed, `ls MNT/.clawfs/similar/<path>/` must list
the note on the same topic first and never the file itself.  The two notes of a topic share almost no words, so
only meaning can pair them.  Also: symlinks reading through to the right file, ENOENT for what is not an indexed
file, the scores xattr and `.results.json`, walking the path from a directory inside `similar/`, and
`clawfs search --similar` through the mount and on the unmounted store.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import safe_unmount
from helpers import StoreFixture, is_mounted, make_store, run
from waiting import wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

INDEX_TIMEOUT = 120.0  # the first file of a mount also loads the model (torch import: seconds)

NOTES = {
    "notes/dog.md": "# Biscuit\n\nOur labrador Biscuit limped home after the walk, so we drove him to the "
                    "veterinarian; she X-rayed the paw and prescribed anti-inflammatory pills for a week.\n",
    "pets/rex-clinic.md": "# Rex\n\nRex the terrier had his yearly check-up at the animal hospital: booster "
                          "shots, flea treatment and a reminder to brush his teeth.\n",
    "money/taxes.md": "# Tax return\n\nSend the annual income declaration to the revenue office before the "
                      "April deadline, with the salary statement and deductible expenses.\n",
    "money/invoices.md": "# Billing\n\nInvoice 2024-017 for the consulting work is due in thirty days; VAT "
                         "added. Remind the client that the March bill is still unpaid.\n",
    "garden.md": "# Vegetable patch\n\nPlanted tomato seedlings and basil in the raised bed, watered them each "
                 "morning and spread straw mulch against the weeds.\n",
}
PAIRS = {"notes/dog.md": "pets/rex-clinic.md", "pets/rex-clinic.md": "notes/dog.md",
         "money/taxes.md": "money/invoices.md", "money/invoices.md": "money/taxes.md"}


def status(mnt: Path) -> dict[str, Any]:
    with open(mnt / ".clawfs" / "status") as f:
        data: dict[str, Any] = json.load(f)
    return data


def up(path: str) -> str:
    """The symlink prefix from `.clawfs/similar/<path>/` back to the mount root."""
    return "../" * (path.count("/") + 3)


def similar(mnt: Path, path: str) -> list[tuple[str, str]]:
    """`ls -1 MNT/.clawfs/similar/PATH/`: (entry, symlink target relative to the mount root), in listed order."""
    rdir = mnt / ".clawfs" / "similar" / path
    proc = subprocess.run(["ls", "-1", str(rdir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ls {rdir} failed: {proc.stderr}"
    out = []
    for entry in proc.stdout.splitlines():
        target = os.readlink(rdir / entry)
        assert target.startswith(up(path)), f"{entry} -> {target}: not relative to the mount root"
        out.append((entry, target[len(up(path)):]))
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StoreFixture, Path]]:
    """NOTES written through an indexed mount and indexed; afterwards unmounted, fsck'd, and searched with
    `clawfs search --similar --store`."""
    store = make_store(tmp_path_factory.mktemp("similar"))
    mnt = store.tmp / "mnt"
    store.mount(mnt, index=True)
    try:
        for path, text in NOTES.items():
            (mnt / path).parent.mkdir(parents=True, exist_ok=True)
            (mnt / path).write_text(text)
        wait_for(lambda: status(mnt), until=lambda st: not st["pending"] and st["files"] == len(NOTES),
                 timeout=INDEX_TIMEOUT, interval=0.1, what="the index to catch up",
                 detail=lambda: store.log_text()[-3000:])
        yield store, mnt
    finally:
        safe_unmount(store, mnt)
    assert not is_mounted(mnt)
    store.assert_clean()
    out = run("search", "--similar", "notes/dog.md", "--store", str(store.path), *store.key_args(), "--json")
    hits = json.loads(out.stdout)["hits"]
    assert hits and hits[0]["path"] == "pets/rex-clinic.md", hits
    missing = run("search", "--similar", "nope.md", "--store", str(store.path), *store.key_args(), check=False)
    assert missing.returncode == 1 and "not an indexed file" in missing.stderr, missing.stderr


def test_same_topic_first_never_itself(home: tuple[StoreFixture, Path]) -> None:
    _, mnt = home
    for path, partner in PAIRS.items():
        hits = similar(mnt, path)
        assert hits, f"nothing similar to {path}"
        assert hits[0] == (f"01-{Path(partner).name}", partner), f"{path}: expected {partner} first, got {hits}"
        assert path not in [t for _, t in hits], f"{path} lists itself: {hits}"
        assert [e for e, _ in hits] == [f"{i:02d}-{Path(t).name}" for i, (_, t) in enumerate(hits, 1)], hits
        link = mnt / ".clawfs" / "similar" / path / hits[0][0]
        assert link.read_text() == NOTES[partner], f"reading through {link} gave another file"
        assert os.path.samefile(link, mnt / partner)


def test_what_is_not_an_indexed_file_is_enoent(home: tuple[StoreFixture, Path]) -> None:
    _, mnt = home
    (mnt / "notes" / "blank.txt").write_bytes(b"")  # a file with nothing to index
    base = mnt / ".clawfs" / "similar"
    for path in ("nope.md", "notes/nope.md", "nope/dog.md", "notes/blank.txt", "garden.md/x"):
        with pytest.raises(OSError) as e:
            os.listdir(base / path)
        assert e.value.errno == errno.ENOENT, f"{path}: {e.value}"
    proc = subprocess.run(["ls", str(base / "missing.md")], capture_output=True, text=True)
    assert proc.returncode != 0 and "No such file" in proc.stderr, proc.stderr
    (mnt / "notes" / "blank.txt").unlink()


def test_scores_xattr_and_results_json(home: tuple[StoreFixture, Path]) -> None:
    _, mnt = home
    path = "money/invoices.md"
    hits = similar(mnt, path)
    rdir = mnt / ".clawfs" / "similar" / path
    lines = os.getxattr(rdir, "user.clawfs.scores").decode().splitlines()
    parsed = [line.split(" ", 2) for line in lines]
    assert [(r, p) for r, _, p in parsed] == [(f"{i:02d}", t) for i, (_, t) in enumerate(hits, 1)], lines
    scores = [float(s) for _, s, _ in parsed]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1.0, scores
    assert ".results.json" not in os.listdir(rdir)
    results = json.loads((rdir / ".results.json").read_text())
    assert [(r["rank"], r["path"]) for r in results] == [(i, t) for i, (_, t) in enumerate(hits, 1)]
    assert all(abs(r["score"] - s) < 2e-6 for r, s in zip(results, scores, strict=True)), (results, scores)
    assert results[0]["snippet"] in " ".join(NOTES[results[0]["path"]].split())


def test_nested_walk_from_inside_similar(home: tuple[StoreFixture, Path]) -> None:
    _, mnt = home
    ctl = mnt / ".clawfs"
    assert sorted(os.listdir(ctl)) == ["audit", "search", "similar", "status"]
    assert (ctl / "similar" / "pets").is_dir()
    proc = subprocess.run(["ls", "-1", "rex-clinic.md"], cwd=ctl / "similar" / "pets", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == "01-dog.md", proc
    proc = subprocess.run(["cat", "rex-clinic.md/01-dog.md"], cwd=ctl / "similar" / "pets", capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout == NOTES["notes/dog.md"], proc
    assert "pets" in os.listdir(ctl / "similar")
    with pytest.raises(OSError) as e:
        os.mkdir(ctl / "similar" / "pets" / "new")
    assert e.value.errno in (errno.EROFS, errno.EACCES)


def test_results_follow_a_rename_and_the_cli_reads_the_mount(home: tuple[StoreFixture, Path]) -> None:
    _, mnt = home
    os.rename(mnt / "money" / "taxes.md", mnt / "money" / "tax-return.md")
    try:
        assert similar(mnt, "money/invoices.md")[0] == ("01-tax-return.md", "money/tax-return.md")
        out = run("search", "--similar", "money/invoices.md", "--mount", str(mnt), "--json", "-k", "1")
        data = json.loads(out.stdout)
        assert [(h["rank"], h["path"]) for h in data["hits"]] == [(1, "money/tax-return.md")], data
        missing = run("search", "--similar", "money/taxes.md", "--mount", str(mnt), check=False)
        assert missing.returncode == 1 and "not an indexed file" in missing.stderr, missing.stderr
    finally:
        os.rename(mnt / "money" / "tax-return.md", mnt / "money" / "taxes.md")


def test_cli_path_and_k_go_through_the_mount(home: tuple[StoreFixture, Path]) -> None:
    """`--path` and `-k` above a result directory's 20 reach the daemon as `.results?k=N&path=P` (a name with
    `?`, `&` and `%` through the kernel) and give what the unmounted store gives."""
    _, mnt = home
    out = run("search", "money owed by a client", "--mount", str(mnt), "--path", "/money/", "-k", "30", "--json")
    found = [h["path"] for h in json.loads(out.stdout)["hits"]]
    assert found and set(found) <= {"money/taxes.md", "money/invoices.md"}, found
    assert found[0] == "money/invoices.md", found
    out = run("search", "--similar", "notes/dog.md", "--mount", str(mnt), "--path", "money", "-k", "25", "--json")
    assert {h["path"] for h in json.loads(out.stdout)["hits"]} <= {"money/taxes.md", "money/invoices.md"}
    qdir = mnt / ".clawfs" / "search" / "our dog saw the vet"
    with open(qdir / ".results?k=2&path=pets", encoding="utf-8") as f:
        assert [h["path"] for h in json.load(f)] == ["pets/rex-clinic.md"]
    assert not [n for n in os.listdir(qdir) if n.startswith(".results")]
    with pytest.raises(FileNotFoundError), open(qdir / ".results?k=0"):
        pass
