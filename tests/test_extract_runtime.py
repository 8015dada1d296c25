"""`tltoolkit extract` on another CPU runtime or precision (tltoolkit.runtimes): the runtime is part of
the feature-cache key, and the features match TensorFlow's on real files through the real pipeline."""

import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cpu import TOLERANCE, reduced_precision
from tltoolkit.cli import main
from tltoolkit.features.extractor import FeatureSpec
from tltoolkit.runtimes import INFERENCE_PRECISIONS, INSTALL

# Keys computed on main before runtimes were wired in (d4274d5): the default runtime must keep them.
OLD_KEYS = {
    FeatureSpec(arch="resnet20_cifar", weights="random-init:0", image_size=(32, 32), resize="center_crop",
                preprocessing="torch", cut="avg_pool", pooling=None, dtype="float32"):
        "resnet20_cifar-187c0c91f1678603a7679c4f",
    FeatureSpec(arch="resnet50", weights="imagenet:abc", image_size=(224, 224), resize="pad", preprocessing="caffe",
                cut="conv4", pooling="avg", dtype="float16", views=2, augmentation="light", seed=3):
        "resnet50-7ef667c92fcab308d5d110d9",
}


def test_the_default_runtime_keeps_every_old_key_and_another_precision_gets_its_own():
    for spec, key in OLD_KEYS.items():
        assert spec.key() == key
        assert dataclasses.replace(spec, runtime={"runtime": "tf", "precision": "fp32"}).key() == key
        bf16 = dataclasses.replace(spec, runtime={"runtime": "openvino", "precision": "bf16", "openvino": "2026.4.1",
                                                  "inference_precision": "bf16"})
        fp32 = dataclasses.replace(bf16, runtime={**bf16.runtime, "precision": "fp32", "inference_precision": "f32"})
        assert len({key, bf16.key(), fp32.key()}) == 3
        assert bf16.to_json()["runtime"]["precision"] == "bf16" and "runtime" not in spec.to_json()


ROOT = Path(__file__).resolve().parents[1]
BACKBONE = str(ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5")
ARCH = "resnet20_cifar"


@pytest.fixture()
def digits(tmp_path, monkeypatch):
    """A real folder: 7 digit images of each of 5..7 (32x32 PNGs), for the embedded backbone."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the scan's own cache
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep sys.stderr pytest's across main() calls
    for digit in ("5", "6", "7"):
        (tmp_path / "data" / digit).mkdir(parents=True)
        for file in sorted((ROOT / "data" / "digits59" / digit).glob("*.png"))[:7]:
            shutil.copy(file, tmp_path / "data" / digit / file.name)
    return tmp_path


def extract(folder, out, *flags):
    return main(["extract", "--base", ARCH, "--weights", BACKBONE, "--data", str(folder / "data"), "--out",
                 str(folder / out), "--cache-dir", str(folder / "cache"), "--batch-size", "8", "--quiet", *flags])


def features_and_metadata(folder, out):
    frame = pd.read_parquet(folder / out).sort_values("sha256").reset_index(drop=True)
    return frame, np.stack(frame["features"].to_numpy()), json.loads((folder / out / "_extract.json").read_text())


def test_openvino_fp32_matches_tensorflow_in_its_own_cache_entry(digits, capsys):
    assert extract(digits, "tf") == 0
    assert extract(digits, "openvino", "--runtime", "openvino", "--precision", "fp32") == 0
    # Its own entry (the identity names the runtime and its version): all 21 images computed again.
    assert "computed 21 of 21 image(s)" in capsys.readouterr().err
    tf_rows, tf_features, tf_meta = features_and_metadata(digits, "tf")
    ov_rows, ov_features, ov_meta = features_and_metadata(digits, "openvino")
    assert list(tf_rows["sha256"]) == list(ov_rows["sha256"]) and tf_features.shape == (21, 64)
    np.testing.assert_allclose(ov_features, tf_features, rtol=1e-4, atol=1e-4)
    assert tf_meta["runtime"] == {"runtime": "tf", "precision": "fp32"}
    assert ov_meta["runtime"]["runtime"] == "openvino" and ov_meta["runtime"]["inference_precision"] == "f32"
    assert ov_meta["cache_key"] != tf_meta["cache_key"] and "fidelity" not in ov_meta
    # A re-run hits that entry.
    assert extract(digits, "openvino", "--runtime", "openvino", "--force") == 0
    assert "computed 0 of 21 image(s)" in capsys.readouterr().err


def test_a_reduced_precision_records_its_fidelity_and_keys_apart_from_fp32(digits, capsys):
    precision = reduced_precision()
    assert extract(digits, precision, "--runtime", "openvino", "--precision", precision) == 0
    err = capsys.readouterr().err
    _, features, meta = features_and_metadata(digits, precision)
    assert meta["runtime"]["precision"] == precision
    assert meta["runtime"]["inference_precision"] == INFERENCE_PRECISIONS[precision]
    assert meta["fidelity"] in err and meta["fidelity"].startswith("features vs TensorFlow fp32 on 21 images")
    cosine_mean = float(re.search(r"cosine mean ([0-9.]+)", meta["fidelity"]).group(1))
    assert 0.99 < cosine_mean <= 1.0
    assert extract(digits, "tf") == 0
    _, tf_features, tf_meta = features_and_metadata(digits, "tf")
    assert meta["cache_key"] != tf_meta["cache_key"]
    # Close to fp32, not equal to it.
    assert not np.array_equal(features, tf_features)
    np.testing.assert_allclose(features, tf_features, atol=TOLERANCE[precision] * np.abs(tf_features).max())


def test_a_missing_openvino_is_one_line_naming_the_extra(digits, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` does where it is not installed
    assert extract(digits, "out", "--runtime", "openvino") == 2
    assert f"needs the openvino package: {INSTALL}" in capsys.readouterr().err
    assert not (digits / "out").exists()


def test_refusals_are_one_line_and_write_nothing(digits, capsys):
    assert extract(digits, "out", "--precision", "bf16") == 2
    assert "precision bf16 runs on OpenVINO: add --runtime openvino" in capsys.readouterr().err
    assert extract(digits, "out", "--runtime", "openvino", "--views", "2", "--augment", "flip") == 2
    assert "--views runs its augmentation on TensorFlow" in capsys.readouterr().err
    assert not (digits / "out").exists()


@pytest.mark.slow
def test_the_ray_engine_runs_the_drivers_runtime_in_each_actor(digits, capsys):
    import ray

    precision = reduced_precision()
    reduced = ("--runtime", "openvino", "--precision", precision)
    assert extract(digits, "local", *reduced) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:  # its own cache: the actors compute every image
        assert main(["extract", "--base", ARCH, "--weights", BACKBONE, "--data", str(digits / "data"), "--out",
                     str(digits / "ray"), "--cache-dir", str(digits / "ray-cache"), "--batch-size", "8", "--quiet",
                     "--engine", "ray", "--workers", "2", *reduced]) == 0
    finally:
        ray.shutdown()
    assert "computed 21 of 21 image(s)" in capsys.readouterr().err
    local_rows, local_features, local_meta = features_and_metadata(digits, "local")
    ray_rows, ray_features, ray_meta = features_and_metadata(digits, "ray")
    assert list(local_rows["sha256"]) == list(ray_rows["sha256"])
    # The same compiled model in each actor: the local engine's reduced-precision features, not fp32's.
    np.testing.assert_allclose(ray_features, local_features, rtol=1e-6, atol=1e-6)
    assert ray_meta["engine"] == "ray" and ray_meta["runtime"] == local_meta["runtime"]
    assert ray_meta["cache_key"] == local_meta["cache_key"] and ray_meta["runtime"]["precision"] == precision
    assert extract(digits, "tf") == 0
    assert not np.allclose(features_and_metadata(digits, "tf")[1], ray_features, rtol=1e-6, atol=1e-6)


def test_int8_calibrates_on_the_folders_own_images_and_says_when_none_are_held_out(digits, capsys):
    assert extract(digits, "int8", "--runtime", "openvino", "--precision", "int8") == 0
    frame, features, meta = features_and_metadata(digits, "int8")
    # 21 images, fewer than the 300 a calibration takes: all of them, named by their hashes.
    assert sorted(meta["runtime"]["calibration"]) == sorted(frame["sha256"])
    assert meta["runtime"]["precision"] == "int8" and "nncf" in meta["runtime"]
    assert meta["fidelity"].endswith("(on calibration images: none held out)")
    assert float(re.search(r"cosine mean ([0-9.]+)", meta["fidelity"]).group(1)) > 0.9
    assert features.shape == (21, 64) and np.isfinite(features).all()


def test_samples_are_seeded_capped_held_out_and_decoded_like_extraction(digits):
    from tltoolkit.data import scan
    from tltoolkit.features.extractor import sample_images
    from tltoolkit.pipeline import image_dataset

    table = scan(digits / "data").usable()
    images, hashes = sample_images(table, 5, (32, 32), "center_crop", seed=3)
    assert len(hashes) == len(set(hashes)) == 5 and images.shape == (5, 32, 32, 3)
    assert sample_images(table, 5, (32, 32), "center_crop", seed=3)[1] == hashes
    assert sample_images(table, 5, (32, 32), "center_crop", seed=4)[1] != hashes
    assert not set(sample_images(table, 30, (32, 32), "center_crop", 3, exclude=hashes)[1]) & set(hashes)
    assert len(sample_images(table, 300, (32, 32), "center_crop", 3)[1]) == 21
    rows = table.set_index("sha256").loc[hashes].reset_index()
    decoded = next(iter(image_dataset(rows, (32, 32), 5, dtype="float32", with_labels=False, deterministic=True)))
    np.testing.assert_array_equal(images, decoded.numpy())
