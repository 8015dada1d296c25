"""`--strategy` for real: MirroredStrategy over two logical CPU devices, and MultiWorkerMirroredStrategy
with two local worker processes over loopback; each trains both phases and the run is written once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.test_finetune import make_images
from tltoolkit.errors import TltoolkitError
from tltoolkit.training.distribute import is_chief, make_strategy

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import tensorflow as tf
if {logical_cpus} > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * {logical_cpus})
from tltoolkit.training.finetune import finetune
entry = finetune(json.loads(sys.argv[1]), progress=False, echo=lambda line: None)
print("RESULT " + json.dumps({{k: entry[k] for k in ("replicas", "chief", "status", "run")}}))
"""


def settings(tmp, strategy):
    return {"base": "resnet20_cifar", "weights": "none", "data": str(tmp / "data"), "out": str(tmp / "run"),
            "cache_dir": str(tmp / "cache"), "freeze_until": "conv4", "epochs": 2, "fine_tune_epochs": 2,
            "batch_size": 8, "augment": "none", "strategy": strategy}


def launch(config, logical_cpus=1, tf_config=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, "-c", SCRIPT.format(logical_cpus=logical_cpus), json.dumps(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def result(process, timeout=240):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def written_once(run: Path):
    metrics = pd.read_csv(run / "metrics.csv")
    assert not metrics.duplicated(["run", "phase", "epoch"]).any()
    assert set(metrics["phase"]) == {1, 2}
    state = json.loads((run / "state.json").read_text())
    assert [r["run"] for r in state["runs"]] == [1] and state["runs"][0]["status"] == "finished"
    assert (run / "model.keras").is_file() and not list(run.rglob("*.tmp"))
    # Hidden: only the writer's lock and the one committed artefact set (training/run.py), from the chief.
    assert {p.name for p in run.glob(".*")} == {".lock", ".sets"} and len(list((run / ".sets").iterdir())) == 1


def test_mirrored_on_two_logical_cpus(tmp_path):
    make_images(tmp_path / "data", 8)
    got = result(launch(settings(tmp_path, "mirrored"), logical_cpus=2))
    assert got == {"replicas": 2, "chief": True, "status": "finished", "run": 1}
    written_once(tmp_path / "run")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multiworker_with_two_local_workers(tmp_path):
    make_images(tmp_path / "data", 8)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    config = settings(tmp_path, "multiworker")
    processes = [launch(config, tf_config={"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
                 for i in range(2)]
    chief, other = [result(p) for p in processes]
    assert chief == {"replicas": 2, "chief": True, "status": "finished", "run": 1}
    assert other["replicas"] == 2 and other["chief"] is False
    written_once(tmp_path / "run")


def test_chief_and_strategy_choices(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}}))
    assert is_chief()
    monkeypatch.delenv("TF_CONFIG")
    assert is_chief()
    with pytest.raises(TltoolkitError, match="needs TF_CONFIG"):
        make_strategy("multiworker")
    with pytest.raises(TltoolkitError, match="unknown --strategy 'gpu'"):
        make_strategy("gpu")
    assert make_strategy("auto").num_replicas_in_sync == 1
