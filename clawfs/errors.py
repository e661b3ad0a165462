"""Domain errors: the one place that says which errno each failure means.

Everything below the FUSE adapter raises `FsError` subclasses; the adapter turns `.errno` into `FUSEError`.
`UserError` is for the command line: a one-line message that names the problem and the fix, and an exit code.
No message here ever contains key material or plaintext file contents.
"""

from __future__ import annotations

import errno as _errno


class FsError(Exception):
    """A filesystem operation failed with a POSIX errno."""

    errno: int = _errno.EIO

    def __init__(self, message: str = "", *, err: int | None = None) -> None:
        super().__init__(message or _errno.errorcode.get(err or self.errno, "EIO"))
        if err is not None:
            self.errno = err


class NotFound(FsError):
    errno = _errno.ENOENT


class Exists(FsError):
    errno = _errno.EEXIST


class NotEmpty(FsError):
    errno = _errno.ENOTEMPTY


class NotADir(FsError):
    errno = _errno.ENOTDIR


class IsADir(FsError):
    errno = _errno.EISDIR


class Invalid(FsError):
    errno = _errno.EINVAL


class NameTooLong(FsError):
    errno = _errno.ENAMETOOLONG


class NoSpace(FsError):
    errno = _errno.ENOSPC


class NoData(FsError):
    errno = _errno.ENODATA


class NotSupported(FsError):
    errno = _errno.EOPNOTSUPP


class ReadOnly(FsError):
    errno = _errno.EROFS


class PermissionDenied(FsError):
    errno = _errno.EACCES


class Busy(FsError):
    """Another connection held the store's write lock past the busy timeout; retrying later can succeed."""

    errno = _errno.EBUSY


class IntegrityError(FsError):
    """Ciphertext failed authentication: tampered, swapped or moved. Reads as EIO, never as wrong bytes."""

    errno = _errno.EIO


class UserError(Exception):
    """A problem the user can fix. The CLI prints `clawfs: <message>` and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class WrongKey(UserError):
    """No supplied credential opens any key slot."""


class NotAStore(UserError):
    """The path is not a ClawFS store (not SQLite, or SQLite without our application id)."""


class NewerFormat(UserError):
    """The store was written by a newer ClawFS."""


class StoreBusy(UserError):
    """Another process (a mount, fsck, ...) holds the store."""
