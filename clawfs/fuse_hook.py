"""fallocate(2) for the FUSE mount, which pyfuse3 (3.5.0, the newest) does not pass on: libfuse answers the
kernel's FUSE_FALLOCATE with ENOSYS when its session has no `fallocate` operation, and the kernel then fails
every later fallocate with EOPNOTSUPP.

After `pyfuse3.init` made its libfuse session, this module puts a `fallocate` operation into that session's copy
of the operations table: a ctypes callback that calls the handler given (synchronously, in the request loop's
thread, as pyfuse3 calls its own handlers: `fuse_session_process_buf` runs in the loop with the GIL held) and
answers with `fuse_reply_err`.  The session pointer and pyfuse3's own table are found by their symbols in
pyfuse3's extension module (it ships unstripped); the session's copy of the table is found by content (the same
function pointers), so no libfuse struct layout but the public `fuse_lowlevel_ops` is assumed.  When any of this
cannot be found, fallocate stays unsupported (EOPNOTSUPP, as before) and the reason is logged.

This module imports no pyfuse3: clawfs/fuse_ops.py passes the extension module's path.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
from collections.abc import Callable

log = logging.getLogger("clawfs.fuse")

FALLOCATE_OFFSET = 320
"""offsetof(struct fuse_lowlevel_ops, fallocate): the 41st operation, fixed since libfuse 3.0 (the struct only
grows at its end)."""
FILE_INFO_FH_OFFSET = 16
"""offsetof(struct fuse_file_info, fh) in libfuse 3 (an int, two 32-bit bitfield words, then the handle)."""
SESSION_SEARCH_BYTES = 1024  # the operations table sits near the start of struct fuse_session
_SESSION_SYMBOL = b"__pyx_v_7pyfuse3_session"
_OPS_SYMBOL = b"__pyx_v_7pyfuse3_fuse_ops"

FallocateFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_int64,
                               ctypes.c_int64, ctypes.c_void_p)
Handler = Callable[[int, int, int, int], int]
"""(file handle, mode, offset, length) -> 0 or an errno."""

_keep: list[object] = []  # the callback must outlive the session: ctypes frees it with its last reference


def _symbols(path: str, wanted: set[bytes]) -> dict[bytes, int]:
    """Values of the named symbols in the ELF64 file's .symtab (local symbols included)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    found: dict[bytes, int] = {}
    for sh in sections:
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        strtab = sections[sh[6]]
        str_off, sym_off, count = strtab[4], sh[4], sh[5] // 24
        for i in range(count):
            name_idx, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, sym_off + i * 24)
            start = str_off + name_idx
            name = data[start:data.index(b"\0", start)]
            if name in wanted:
                found[name] = value
    return found


def _load_base(path: str) -> int | None:
    """Where the shared object at `path` is mapped in this process (its mapping at file offset 0)."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == real and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    return None


def install_fallocate(extension_path: str, handler: Handler) -> bool:
    """Give the live pyfuse3 session a fallocate operation calling `handler`; False (logged) if it cannot."""
    try:
        return _install(extension_path, handler)
    except (OSError, ValueError, struct.error) as e:
        log.warning("fallocate stays unsupported on this mount: %s", e)
        return False


def _install(extension_path: str, handler: Handler) -> bool:
    syms = _symbols(extension_path, {_SESSION_SYMBOL, _OPS_SYMBOL})
    base = _load_base(extension_path)
    if len(syms) != 2 or base is None:
        log.warning("fallocate stays unsupported: pyfuse3's session symbols were not found in %s", extension_path)
        return False
    session = ctypes.c_void_p.from_address(base + syms[_SESSION_SYMBOL]).value
    if not session:
        raise ValueError("pyfuse3 has no session yet")
    ops = ctypes.string_at(base + syms[_OPS_SYMBOL], FALLOCATE_OFFSET)
    here = ctypes.string_at(session, SESSION_SEARCH_BYTES)
    at = here.find(ops)
    if at < 0 or at % 8:
        log.warning("fallocate stays unsupported: the session's operations table was not found")
        return False
    slot = ctypes.c_void_p.from_address(session + at + FALLOCATE_OFFSET)
    if slot.value:
        log.warning("fallocate stays unsupported: the session already has a fallocate operation")
        return False
    libfuse = ctypes.CDLL("libfuse3.so.3")
    reply_err = libfuse.fuse_reply_err
    reply_err.argtypes, reply_err.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int

    def on_fallocate(req: int, ino: int, mode: int, offset: int, length: int, fi: int) -> None:
        try:
            fh = ctypes.c_uint64.from_address(fi + FILE_INFO_FH_OFFSET).value if fi else 0
            err = handler(fh, mode, offset, length)
        except Exception:  # a callback must not raise into C: answered EIO, as every other handler
            log.exception("unexpected error in fallocate; answered EIO")
            err = errno.EIO
        reply_err(req, err)

    callback = FallocateFn(on_fallocate)
    _keep.append(callback)
    slot.value = ctypes.cast(callback, ctypes.c_void_p).value
    return True
