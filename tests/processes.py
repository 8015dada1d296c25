"""Killing a real process at a chosen moment, as a crash or `kill -9` would."""

import signal
import time


def kill_9_when(process, ready, seconds: float = 300, poll: float = 0.005) -> None:
    """SIGKILLs `process` as soon as `ready()` is true; fails if it ended first (nothing was killed)."""
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(poll)
    assert process.poll() is None, "the process finished before it could be killed: give it more work"
    process.send_signal(signal.SIGKILL)
    process.wait()
