"""Atomic writes (`tltoolkit.data.files`): what a killed writer leaves behind is swept by the next write."""

import subprocess
import sys
import textwrap

from tests.processes import kill_9_when
from tltoolkit.data import files

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tltoolkit.data.files import atomic_path, staging_folder
    out = Path(sys.argv[1])
    with atomic_path(out / "model.keras", suffix=".keras") as temporary, staging_folder(out, "evaluation") as staging:
        Path(temporary).write_bytes(b"half a model")
        (staging / "summary.json").write_text("{}")
        (out / "ready").touch()
        time.sleep(600)  # killed here, mid-write
""")


def test_the_next_write_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    kill_9_when(writer, (tmp_path / "ready").exists, seconds=60)
    left = {p.name for p in tmp_path.glob(".*")}
    assert len(left) == 2 and all(f".{files._HOST}.{writer.pid}." in name for name in left)
    # Another host's temporary file (a shared disk) and a live writer's stay: they may still be renamed.
    other_host = tmp_path / ".model.keras.elsewhere.1.abc.keras"
    live = tmp_path / f".model.keras.{files._HOST}.1.abc.keras"  # pid 1 is alive on any Linux
    other_host.touch(), live.touch()

    files.atomic_write_bytes(tmp_path / "model.keras", b"a whole model")
    with files.staging_folder(tmp_path, "evaluation"):
        pass
    assert (tmp_path / "model.keras").read_bytes() == b"a whole model"
    assert {p.name for p in tmp_path.glob(".*")} == {other_host.name, live.name}
