"""The embedded sample data (data/digits*) and the embedded backbone (data/backbone/).

The data must be what tools/make_sample_data.py writes, in the layout the demo and the recipes point
at; the backbone must load through `tltoolkit.build` and carry features that transfer to digits it
was never trained on.
"""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
BACKBONE = DATA / "backbone" / "digits04_resnet20_cifar.weights.h5"
RECORD = BACKBONE.with_name("digits04_resnet20_cifar.json")
FOLDERS = {"digits04": "01234", "digits04-test": "01234", "digits59": "56789", "digits59-test": "56789"}

sys.path.insert(0, str(ROOT / "tools"))
import make_sample_data  # noqa: E402


def png_files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.glob("digits*/*/*.png"))}


def pixel_hash(path: Path) -> str:
    with Image.open(path) as image:
        return hashlib.sha256(image.mode.encode() + np.asarray(image).tobytes()).hexdigest()


def test_generator_is_deterministic_and_matches_the_committed_files(tmp_path):
    make_sample_data.main(["--out", str(tmp_path / "a")])
    make_sample_data.main(["--out", str(tmp_path / "b")])
    first, second, committed = png_files(tmp_path / "a"), png_files(tmp_path / "b"), png_files(DATA)
    assert len(first) == 1797
    assert list(first) == list(second) == list(committed)
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes(), name
    # Pixels, not bytes: another zlib build may compress the same pixels differently.
    assert [pixel_hash(p) for p in first.values()] == [pixel_hash(p) for p in committed.values()]


def test_layout_counts_and_image_format():
    from sklearn.datasets import load_digits

    expected = collections.Counter(load_digits().target.tolist())
    files = png_files(DATA)
    per_class = collections.Counter(Path(name).parts[1] for name in files)
    assert per_class == {str(digit): count for digit, count in expected.items()}
    indices = collections.defaultdict(set)
    for name in files:
        folder, label, file = Path(name).parts
        assert label in FOLDERS[folder], name
        indices[folder].add(int(file.removesuffix(".png")))
    for half in ("digits04", "digits59"):
        assert all(i % 5 == 0 for i in indices[f"{half}-test"])
        assert not any(i % 5 == 0 for i in indices[half])
    assert sorted(set().union(*indices.values())) == list(range(1797))
    for path in list(files.values())[::97]:
        with Image.open(path) as image:
            assert (image.format, image.size, image.mode) == ("PNG", (32, 32), "RGB")
            pixels = np.asarray(image)
        assert pixels.max() == 255 and pixels.min() < 128  # white paper, dark ink
        assert (pixels == pixels[..., :1]).all()  # grey
        assert (pixels == pixels[::4, ::4].repeat(4, 0).repeat(4, 1)).all()  # nearest-neighbour 4x4 blocks


def test_each_folder_is_a_clean_dataset_for_tltoolkit(tmp_path):
    from tltoolkit.data import scan
    from tltoolkit.pipeline import image_dataset

    for folder, classes in FOLDERS.items():
        result = scan(DATA / folder, cache_dir=tmp_path)
        assert result.class_index == {c: i for i, c in enumerate(classes)}
        assert (result.table["status"] == "ok").all(), result.table["status"].value_counts().to_dict()
    images, labels = next(iter(image_dataset(result.usable(), 32, batch_size=8)))
    assert images.shape == (8, 32, 32, 3) and images.dtype.name == "uint8"


def test_generator_refuses_to_replace_without_force(tmp_path):
    make_sample_data.main(["--out", str(tmp_path), "--size", "8"])
    marker = tmp_path / "digits59" / "5" / "mine.txt"
    marker.write_text("a user's file")
    with pytest.raises(SystemExit, match="pass --force"):
        make_sample_data.main(["--out", str(tmp_path), "--size", "8"])
    assert marker.exists()
    make_sample_data.main(["--out", str(tmp_path), "--size", "16", "--force"])
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FOLDERS)  # no temporary folders left
    with Image.open(next((tmp_path / "digits59" / "5").glob("*.png"))) as image:
        assert image.size == (16, 16)


def test_backbone_record_matches_the_weights_file():
    from tltoolkit.architectures.weights import file_digest

    record = json.loads(RECORD.read_text())
    assert record["weights_file"] == BACKBONE.name
    assert record["weights_sha256"] == file_digest(BACKBONE, "sha256")
    assert record["arch"] == "resnet20_cifar" and record["classes"] == list("01234")
    assert record["test_data"] == "data/digits04-test" and record["test_images"] == 182
    assert record["test_accuracy"] >= 0.9
    assert record["command"].startswith("python tools/train_backbone.py")


def test_backbone_loads_into_the_base_and_under_a_new_head():
    import keras

    from tltoolkit import build

    keras.utils.set_random_seed(0)
    random = build("resnet20_cifar", include_top=False, input_shape=(32, 32, 3))
    loaded = build("resnet20_cifar", weights=str(BACKBONE), include_top=False, input_shape=(32, 32, 3))
    conv = "conv4_block3_2_conv"
    assert not np.allclose(random.get_layer(conv).kernel.numpy(), loaded.get_layer(conv).kernel.numpy())
    classifier = build("resnet20_cifar", weights=str(BACKBONE), num_classes=5)  # the base loads, the head is new
    np.testing.assert_array_equal(classifier.get_layer(conv).kernel.numpy(), loaded.get_layer(conv).kernel.numpy())
    assert classifier.get_layer("predictions").kernel.shape == (64, 5)


def pooled_features(weights, rows) -> tuple[np.ndarray, np.ndarray]:
    """The backbone's global-average-pooled features (what a head-only fine-tune trains on) and labels."""
    from tltoolkit.features.extractor import feature_extractor
    from tltoolkit.pipeline import image_dataset

    extractor = feature_extractor("resnet20_cifar", weights=weights, seed=0)
    batches = image_dataset(rows, 32, batch_size=256, dtype="float32", deterministic=True)
    pairs = [(extractor(images), labels.numpy()) for images, labels in batches]
    features = np.concatenate([f for f, _ in pairs])
    assert np.isfinite(features).all() and features.std(axis=0).max() > 0  # real, varied features
    return features, np.concatenate([y for _, y in pairs])


def test_backbone_features_transfer_to_unseen_digits(tmp_path):
    """A linear probe on digits 5-9 (never seen by the backbone) with 10 and 20 labelled images per
    class, averaged over 5 draws: pretrained features beat those of the same network randomly
    initialised (a strong baseline: random conv features are far from useless)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tltoolkit.data import scan

    train = scan(DATA / "digits59", cache_dir=tmp_path).usable().reset_index(drop=True)
    test = scan(DATA / "digits59-test", cache_dir=tmp_path).usable()
    features = {name: (pooled_features(weights, train), pooled_features(weights, test))
                for name, weights in (("pretrained", str(BACKBONE)), ("random init", None))}
    for per_class in (10, 20):
        means = {}
        for name, ((x_train, y_train), (x_test, y_test)) in features.items():
            scores = []
            for draw in range(5):
                chosen = train.groupby("label").sample(per_class, random_state=draw).index
                probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
                scores.append(probe.fit(x_train[chosen], y_train[chosen]).score(x_test, y_test))
            means[name] = float(np.mean(scores))
        print(f"linear probe, digits 5-9, {per_class} images/class: "
              + ", ".join(f"{name} {mean:.3f}" for name, mean in means.items()))
        assert means["pretrained"] > means["random init"]


def test_train_backbone_tool_writes_a_loadable_backbone(tmp_path):
    data = tmp_path / "data"
    for folder in ("digits04", "digits04-test"):
        for label in "01234":
            for path in sorted((DATA / folder / label).glob("*.png"))[:6]:
                (data / folder / label).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, data / folder / label / path.name)
    command = [sys.executable, str(ROOT / "tools" / "train_backbone.py"), "--epochs", "1", "--batch-size", "10",
               "--data", str(data), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "source accuracy on" in done.stdout
    record = json.loads((tmp_path / "out" / "digits04_resnet20_cifar.json").read_text())
    assert (record["train_images"], record["test_images"], record["epochs"]) == (30, 30, 1)
    assert 0.0 <= record["test_accuracy"] <= 1.0
    from tltoolkit import build

    build("resnet20_cifar", weights=str(tmp_path / "out" / record["weights_file"]), include_top=False)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "pass --force" in again.stderr
