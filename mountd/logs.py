"""Logging for the CLI and the mount daemon: stderr in the foreground, a file or syslog once daemonized.
Quiet by default (warnings and errors); `-v` or `-o debug` for more."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

FORMAT = "%(asctime)s clawfs[%(process)d] %(levelname)s %(name)s: %(message)s"


def to_stderr(verbose: bool = False) -> None:
    root = logging.getLogger()
    root.handlers[:] = []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


def default_log_file() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "clawfs", "clawfs.log")


def for_daemon(log_file: str | None, verbose: bool = False) -> str:
    """Route logs for a daemonized mount: `log_file` if given, else syslog if there is one, else the default
    file.  Returns where logs go, for the user."""
    root = logging.getLogger()
    root.handlers[:] = []
    handler: logging.Handler
    if log_file is None and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.setFormatter(logging.Formatter("clawfs[%(process)d]: %(levelname)s %(name)s: %(message)s"))
        where = "syslog"
    else:
        where = log_file or default_log_file()
        os.makedirs(os.path.dirname(os.path.abspath(where)), exist_ok=True)
        handler = logging.FileHandler(where)
        handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return where
