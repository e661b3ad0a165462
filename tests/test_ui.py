"""mountd/ui.py: the one size parser (bytes and counts) and the plain-line progress CI logs and scripts read."""

from __future__ import annotations

import pytest

from clawfs.errors import UserError
from mountd.ui import Progress, parse_counts, parse_size


@pytest.mark.parametrize(("text", "size"), [("4096", 4096), ("16K", 16384), ("16kb", 16384), ("16KiB", 16384),
                                            ("16 K", 16384), ("2M", 2 << 20), ("1g", 1 << 30)])
def test_bytes_are_binary(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "", "K", "1x", "-1"])
def test_bad_bytes(text: str) -> None:
    with pytest.raises(UserError, match="cannot read size"):
        parse_size(text)


def test_counts_are_decimal() -> None:
    assert parse_counts("10k,100k,1M,1.5k", "--sizes") == (10_000, 100_000, 1_000_000, 1500)
    assert parse_counts(None, "--sizes") is None
    for bad in ("10q", "1g", "10kb"):
        with pytest.raises(UserError, match=f"cannot read --sizes '{bad}': use counts of things"):
            parse_counts(bad, "--sizes")
    with pytest.raises(UserError, match="'0' is not a positive count"):
        parse_counts("0", "--sizes")


def test_counted_lines_every_tenth_and_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(every_items=5000, label="clawfs: migrate: ") as p:
        p.start("documents", 60)
        for _ in range(25):
            p.advance("documents", 3)  # past the total: the lines follow the rows, as counted
        p.advance("unknown", 1)  # a task never started is ignored
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "clawfs: migrate: documents 6/60" and "clawfs: migrate: documents 60/60" in lines
    assert len(lines) == 12  # 6, 12, ..., 60 and 66, 72 (each a new tenth)


def test_disabled_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(enabled=False) as p:
        p.start("x", 10)
        p.advance("x", 10)
        p.log("hidden")
    assert capsys.readouterr() == ("", "")


def test_timed_lines_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(every_s=3600) as p:
        p.start("sweep", 10, "sweeping")
        p.advance("sweep", 1, description="searching")  # within every_s: no second line
        p.log("a note")
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith(" sweeping (0/10)") and err[1] == "a note" and len(err) == 2
