"""Extraction jobs on another CPU runtime (tltoolkit.runtimes) as a user runs them: a killed OpenVINO int8
extraction resumes to what a clean one stores, NNCF's output stays off --quiet runs, and a precision the
CPU lacks is refused before anything is written. Real processes, real files, the embedded backbone."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cpu import reduced_precision
from tests.processes import kill_9_when
from tltoolkit.cli import main
from tltoolkit.runtimes import CAPABILITIES_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
BACKBONE = str(ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5")
ARCH = "resnet20_cifar"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def digit_folder(root: Path, per_digit: int) -> Path:
    """Class folders 5..9 with `per_digit` real 32x32 digit PNGs each."""
    for digit in ("5", "6", "7", "8", "9"):
        (root / digit).mkdir(parents=True)
        for file in sorted((ROOT / "data" / "digits59" / digit).glob("*.png"))[:per_digit]:
            shutil.copy(file, root / digit / file.name)
    return root


KILL_SCRIPT = """
import sys, pandas as pd
from tltoolkit.features.extractor import feature_extractor
from tltoolkit.features.local import extract_features
table = pd.read_parquet(sys.argv[1])
extractor = feature_extractor("resnet20_cifar", weights=sys.argv[2], runtime="openvino", precision="int8",
                              calibration=table, batch_size=2, progress=False)
print("calibrated", flush=True)
extract_features(table, extractor, sys.argv[3], batch_size=2, shard_size=2, progress=False)
"""


def int8_extractor(table):
    from tltoolkit.features.extractor import feature_extractor

    return feature_extractor(ARCH, weights=BACKBONE, runtime="openvino", precision="int8", calibration=table,
                             batch_size=2, progress=False)


@pytest.mark.slow
def test_kill_9_during_an_openvino_int8_extraction_then_resume_equals_a_clean_one(tmp_path, monkeypatch):
    from tltoolkit.data import scan
    from tltoolkit.features.cache import FeatureCache
    from tltoolkit.features.local import extract_features

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    table = scan(digit_folder(tmp_path / "data", 40)).usable()
    table.to_parquet(tmp_path / "table.parquet")
    cache_dir = tmp_path / "cache"
    extractor = int8_extractor(table)
    parts = FeatureCache(extractor.spec, cache_dir).folder / "parts"
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "table.parquet"), BACKBONE,
                                str(cache_dir)], cwd=ROOT, env={**ENV, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    kill_9_when(process, lambda: parts.exists() and len(list(parts.glob("*.parquet"))) >= 2)
    done = len(FeatureCache(extractor.spec, cache_dir).manifest())
    assert 0 < done < len(table) == 200

    # The killed process quantised on the same seeded sample: the same key, so the resume continues it.
    cache, stats = extract_features(table, extractor, cache_dir, batch_size=2, progress=False)
    assert stats.computed == len(table) - done
    clean, _ = extract_features(table, int8_extractor(table), tmp_path / "clean-cache", progress=False)
    assert clean.folder.name == cache.folder.name
    resumed_rows, resumed = cache.features(table)
    clean_rows, expected = clean.features(table)
    assert list(resumed_rows["sha256"]) == list(clean_rows["sha256"])
    assert len(cache.manifest()) == len(table) and cache.manifest()["sha256"].is_unique
    np.testing.assert_allclose(resumed, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def cli(*arguments, **env):
    return subprocess.run([sys.executable, "-m", "tltoolkit", *arguments], cwd=ROOT, env={**ENV, **env},
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_quiet_keeps_nncf_and_openvino_output_off_both_streams(tmp_path):
    data = digit_folder(tmp_path / "data", 4)
    common = ["extract", "--base", ARCH, "--weights", BACKBONE, "--data", str(data), "--cache-dir",
              str(tmp_path / "cache"), "--batch-size", "8", "--runtime", "openvino", "--precision", "int8"]
    quiet = cli(*common, "--out", str(tmp_path / "quiet"), "--quiet", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == f"wrote 20 feature vector(s) [64] to {tmp_path / 'quiet'}\n"
    lines = quiet.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("computed 20 of 20 image(s)"), quiet.stderr
    assert lines[1].startswith("features vs TensorFlow fp32 on 20 images")
    # Without --quiet NNCF's bars show, on stderr: stdout stays the one line a script reads.
    shown = cli(*common, "--out", str(tmp_path / "shown"), "--cache-dir", str(tmp_path / "cache2"),
                XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"wrote 20 feature vector(s) [64] to {tmp_path / 'shown'}\n"
    assert "Statistics collection" in shown.stderr


@pytest.mark.parametrize("command", ["extract", "finetune"])
def test_a_precision_the_cpu_lacks_is_refused_in_one_line_before_any_folder_is_made(tmp_path, monkeypatch, capsys,
                                                                                     command):
    monkeypatch.setenv(CAPABILITIES_VARIABLE, "FP32,INT8")  # a CPU without native bf16 (no avx512_bf16)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    data = digit_folder(tmp_path / "data", 2)
    out = ["--out", str(tmp_path / "out")] if command == "extract" else ["--out", str(tmp_path / "run")]
    assert main([command, "--base", ARCH, "--weights", BACKBONE, "--data", str(data), *out, "--cache-dir",
                 str(tmp_path / "cache"), "--runtime", "openvino", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "precision bf16: this CPU has no native BF16" in err and "use --precision fp32" in err
    assert len(err.strip().splitlines()) == 1
    # No feature cache, scan cache, output or run folder (matplotlib, imported by finetune, keeps its own).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "xdg") == ["data"]
    assert not (tmp_path / "xdg" / "tltoolkit").exists()


@pytest.mark.slow
def test_finetune_extracts_phase_1_and_the_cut_cache_on_its_runtime_and_reports_the_fidelity(tmp_path, monkeypatch):
    from tltoolkit.training.finetune import finetune

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    precision = reduced_precision()
    data = digit_folder(tmp_path / "data", 16)
    common = dict(base=ARCH, weights=BACKBONE, data=str(data), cache_dir=str(tmp_path / "cache"), batch_size=8,
                  freeze_until="conv4", epochs=30, fine_tune_epochs=1, augment="none", seed=0)
    fp32 = finetune({**common, "out": str(tmp_path / "fp32")}, progress=False, echo=lambda line: None)
    assert main(["finetune", "--base", ARCH, "--weights", BACKBONE, "--data", str(data), "--out",
                 str(tmp_path / "reduced"), "--cache-dir", str(tmp_path / "cache"), "--batch-size", "8",
                 "--freeze-until", "conv4", "--epochs", "30", "--fine-tune-epochs", "1", "--augment", "none",
                 "--runtime", "openvino", "--precision", precision, "--quiet"]) == 0
    reduced = json.loads((tmp_path / "reduced" / "state.json").read_text())["runs"][-1]
    assert reduced["config"]["runtime"] == "openvino" and reduced["config"]["precision"] == precision
    # Its own cache entries: every image computed again, for phase 1 and for the cut cache.
    assert any(note.startswith("features: computed 80 of 80 images (0 from the cache)") for note in reduced["notes"])
    assert any("trains from the cached output" in note and "computed 80 of 80" in note for note in reduced["notes"])
    runtimes = [json.loads(spec.read_text()).get("runtime", {}) for spec in (tmp_path / "cache").glob("*/spec.json")]
    assert sorted(r.get("precision", "fp32") for r in runtimes) == sorted([precision, precision, "fp32", "fp32"])
    # The fidelity on validation images (calibration is of training images) and phase 1's accuracy.
    note = next(note for note in reduced["notes"] if note.startswith(f"features on openvino {precision}"))
    assert reduced["fidelity"] in note and "features vs TensorFlow fp32 on" in note and "held out" not in note
    accuracy = reduced["phases"][0]["val_accuracy"]
    assert f"phase 1 val_accuracy {accuracy:.3f}" in note
    assert abs(accuracy - fp32["phases"][0]["val_accuracy"]) <= 0.1
    assert note in (tmp_path / "reduced" / "report.md").read_text()
    assert "fidelity" not in fp32 and not any(n.startswith("features on") for n in fp32["notes"])


@pytest.mark.slow  # compiles every runtime this CPU has, int8 calibrated
def test_each_precision_keys_its_own_cache_entry(tmp_path, monkeypatch):
    from tltoolkit.data import scan
    from tltoolkit.features.extractor import feature_extractor, runtime_arguments

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    table = scan(digit_folder(tmp_path / "data", 2)).usable()
    openvino = ["fp32", "bf16", "int8"] if reduced_precision() == "bf16" else ["fp32", "int8"]  # bf16: native only
    specs = {(runtime, precision): feature_extractor(ARCH, weights=BACKBONE, **runtime_arguments(
        runtime, precision, table, 4, progress=False)).spec
             for runtime, precision in [("tf", "fp32"), *(("openvino", p) for p in openvino)]}
    assert len({spec.key() for spec in specs.values()}) == len(specs)
    assert specs["tf", "fp32"].runtime is None  # the default keeps the keys made before runtimes existed
    assert [specs["openvino", p].runtime["precision"] for p in openvino] == openvino
    assert sorted(specs["openvino", "int8"].runtime["calibration"]) == sorted(table["sha256"])
