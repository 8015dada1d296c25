"""The feature cache on its own: keys, shards and manifest on disk, crash leftovers, concurrent
writers and the tf.data reader. Features here are a known function of each image's hash, so every
value read back can be checked."""

import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tltoolkit.errors import TltoolkitError
from tltoolkit.features.cache import FeatureCache, cached_dataset
from tltoolkit.features.extractor import FeatureSpec

SPEC = FeatureSpec(arch="resnet20_cifar", weights="sha256:" + "0" * 64, image_size=(32, 32), resize="center_crop",
                   preprocessing="torch", cut="avg_pool", pooling=None, dtype="float32")


def hashes(n, start=0):
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, start + n)]


def features_of(sha256s, view=0, dim=5):
    """A feature row that is a known function of the hash and the view."""
    return np.stack([np.random.default_rng([int(h[:8], 16), view]).normal(size=dim) for h in sha256s]).astype("float32")


def table_of(sha256s):
    return pd.DataFrame({"path": [f"/img/{h[:6]}.png" for h in sha256s], "sha256": sha256s,
                         "label": ["a", "b"] * (len(sha256s) // 2) + ["a"] * (len(sha256s) % 2),
                         "label_id": np.arange(len(sha256s)) % 2})


def fill(cache, sha256s, views=1):
    with cache.writer() as writer:
        for view in range(views):
            for start in range(0, len(sha256s), 3):  # batches of 3, not aligned with shards
                chunk = sha256s[start:start + 3]
                writer.add(chunk, [f"/img/{h[:6]}.png" for h in chunk], ["a"] * len(chunk),
                           features_of(chunk, view), view)
    return writer


def test_every_field_is_in_the_key():
    changes = dict(arch="resnet32_cifar", weights="random-init:0", image_size=(24, 24), resize="pad",
                   preprocessing="tf", cut="conv3_block3_out", pooling="avg", dtype="float16",
                   views=2, augmentation="light", seed=1)
    keys = {SPEC.key()}
    for field, value in changes.items():
        extra = {"augmentation": "light"} if field == "views" else {"views": 1} if field == "augmentation" else {}
        keys.add(dataclasses.replace(SPEC, **{field: value, **extra}).key())
    assert len(keys) == len(changes) + 1
    assert dataclasses.replace(SPEC).key() == SPEC.key()


@pytest.mark.parametrize("change, message", [({"dtype": "int8"}, "feature dtype"),
                                             ({"views": 2}, "augmentation policy")])
def test_bad_specs_are_refused(change, message):
    with pytest.raises(TltoolkitError, match=message):
        dataclasses.replace(SPEC, **change)


def test_shards_are_fixed_size_memory_mapped_and_read_back_exactly(tmp_path):
    cache = FeatureCache(dataclasses.replace(SPEC, dtype="float16"), tmp_path, shard_size=4)
    sha256s = hashes(10)
    writer = fill(cache, sha256s)
    assert writer.written == 10
    manifest = cache.manifest()
    assert sorted(manifest["sha256"]) == sorted(sha256s)
    sizes = sorted(len(np.load(cache.folder / name)) for name in manifest["shard"].unique())
    assert sizes == [2, 4, 4]
    assert not list((cache.folder / "parts").iterdir()) and not list(cache.folder.glob(".*.tmp"))
    assert isinstance(cache.shard(manifest["shard"][0]), np.memmap)
    table = table_of(sha256s[::-1])
    located, features = cache.features(table)
    assert list(located["path"]) == list(table["path"]) and features.dtype == np.float16
    np.testing.assert_allclose(features, features_of(sha256s[::-1]), atol=1e-2)
    assert cache.missing(hashes(12)) == hashes(2, start=10)


def test_leftovers_of_a_killed_writer_are_ignored_and_recomputed(tmp_path):
    cache = FeatureCache(SPEC, tmp_path, shard_size=4)
    fill(cache, hashes(4))
    # A kill after a shard was renamed but before its manifest part: an orphan shard; and a kill
    # during a write: a temporary file.
    np.save(cache.folder / "shard-orphan.npy", features_of(hashes(4, start=4)))
    (cache.folder / ".shard-torn.npy.x.tmp").write_bytes(b"\x93NUMPY half")
    (cache.folder / "parts" / ".abc.parquet.y.tmp").write_bytes(b"PAR1 half")
    assert cache.missing(hashes(8)) == hashes(4, start=4)
    assert len(cache.manifest()) == 4
    fill(cache, hashes(4, start=4))  # the resumed run: computes what is missing, then collects the leftovers
    assert cache.missing(hashes(8)) == []
    leftovers = [p.name for p in cache.folder.rglob("*") if "orphan" in p.name or p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in cache.folder.glob("shard-*.npy")) == sorted(set(cache.manifest()["shard"]))


WRITER_SCRIPT = """
import sys, hashlib
sys.path.insert(0, sys.argv[3])
from tests.test_cache import SPEC, fill, hashes
from tltoolkit.features.cache import FeatureCache
start = int(sys.argv[2])
fill(FeatureCache(SPEC, sys.argv[1], shard_size=2), hashes(40, start=start))
"""


@pytest.mark.slow
def test_concurrent_writers_on_one_key_do_not_corrupt_each_other(tmp_path):
    import pathlib

    root = str(pathlib.Path(__file__).parent.parent)
    runs = [subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(tmp_path), str(start), root])
            for start in (0, 20, 10)]  # overlapping ranges of images
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0]
    cache = FeatureCache(SPEC, tmp_path, shard_size=2)
    manifest = cache.manifest()
    assert sorted(manifest["sha256"]) == sorted(hashes(60)) and manifest["sha256"].is_unique
    _, features = cache.features(table_of(hashes(60)))
    np.testing.assert_array_equal(features, features_of(hashes(60)))


def test_reader_streams_features_and_labels_shuffled_by_seed(tmp_path):
    cache = FeatureCache(SPEC, tmp_path, shard_size=4)
    sha256s = hashes(11)
    fill(cache, sha256s)
    table = table_of(sha256s)

    def epoch(dataset):
        batches = list(dataset)
        return (np.concatenate([f.numpy() for f, _ in batches]), np.concatenate([y.numpy() for _, y in batches]))

    in_order, labels = epoch(cached_dataset(cache, table, batch_size=4, shuffle=False))
    np.testing.assert_array_equal(in_order, features_of(sha256s))
    np.testing.assert_array_equal(labels, table["label_id"])
    dataset = cached_dataset(cache, table, batch_size=4, shuffle=True, seed=7)
    first, first_labels = epoch(dataset)
    second, _ = epoch(dataset)
    order = [int(np.argmin(np.abs(in_order - row).sum(axis=1))) for row in first]
    assert sorted(order) == list(range(11)) and order != list(range(11))
    np.testing.assert_array_equal(first_labels, table["label_id"].to_numpy()[order])
    assert not np.array_equal(first, second)  # reshuffled each epoch
    np.testing.assert_array_equal(first, epoch(cached_dataset(cache, table, batch_size=4, seed=7))[0])
    features_only = next(iter(cached_dataset(cache, table, batch_size=3, with_labels=False)))
    assert features_only.shape == (3, 5) and features_only.dtype.name == "float32"


def test_reader_refuses_images_that_are_not_cached(tmp_path):
    cache = FeatureCache(SPEC, tmp_path)
    fill(cache, hashes(3))
    with pytest.raises(TltoolkitError, match=r"1 image\(s\) are not in the feature cache .*extract them first"):
        cached_dataset(cache, table_of(hashes(4)))


@pytest.mark.parametrize("damage", ["truncate", "empty", "same-size-garbage"])
def test_a_corrupt_shard_is_dropped_said_once_and_its_rows_recomputed(tmp_path, capfd, damage):
    cache = FeatureCache(SPEC, tmp_path, shard_size=4)
    sha256s = hashes(8)
    fill(cache, sha256s)
    manifest = cache.manifest()
    bad = manifest["shard"][0]
    path = cache.folder / bad
    size = path.stat().st_size
    if damage == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(size - 40)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # the header kept, the values replaced: loads fine, only the checksum tells
        data = bytearray(path.read_bytes())
        data[-16:] = b"\xff" * 16
        path.write_bytes(bytes(data))
    lost = sorted(manifest.loc[manifest["shard"] == bad, "sha256"])
    fresh = FeatureCache(SPEC, tmp_path, shard_size=4)  # another process: nothing checked yet
    assert sorted(fresh.missing(sha256s)) == lost
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and f"shard {path} is corrupt" in err and "4 row(s) will be recomputed" in err
    with pytest.raises(TltoolkitError, match="not in the feature cache"):
        fresh.features(table_of(sha256s))  # never served
    fill(fresh, lost)
    located, features = fresh.features(table_of(sha256s))
    np.testing.assert_allclose(features, features_of(sha256s))
    assert bad not in set(located["shard"]) and not path.exists()
    assert set(fresh.manifest()["shard"]) == {p.name for p in cache.folder.glob("shard-*.npy")}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_written_atomically_honour_the_umask(tmp_path, umask, mode):
    import os

    old = os.umask(umask)
    try:
        cache = FeatureCache(SPEC, tmp_path, shard_size=4)
        fill(cache, hashes(4))
    finally:
        os.umask(old)
    files = [cache.folder / "spec.json", cache.folder / "manifest.parquet", *cache.folder.glob("shard-*.npy")]
    assert {f.stat().st_mode & 0o777 for f in files} == {mode}


def test_a_manifest_of_100k_rows_is_read_as_arrow_columns_not_python_objects(tmp_path):
    # The bookkeeping a million-image folder reads on every command: no per-row Python strings (pandas 3's
    # default string dtype is Arrow-backed; under pandas 2 the strings are object columns and this fails).
    n = 100_000
    sha256s = hashes(n)
    cache = FeatureCache(SPEC, tmp_path, shard_size=25_000)
    with cache.writer() as writer:
        for start in range(0, n, 25_000):
            chunk = sha256s[start:start + 25_000]
            writer.add(chunk, [f"/data/c{i % 10}/img_{start + i:07d}.png" for i in range(len(chunk))],
                       [f"c{i % 10}" for i in range(len(chunk))], np.zeros((len(chunk), 1), "float32"))
    manifest = cache.manifest()
    assert len(manifest) == n and not (manifest.dtypes == object).any(), manifest.dtypes
    assert manifest.memory_usage(deep=True).sum() / n < 300  # bytes a row: the strings' own bytes and offsets
    assert cache.missing(sha256s[:10] + hashes(2, start=n)) == hashes(2, start=n)
