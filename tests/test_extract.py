"""Extraction into the feature cache, end to end on real files, a real tf.data pipeline and a real
(tiny) network: resnet20_cifar at 32x32 with weights saved to a local file, so keys hash a real file."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.images import pattern, write_image
from tests.processes import kill_9_when
from tltoolkit.architectures.stages import tail_model
from tltoolkit.cli import main
from tltoolkit.data import scan
from tltoolkit.errors import TltoolkitError
from tltoolkit.features.cache import FeatureCache, cached_dataset
from tltoolkit.features.extractor import feature_extractor
from tltoolkit.features.local import extract_features

ARCH = "resnet20_cifar"


def write_classes(root, per_class=6, seed=0, classes=("cats", "dogs")):
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(os.path.join(root, name, f"{name}_{seed}_{i}.png"), pattern(40, 48, seed=seed * 997 + c * 100 + i))
    return str(root)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import keras

    import tltoolkit

    keras.utils.set_random_seed(1)
    path = tmp_path_factory.mktemp("weights") / "r20.weights.h5"
    tltoolkit.build(ARCH, include_top=True).save_weights(path)
    return str(path)


@pytest.fixture(scope="module")
def extractor(weights):
    return feature_extractor(ARCH, weights=weights)


def usable(folder, tmp_path):
    return scan(folder, cache_dir=tmp_path / "scan-cache").usable()


def direct_features(extractor, table):
    """The extraction model applied to the pipeline's batches in table order, without the cache."""
    from tltoolkit.pipeline import image_dataset

    spec = extractor.spec
    dataset = image_dataset(table, spec.image_size, 64, resize=spec.resize, dtype="float32",
                            with_labels=False, deterministic=True)
    return np.concatenate([extractor.model(images, training=False).numpy() for images in dataset])


def test_cached_features_equal_the_model_and_a_rerun_computes_nothing(tmp_path, extractor):
    table = usable(write_classes(tmp_path / "data"), tmp_path)
    cache, stats = extract_features(table, extractor, tmp_path / "cache", batch_size=5, shard_size=4,
                                    progress=False)
    assert (stats.images, stats.computed) == (12, 12)
    located, features = cache.features(table)
    assert list(located["path"]) == list(table["path"])
    np.testing.assert_allclose(features, direct_features(extractor, table), atol=1e-5)
    assert features.shape == (12, 64)
    assert located["shard"].nunique() == 3  # 12 rows in shards of 4
    assert sorted(p.name for p in cache.folder.iterdir()) == sorted(
        [".lock", "manifest.parquet", "parts", "spec.json", *located["shard"].unique()])
    assert not list((cache.folder / "parts").iterdir())  # merged into manifest.parquet
    _, again = extract_features(table, extractor, tmp_path / "cache", progress=False)
    assert again.computed == 0


@pytest.mark.slow
def test_each_changed_setting_is_a_miss(tmp_path, extractor, weights):
    import keras

    import tltoolkit

    keras.utils.set_random_seed(2)
    other_weights = tmp_path / "other.weights.h5"
    tltoolkit.build(ARCH, include_top=True).save_weights(other_weights)
    changed = {
        "weights": feature_extractor(ARCH, weights=str(other_weights)),
        "size": feature_extractor(ARCH, weights=weights, image_size=24),
        "preprocessing": feature_extractor(ARCH, weights=weights, preprocessing="tf"),
        "layer": feature_extractor(ARCH, weights=weights, layer="conv3", pooling="avg"),
        "dtype": feature_extractor(ARCH, weights=weights, dtype="float16"),
        "resize": feature_extractor(ARCH, weights=weights, resize="pad"),
    }
    keys = {name: e.spec.key() for name, e in changed.items()}
    assert len(set(keys.values()) | {extractor.spec.key()}) == len(changed) + 1
    table = usable(write_classes(tmp_path / "data", per_class=2), tmp_path)
    extract_features(table, extractor, tmp_path / "cache", progress=False)
    for name, other in changed.items():
        _, stats = extract_features(table, other, tmp_path / "cache", progress=False)
        assert stats.computed == 4, name
    # The same settings rebuilt (same weights file contents) hit.
    _, stats = extract_features(table, feature_extractor(ARCH, weights=weights), tmp_path / "cache", progress=False)
    assert stats.computed == 0


def test_random_init_is_keyed_by_its_seed_and_reproducible():
    first, again, other = (feature_extractor(ARCH, weights=None, seed=s) for s in (3, 3, 4))
    assert first.spec.weights == "random-init:3"
    assert first.spec.key() == again.spec.key() != other.spec.key()
    for a, b in zip(first.model.get_weights(), again.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first.model.get_weights(), other.model.get_weights()))


def test_growth_extracts_only_new_images_and_removed_or_edited_ones_drop_out(tmp_path, extractor):
    folder = write_classes(tmp_path / "data", per_class=5)
    cache_dir = tmp_path / "cache"
    extract_features(usable(folder, tmp_path), extractor, cache_dir, progress=False)
    write_classes(tmp_path / "data", per_class=2, seed=7)  # 4 new images
    removed = os.path.join(folder, "cats", "cats_0_0.png")
    os.remove(removed)
    edited = os.path.join(folder, "dogs", "dogs_0_1.png")
    write_image(edited, pattern(40, 48, seed=12345))  # same path, new bytes
    table = usable(folder, tmp_path)
    cache, stats = extract_features(table, extractor, cache_dir, progress=False)
    assert (stats.images, stats.computed) == (13, 5)
    located, features = cache.features(table)
    assert removed not in set(located["path"]) and len(located) == 13
    np.testing.assert_allclose(features, direct_features(extractor, table), atol=1e-5)
    batches = list(cached_dataset(cache, table, batch_size=4, shuffle=True, seed=3))
    assert sum(len(labels) for _, labels in batches) == 13
    assert sorted(np.concatenate([labels for _, labels in batches])) == sorted(table["label_id"])


KILL_SCRIPT = """
import sys, pandas as pd
from tltoolkit.features.extractor import feature_extractor
from tltoolkit.features.local import extract_features
table = pd.read_parquet(sys.argv[1])
extractor = feature_extractor("resnet20_cifar", weights=sys.argv[2], layer="conv4")
extract_features(table, extractor, sys.argv[3], batch_size=2, shard_size=2, progress=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_parts", [1, 4])
def test_kill_9_then_resume_equals_a_clean_run(tmp_path, weights, kill_after_parts):
    table = usable(write_classes(tmp_path / "data", per_class=12), tmp_path)
    table_file = tmp_path / "table.parquet"
    table.to_parquet(table_file)
    cache_dir = tmp_path / "cache"
    extractor = feature_extractor(ARCH, weights=weights, layer="conv4")
    parts = FeatureCache(extractor.spec, cache_dir).folder / "parts"
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(table_file), weights, str(cache_dir)],
                               cwd=os.path.dirname(os.path.dirname(__file__)))
    kill_9_when(process, lambda: parts.exists() and len(list(parts.glob("*.parquet"))) >= kill_after_parts)
    done = len(FeatureCache(extractor.spec, cache_dir).manifest())
    assert 0 < done < len(table)

    cache, stats = extract_features(table, extractor, cache_dir, progress=False)
    assert stats.computed == len(table) - done
    clean, _ = extract_features(table, extractor, tmp_path / "clean-cache", progress=False)
    resumed_rows, resumed = cache.features(table)
    clean_rows, expected = clean.features(table)
    assert list(resumed_rows["sha256"]) == list(clean_rows["sha256"])
    manifest = cache.manifest()
    assert len(manifest) == len(table) and manifest["sha256"].is_unique
    np.testing.assert_allclose(resumed, expected, atol=1e-5)


@pytest.mark.slow
def test_cut_at_a_stage_trains_the_rest_on_cached_maps(tmp_path, weights):
    table = usable(write_classes(tmp_path / "data"), tmp_path)
    extractor = feature_extractor(ARCH, weights=weights, layer="conv3")
    assert extractor.spec.cut == "conv3_block3_out"  # the stage's last layer
    cache, _ = extract_features(table, extractor, tmp_path / "cache", progress=False)
    _, maps = cache.features(table)
    assert maps.shape == (12, 16, 16, 32)  # conv3's output: the input of conv4

    import tltoolkit

    classifier = tltoolkit.build(ARCH, weights=weights, include_top=True, num_classes=2)
    tail = tail_model(classifier, extractor.spec.cut)
    assert tail.layers[1].name.startswith("conv4")  # conv4 and the head, nothing before
    full = direct_full_model_outputs(classifier, extractor.spec, table)
    np.testing.assert_allclose(tail.predict(maps, verbose=0), full, atol=1e-5)

    tail.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = tail.fit(cached_dataset(cache, table, batch_size=4, seed=0), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(TltoolkitError, match="cannot be cut"):
        tail_model(classifier, "conv4_block1_1_conv")


def direct_full_model_outputs(classifier, spec, table):
    import keras

    from tltoolkit.architectures.preprocessing import preprocessing_layer
    from tltoolkit.pipeline import image_dataset

    inputs = keras.Input((*spec.image_size, 3))
    model = keras.Model(inputs, classifier(preprocessing_layer(spec.preprocessing)(inputs)))
    dataset = image_dataset(table, spec.image_size, 64, dtype="float32", with_labels=False, deterministic=True)
    return np.concatenate([model(images, training=False).numpy() for images in dataset])


@pytest.mark.slow
def test_views_are_seeded_reproducible_and_drawn_one_per_epoch(tmp_path, weights):
    table = usable(write_classes(tmp_path / "data", per_class=3), tmp_path)
    make = lambda: feature_extractor(ARCH, weights=weights, views=3, augmentation="light", seed=5)  # noqa: E731
    cache, stats = extract_features(table, make(), tmp_path / "a", batch_size=8, progress=False)
    located, features = cache.features(table)
    assert len(located) == 18 and list(located["view"]) == [0, 1, 2] * 6
    views = features.reshape(6, 3, -1)
    assert not np.allclose(views[:, 0], views[:, 1])  # the views differ from each other
    _, again = extract_features(table, make(), tmp_path / "b", batch_size=8, progress=False)[0].features(table)
    np.testing.assert_allclose(features, again, atol=1e-5)  # same seed, same views
    plain = feature_extractor(ARCH, weights=weights)
    assert plain.spec.key() != make().spec.key()

    dataset = cached_dataset(cache, table, batch_size=6, shuffle=False, seed=1)
    epochs = [np.concatenate([f.numpy() for f, _ in dataset]) for _ in range(3)]
    for epoch in epochs:  # one view of each image, in table order
        for i in range(6):
            assert any(np.allclose(epoch[i], views[i, v]) for v in range(3))
    assert not all(np.allclose(epochs[0], e) for e in epochs[1:])  # epochs draw different views


def test_cli_extract_writes_parquet_and_json_and_refuses_a_full_folder(tmp_path, weights, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the scan's own cache
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep sys.stderr pytest's across main() calls
    data = write_classes(tmp_path / "data", per_class=3)
    with open(os.path.join(data, "cats", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    args = ["extract", "--base", ARCH, "--weights", weights, "--data", data, "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--layer", "conv3", "--pooling", "avg", "--dtype", "float16",
            "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "1 file(s) quarantined" in captured.err
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["path", "label", "sha256", "view", "features"] and len(frame) == 6
    assert set(frame["view"]) == {0}
    assert pq.read_schema(out / "part-00000.parquet").field("features").type.list_size == 32
    meta = json.loads((out / "_extract.json").read_text())
    assert meta["count"] == 6 and meta["dtype"] == "float16" and meta["quarantined"] == 1
    assert meta["weights_hash"].startswith("sha256:") and meta["feature_shape"] == [32]
    features = np.stack(frame["features"].to_numpy())
    extractor = feature_extractor(ARCH, weights=weights, layer="conv3", pooling="avg")
    table = usable(data, tmp_path).set_index("path").loc[frame["path"]].reset_index()
    np.testing.assert_allclose(features, direct_features(extractor, table), atol=2e-3)  # float16

    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert len(pd.read_parquet(out)) == 6


def test_cli_extract_views_stores_k_augmented_views_per_image(tmp_path, weights, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    data = write_classes(tmp_path / "data", per_class=2)
    def extract(out, cache, *views):
        return main(["extract", "--base", ARCH, "--weights", weights, "--data", data, "--cache-dir", str(cache),
                     "--seed", "7", "--quiet", "--out", str(out), *views])

    assert extract(tmp_path / "a", tmp_path / "cache", "--views", "3", "--augment", "flip,crop") == 0
    frame = pd.read_parquet(tmp_path / "a")
    assert len(frame) == 12 and list(frame.groupby("sha256")["view"].apply(list)) == [[0, 1, 2]] * 4
    features = np.stack(frame["features"].to_numpy()).reshape(4, 3, -1)
    assert not np.allclose(features[:, 0], features[:, 1]) or not np.allclose(features[:, 1], features[:, 2])
    # Same seed, fresh cache: the same views.
    assert extract(tmp_path / "b", tmp_path / "cache2", "--views", "3", "--augment", "flip,crop") == 0
    again = pd.read_parquet(tmp_path / "b")
    np.testing.assert_allclose(np.stack(again["features"].to_numpy()), np.stack(frame["features"].to_numpy()),
                               atol=1e-5)
    assert extract(tmp_path / "c", tmp_path / "cache", "--views", "3") == 2
    assert "--views K needs --augment" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_engine_matches_the_local_engine_row_for_row(tmp_path, weights, capsys, monkeypatch):
    import ray

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    data = write_classes(tmp_path / "data", per_class=4)
    common = ["--base", ARCH, "--weights", weights, "--data", data, "--layer", "conv4", "--pooling", "max",
              "--batch-size", "3", "--quiet"]
    assert main(["extract", *common, "--out", str(tmp_path / "local"), "--cache-dir", str(tmp_path / "cache")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["extract", *common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    finally:
        ray.shutdown()
    local, distributed = pd.read_parquet(tmp_path / "local"), pd.read_parquet(tmp_path / "ray")
    assert len(local) == 8
    pd.testing.assert_frame_equal(local[["path", "label", "sha256", "view"]],
                                  distributed[["path", "label", "sha256", "view"]])
    np.testing.assert_allclose(np.stack(local["features"].to_numpy()), np.stack(distributed["features"].to_numpy()),
                               atol=1e-5)
    meta = json.loads((tmp_path / "ray" / "_extract.json").read_text())
    assert meta["engine"] == "ray" and meta["count"] == 8
    # The Ray engine fills the feature cache too: a grown folder computes only its new images.
    write_classes(tmp_path / "data", per_class=5)
    capsys.readouterr()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["extract", *common, "--out", str(tmp_path / "ray"), "--force", "--engine", "ray"]) == 0
    finally:
        ray.shutdown()
    assert "computed 2 of 10 image(s) (8 from the cache" in capsys.readouterr().err
    assert len(pd.read_parquet(tmp_path / "ray")) == 10


def test_ray_engine_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where Ray is not installed
    out = tmp_path / "out"
    assert main(["extract", "--base", ARCH, "--data", str(tmp_path), "--out", str(out), "--engine", "ray"]) == 2
    assert "pip install 'tltoolkit[ray]'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_the_seed_keys_features_only_where_it_changes_them(tmp_path):
    """A weights file's features are the same whatever --seed; random weights and augmented views differ."""
    from tltoolkit.features.extractor import feature_extractor

    weights = tmp_path / "w.weights.h5"
    feature_extractor("resnet20_cifar", image_size=32, seed=0).base.save_weights(weights)

    def key(**options):
        return feature_extractor("resnet20_cifar", image_size=32, **options).spec.key()

    assert key(weights=str(weights), seed=0) == key(weights=str(weights), seed=3)
    assert key(seed=0) != key(seed=3)  # random init: the seed is the weights
    assert key(weights=str(weights), seed=0, views=2, augmentation="flip") != key(
        weights=str(weights), seed=3, views=2, augmentation="flip")


def test_extract_recomputes_a_truncated_shard_and_says_so(tmp_path, weights, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    data = write_classes(tmp_path / "data", per_class=3)
    args = ["extract", "--base", ARCH, "--weights", weights, "--data", data, "--cache-dir", str(tmp_path / "cache"),
            "--quiet", "--force"]
    assert main(args + ["--out", str(tmp_path / "first")]) == 0
    shard = next((tmp_path / "cache").rglob("shard-*.npy"))
    with open(shard, "r+b") as handle:
        handle.truncate(4000)
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "second")]) == 0
    err = capsys.readouterr().err
    assert "is corrupt" in err and "computed 6 of 6" in err
    first, second = pd.read_parquet(tmp_path / "first"), pd.read_parquet(tmp_path / "second")
    np.testing.assert_allclose(np.stack(second["features"]), np.stack(first["features"]), atol=1e-5)


def test_a_fresh_cache_dir_or_rehash_sees_an_image_edited_behind_the_scan_cache(tmp_path, weights, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    data = tmp_path / "data"
    for c, name in enumerate(("cats", "dogs")):
        for i in range(3):
            write_image(str(data / name / f"{i}.bmp"), pattern(40, 48, seed=c * 10 + i))  # BMP: size from shape
    edited = data / "cats" / "0.bmp"

    def extract(cache, out, *flags):
        assert main(["extract", "--base", ARCH, "--weights", weights, "--data", str(data), "--cache-dir",
                     str(tmp_path / cache), "--out", str(tmp_path / out), "--quiet", *flags]) == 0
        frame = pd.read_parquet(tmp_path / out)
        return np.stack(frame.set_index("path").loc[str(edited), "features"])

    before = extract("cache-a", "out-1")
    stat = edited.stat()
    with open(edited, "r+b") as handle:  # other pixels, same size, old mtime
        handle.seek(stat.st_size - 500)
        handle.write(bytes(range(250)) * 2)
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not (tmp_path / "xdg").exists()  # every cache lives under --cache-dir
    assert (tmp_path / "cache-a" / "scans").is_dir()
    assert np.allclose(extract("cache-a", "out-2"), before)  # trusted by size+mtime, as documented
    fresh = extract("cache-b", "out-3")
    assert not np.allclose(fresh, before)
    np.testing.assert_allclose(extract("cache-a", "out-4", "--rehash"), fresh, atol=1e-5)


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_extract_refuses_an_out_or_cache_dir_inside_the_data(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    data = write_classes(tmp_path / "data", per_class=2)
    argv = {"--base": ARCH, "--weights": "none", "--data": data, "--out": str(tmp_path / "out"),
            "--cache-dir": str(tmp_path / "cache"), flag: str(tmp_path / "data" / "cats" / "x")}
    assert main(["extract", *[x for pair in argv.items() for x in pair], "--quiet"]) == 2
    assert "is inside --data" in capsys.readouterr().err
    assert not (tmp_path / "data" / "cats" / "x").exists() and not (tmp_path / "out").exists()


def test_a_corrupt_saved_base_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    data = write_classes(tmp_path / "data", per_class=2)
    base = tmp_path / "base.keras"
    base.write_bytes(b"PK\x03\x04 truncated")
    assert main(["extract", "--base", str(base), "--preprocessing", "tf", "--data", data, "--out",
                 str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot load {base}: not a complete .keras archive" in err, err
