"""Writing files so that a reader never sees half of one, and where caches live."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yields a temporary path in `path`'s folder; on success it replaces `path` in one rename, so a
    crash leaves either the old file or the new one, never a torn one. `suffix` ends the temporary
    name, for writers that insist on one (Keras: `.keras`, `.weights.h5`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/tltoolkit` (`~/.cache/tltoolkit` when unset), as the XDG spec asks."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tltoolkit"
