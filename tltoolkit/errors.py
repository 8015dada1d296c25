"""The one exception type users see as a one-line message (the CLI prints it and exits with 2), and
`one_line`, which shortens another library's exception into such a message.

Set `TLTOOLKIT_DEBUG=1` to have the CLI raise instead, with the full traceback of the exception the
message was made from.
"""

from __future__ import annotations

import errno
import os


class TltoolkitError(Exception):
    """Bad input or an unavailable resource: the message names the problem and the fix, on one line."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """`error`'s message on one line (whitespace collapsed, at most `limit` characters), or its type's
    name when it has no message."""
    text = " ".join(str(error).split())
    return text[:limit] if text else type(error).__name__


# What the disk refused, and the fix; any other OSError is a bug and keeps its traceback.
_DISK_FIXES = {errno.ENOSPC: "free space there or choose another folder",
               errno.EDQUOT: "free space there or choose another folder",
               errno.EROFS: "the file system is read-only: choose a writable folder",
               errno.EACCES: "check its permissions or choose another folder",
               errno.EPERM: "check its permissions or choose another folder",
               errno.ENOTDIR: "a file stands where a folder is needed: move it or choose another folder",
               errno.EEXIST: "a file stands where a folder is needed: move it or choose another folder"}


def disk_error(error: BaseException) -> TltoolkitError | None:
    """A failure of the disk (full, read-only, not writable, a file where a folder goes) as a one-line
    error naming where, with the original as its cause; None for anything else. TensorFlow and h5py
    report a full disk in their own exception types, recognised by their message."""
    number = getattr(error, "errno", None)
    if number not in _DISK_FIXES:
        text = str(error)
        number = next((n for n in (errno.ENOSPC, errno.EROFS) if os.strerror(n) in text), None)
        if number is None:
            return None
    where = getattr(error, "filename", None)
    what = f"cannot write {where}" if where else f"a write failed ({one_line(error, 120)})"
    disk = TltoolkitError(f"{what}: {os.strerror(number).lower()}; {_DISK_FIXES[number]}")
    disk.__cause__ = error
    return disk


def debugging() -> bool:
    """Whether `TLTOOLKIT_DEBUG` asks for full tracebacks instead of one-line errors."""
    return os.environ.get("TLTOOLKIT_DEBUG", "") not in ("", "0")
