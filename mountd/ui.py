"""What every `clawfs` command shows on the terminal besides its result: progress on stderr, and the one parser of
sizes given on the command line (bytes and counts).

Progress is a rich bar on a terminal; elsewhere (CI logs, pipes) plain lines, either at most every `every_s`
seconds or each time a share of the total completes; nothing at all when disabled (tests, `--json`, `--no-progress`).
Library code (the HNSW tuner in clawfs/index/tuning/, the IronClaw migrator) takes any object with the same
methods (structural typing), so it never imports this module: layers point down.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from clawfs.errors import UserError
from kernel import tpm

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress


@dataclass
class _Task:
    description: str
    done: float
    total: float | None
    rich_id: Any = None


class Progress:
    """Progress of named tasks on stderr (see the module docstring).

    `every_s`: in plain mode, a line when a task starts, then at most every that many seconds (long runs in CI).
    `every_items`: in plain mode, instead a line each time that many items (or a tenth of the total, if fewer)
    complete, and at the end; `label` then prefixes each line ("clawfs: migrate: "), which reads
    "<label><name> <done>/<total>" (what scripts and tests parse).  `transient`: the bar disappears when closed."""

    def __init__(self, enabled: bool = True, *, transient: bool = False, every_s: float = 15.0,
                 every_items: int | None = None, label: str = "") -> None:
        self.enabled = enabled
        self._every_s, self._every_items, self._label = every_s, every_items, label
        self._tasks: dict[str, _Task] = {}
        self._last_line = 0.0
        self._console: Console | None = None
        self._bar: RichProgress | None = None
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True)
            if self._console.is_terminal:
                self._bar = _rich_bar(self._console, transient)
                self._bar.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, name: str, total: float | None, description: str | None = None) -> None:
        """Begin (or restart) task `name` of `total` items (None: unknown, a spinner)."""
        task = self._tasks[name] = _Task(description or name, 0.0, total)
        if self._bar is not None:
            task.rich_id = self._bar.add_task(task.description, total=total)
        elif self.enabled and self._every_items is None:
            self._timed_line(task, force=True)

    def advance(self, name: str, n: float = 1, *, description: str | None = None) -> None:
        """`n` more items of task `name` done (and its description changed, when given)."""
        task = self._tasks.get(name)
        if task is None or not self.enabled:
            return
        before = task.done
        task.done += n
        task.description = description or task.description
        if self._bar is not None:
            self._bar.update(task.rich_id, advance=n, description=task.description)
        elif self._every_items is None:
            self._timed_line(task)
        else:
            self._counted_line(name, task, before)

    def finish(self, name: str) -> None:
        """Show task `name` complete (its total was an estimate, or None for a spinner)."""
        task = self._tasks.get(name)
        if task is not None and self._bar is not None:
            total = task.total or max(task.done, 1)
            self._bar.update(task.rich_id, total=total, completed=total)

    def log(self, message: str) -> None:
        """One line of text on stderr (above the bar on a terminal); nothing when disabled."""
        if self._console is not None:
            self._console.print(message, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _timed_line(self, task: _Task, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_line >= self._every_s:
            self._last_line = now
            of = f" ({task.done:,.0f}/{task.total:,.0f})" if task.total else ""
            self.log(f"{time.strftime('%H:%M:%S')} {task.description}{of}")

    def _counted_line(self, name: str, task: _Task, before: float) -> None:
        total = int(task.total or 0)
        step = max(1, min(self._every_items or 1, total // 10))
        if int(task.done) // step != int(before) // step or int(task.done) == total:
            print(f"{self._label}{name} {int(task.done)}/{total}", file=sys.stderr, flush=True)


def _rich_bar(console: Console, transient: bool) -> RichProgress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    return RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=transient)


# ---- sizes ---------------------------------------------------------------------------------------------------

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?$")


def parse_size(text: str, *, option: str | None = None, counts: bool = False) -> int:
    """A size given on the command line.  Bytes by default: '64K', '2MiB', '1.5G', '4096' (K, M and G are powers
    of 1024, a trailing B or iB is allowed).  With `counts`: numbers of things, '10k', '1.5M' (powers of 1000, no
    B).  A UserError names `option` and the fix when the text is neither."""
    t = text.strip().lower()
    m = _SIZE.match(t)
    if m is None or (counts and (m.group(3) or m.group(2) == "g")):
        if counts:
            raise UserError(f"cannot read {option or 'count'} {text!r}: use counts like 10k,100k,1M")
        raise UserError(f"cannot read size {text!r}: use a number with an optional K, M or G suffix")
    base = 1000 if counts else 1024
    return int(float(m.group(1)) * base ** " kmg".index(m.group(2) or " "))


def parse_counts(text: str | None, option: str, of: str = "things") -> tuple[int, ...] | None:
    """'10k,100k,1M' -> (10000, 100000, 1000000) (decimal units, as counts of `of` go); None for no text."""
    if not text:
        return None
    values = []
    for part in text.split(","):
        try:
            value = parse_size(part, option=option, counts=True)
        except UserError:
            raise UserError(f"cannot read {option} {text!r}: use counts of {of} like 10k,100k,1M") from None
        if value < 1:
            raise UserError(f"{option}: {part.strip()!r} is not a positive count")
        values.append(value)
    return tuple(values)


def run_command(group: click.Group, argv: list[str] | None, prog_name: str) -> None:
    """Run a click group as a program: each error one line on stderr and its exit code (UserError's own, 1 for
    TPM and OS errors, 130 when interrupted), the command's int return value as the exit status."""
    try:
        rv = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except UserError as e:
        click.echo(f"clawfs: {e}", err=True)
        sys.exit(e.exit_code)
    except tpm.TpmError as e:
        click.echo(f"clawfs: TPM: {e}", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("clawfs: interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        logging.getLogger("clawfs").debug("OS error", exc_info=True)
        click.echo(f"clawfs: {e}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
