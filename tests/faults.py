"""Real disk faults for tests: a command run in its own user and mount namespace (`unshare -rm`, no
root needed) where a folder is a small tmpfs (a full disk) or a read-only bind mount."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tmpfs(folder, size: str) -> str:
    """The shell line making `folder` a tmpfs of `size` (e.g. "300k"): writes past it fail with ENOSPC."""
    return f"mount -t tmpfs -o size={size} none {shlex.quote(str(folder))}"


def read_only(folder) -> str:
    """The shell line making `folder` read-only (EROFS), its contents kept."""
    folder = shlex.quote(str(folder))
    return f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder}"


def tltoolkit(mounts: list[str], *arguments, after: str = "true") -> subprocess.CompletedProcess:
    """`python -m tltoolkit ARGUMENTS` after the `mounts` lines, in a namespace of its own, then the
    shell line `after` (its output on stdout after the command's), there, before the mounts vanish
    with the namespace. The return code is the command's."""
    run = shlex.join([sys.executable, "-m", "tltoolkit", *map(str, arguments)])
    command = " && ".join([*mounts, f"{{ {run}; status=$?; }}", after, "exit $status"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(["unshare", "-rm", "sh", "-ec", command], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The CLI's error line; fails unless the command exited 2 with exactly one line on stderr."""
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (done.returncode, done.stderr)
    return done.stderr.strip()
