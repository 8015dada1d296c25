"""The one exception type users see as a one-line message (the CLI prints it and exits with 2), and
`one_line`, which shortens another library's exception into such a message.

Set `TLTOOLKIT_DEBUG=1` to have the CLI raise instead, with the full traceback of the exception the
message was made from.
"""

from __future__ import annotations

import os


class TltoolkitError(Exception):
    """Bad input or an unavailable resource: the message names the problem and the fix, on one line."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """`error`'s message on one line (whitespace collapsed, at most `limit` characters), or its type's
    name when it has no message."""
    text = " ".join(str(error).split())
    return text[:limit] if text else type(error).__name__


def debugging() -> bool:
    """Whether `TLTOOLKIT_DEBUG` asks for full tracebacks instead of one-line errors."""
    return os.environ.get("TLTOOLKIT_DEBUG", "") not in ("", "0")
