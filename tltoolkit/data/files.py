"""Writing files so that a reader never sees half of one, and where caches live."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from tltoolkit.errors import TltoolkitError


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yields a temporary path in `path`'s folder; on success it replaces `path` in one rename, so a
    crash leaves either the old file or the new one, never a torn one. `suffix` ends the temporary
    name, for writers that insist on one (Keras: `.keras`, `.weights.h5`). The temporary name carries
    this host and process, so the next write of `path` removes what a killed writer (kill -9, power
    loss) left behind on this host: `.model.keras.<host>.<pid>.<random>.keras` of a dead process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path.parent, path.name),
                                         suffix=suffix)
    os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; a shared cache or served model must be readable
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def staging_folder(folder, name: str):
    """Yields a new empty folder inside `folder` to build a set of files in (then renamed into place), named
    and swept of killed writers' leftovers as `atomic_path`'s files are; removed with what is left in it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=_temporary_prefix(folder, name), suffix=".tmp"))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_HOST = socket.gethostname().replace(os.sep, "_")


def _temporary_prefix(folder: Path, name: str) -> str:
    """`.{name}.{host}.{pid}.`: the start of this process's temporary names for `name`, after deleting
    those whose writer, a process on this host, is gone (another host's, or a live process's, stay: their
    writer may still rename them)."""
    prefix = f".{name}.{_HOST}."
    for leftover in folder.glob(f"{glob.escape(prefix)}*"):
        pid = leftover.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return f"{prefix}{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, racing other threads' files)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)


def write_json(path, data) -> None:
    with atomic_path(path) as temporary:
        Path(temporary).write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def read_json(path, default=None):
    """The JSON value in `path`, `default` when there is no such file, a one-line error when it is unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as error:
        raise TltoolkitError(f"cannot read {path} ({error}); fix or delete it") from None


def check_output_dir(path, data, flag: str) -> None:
    """Refuses, before any work, a folder tltoolkit writes (`flag`: --out, --cache-dir) that is a file,
    that cannot be written (a read-only disk), or that is inside the class folders of `data` (the
    next scan would read it as a class made of plots and shards). A complete cache may be read-only."""
    if path is None:
        return
    if Path(path).expanduser().exists() and not Path(path).expanduser().is_dir():
        raise TltoolkitError(f"{flag} {path} is a file; pass a folder")
    existing = next(p for p in [Path(path).expanduser().absolute(), *Path(path).expanduser().absolute().parents]
                    if p.exists())
    if flag != "--cache-dir" and not os.access(existing, os.W_OK):
        raise TltoolkitError(f"{flag} {path} cannot be written ({existing} is read-only or not yours); "
                             f"choose a writable folder")
    if not Path(data).is_dir():
        return
    where, root = Path(path).expanduser().resolve(), Path(data).expanduser().resolve()
    if where == root or root in where.parents:
        raise TltoolkitError(f"{flag} {path} is inside --data {data}: the next scan would read it as data; "
                             f"choose a folder outside {data}")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/tltoolkit` (`~/.cache/tltoolkit` when unset), as the XDG spec asks."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tltoolkit"
