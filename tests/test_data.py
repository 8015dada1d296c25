"""tltoolkit.data: sources, scan/quarantine, stable splits, class index, scan cache and `scan` CLI.
Every test writes real image files (tests/images.py) and scans them."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from images import pattern, write_every_kind, write_good_images, write_image
from tltoolkit.data import (COLUMNS, extend_class_index, hash_fraction, load_class_index, load_rgb,
                            save_class_index, scan)
from tltoolkit.errors import TltoolkitError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scan_here(source, tmp_path, **options):
    return scan(source, cache_dir=tmp_path / "cache", **options)


@pytest.fixture
def messy(tmp_path):
    """cats/: every good, convertible and bad kind; dogs/: five good images."""
    expected = write_every_kind(tmp_path / "data" / "cats")
    write_good_images(tmp_path / "data" / "dogs", 5)
    return tmp_path / "data", expected


def by_name(result):
    return result.table.set_index(result.table["path"].map(os.path.basename))


def test_every_kind_scans_with_its_status_and_reason(messy, tmp_path):
    folder, expected = messy
    result = scan_here(folder, tmp_path)
    rows = by_name(result)
    assert list(result.table.columns) == COLUMNS
    for name, (status, reason) in expected.items():
        if status == "ignored":
            assert name not in rows.index and str(folder / "cats" / name) in result.ignored
            continue
        row = rows.loc[name]
        assert row["status"] == status, name
        assert reason in row["reason"].split(",") if reason else row["reason"] == "", name
    quarantined = result.quarantined
    assert set(quarantined["label_id"]) == {-1} and set(quarantined["split"]) == {""}
    usable = result.usable()
    assert set(usable["decoder"]) == {"tf", "pil"} and set(usable["split"]) <= {"train", "validation"}
    assert (usable["sha256"].str.len() == 64).all() and (usable[["width", "height"]].to_numpy() == [48, 32]).all()
    assert rows.loc["rgb.jpg", "size"] == os.path.getsize(folder / "cats" / "rgb.jpg")
    summary = result.summary().set_index("class")
    assert summary.loc["cats", "quarantined"] == 5 and summary.loc["dogs", "usable"] == 5
    assert summary.loc["cats", "usable"] == summary.loc["cats", "train"] + summary.loc["cats", "validation"] == 12


def test_pil_rows_come_out_upright_rgb_and_white_behind_transparency(messy):
    folder, _ = messy
    upright = load_rgb(str(folder / "cats" / "exif_rotated.jpg"))
    assert upright.shape == (32, 48, 3) and upright.dtype == np.uint8
    assert (np.abs(upright[2:14, 2:22].astype(int) - [255, 0, 0]) < 40).all()  # red stays top-left
    rgba = load_rgb(str(folder / "cats" / "rgba.png"))
    assert (rgba[:, 24:] == 255).all() and not (rgba[:, :24] == 255).all()
    gray16 = load_rgb(str(folder / "cats" / "gray16.png"))
    assert gray16.shape == (32, 48, 3) and (gray16[..., 0] == gray16[..., 2]).all()
    assert gray16[0, 0, 0] == 255  # 65535 scales to 255, not clipped garbage
    assert load_rgb(os.fsencode(folder / "cats" / "cmyk.jpg")).shape == (32, 48, 3)  # bytes: tf.numpy_function
    assert load_rgb(str(folder / "cats" / "exif_rotated.jpg"), min_side=8).shape == (8, 12, 3)  # DCT 1/4 scale


def test_tf_rows_decode_with_tensorflow_like_pil_and_pil_rows_need_it(messy, tmp_path):
    import tensorflow as tf

    folder, _ = messy
    result = scan_here(folder, tmp_path)

    def tf_decode(path):
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False).numpy().astype(int)

    for row in result.usable().itertuples():
        if row.decoder == "tf":
            reference = load_rgb(row.path).astype(int)
            decoded = tf_decode(row.path)
            assert decoded.shape == reference.shape and np.abs(decoded - reference).mean() < 2, row.path
    # the files sent to Pillow are ones TensorFlow gets wrong
    assert tf_decode(str(folder / "cats" / "exif_rotated.jpg")).shape == (48, 32, 3)
    palette = str(folder / "cats" / "palette.bmp")
    assert np.abs(tf_decode(palette) - load_rgb(palette)).mean() > 10
    assert not (tf_decode(str(folder / "cats" / "rgba.png"))[:, 24:] == 255).all()


def test_duplicates_count_once_and_label_conflicts_are_quarantined(tmp_path):
    cats = write_good_images(tmp_path / "d" / "cats", 4, seed=1)
    dogs = write_good_images(tmp_path / "d" / "dogs", 4, seed=2)
    shutil.copy(cats[0], tmp_path / "d" / "cats" / "zz_copy.png")
    os.makedirs(tmp_path / "d" / "cats" / "nested" / "deeper")
    shutil.copy(cats[0], tmp_path / "d" / "cats" / "nested" / "deeper" / "again.png")
    shutil.copy(dogs[1], tmp_path / "d" / "cats" / "mislabelled.png")
    result = scan_here(tmp_path / "d", tmp_path)
    rows = by_name(result)
    assert rows.loc["img_1_0.png", "status"] == "ok"
    for copy in ("zz_copy.png", "again.png"):
        assert rows.loc[copy, "status"] == "duplicate" and cats[0] in rows.loc[copy, "detail"]
        assert rows.loc[copy, "split"] == rows.loc["img_1_0.png", "split"]
    for name in ("mislabelled.png", "img_2_1.png"):
        assert (rows.loc[name, "status"], rows.loc[name, "reason"]) == ("quarantined", "label conflict")
    assert len(result.usable()) == result.usable()["sha256"].nunique() == 4 + 3  # dogs lose the conflict
    assert len(result.duplicates) == 2 and result.conflicts["sha256"].nunique() == 1


def error_of(*args, **kwargs) -> str:
    with pytest.raises(TltoolkitError) as caught:
        scan(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unusable_data_gives_one_line_errors_saying_what_was_found(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / ".DS_Store").write_bytes(b"x")
    assert "no images" in error_of(tmp_path / "nothing", cache_dir=cache) and "1 hidden or non-image" in error_of(tmp_path / "nothing", cache_dir=cache)

    write_good_images(tmp_path / "one" / "tigger", 3)
    message = error_of(tmp_path / "one", cache_dir=cache)
    assert "only one class" in message and "'tigger', 3 images" in message

    write_good_images(tmp_path / "three" / "tigger", 3)
    write_good_images(tmp_path / "three" / "neither", 3, seed=1)
    misty = tmp_path / "three" / "misty"
    misty.mkdir()
    for name in ("a.jpg", "b.jpg", "c.png"):
        (misty / name).write_bytes(b"")
    assert error_of(tmp_path / "three", cache_dir=cache).startswith("class 'misty' has no usable images (3 quarantined)")
    shutil.rmtree(misty)
    misty.mkdir()
    assert "class 'misty' has no usable images (no image files)" in error_of(tmp_path / "three", cache_dir=cache)
    assert "does not exist" in error_of(tmp_path / "nowhere", cache_dir=cache)
    assert "outside [0, 1)" in error_of(tmp_path / "three", val_split=1.0, cache_dir=cache)

    bad = tmp_path / "bad"
    for label in ("a", "b"):
        (bad / label).mkdir(parents=True)
        (bad / label / "x.jpg").write_bytes(b"not a jpeg")
    assert "all 2 files were quarantined (2 not an image)" in error_of(bad, cache_dir=cache)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_source_matches_the_folder_scan(messy, tmp_path, suffix):
    folder, _ = messy
    from_folder = scan_here(folder, tmp_path)
    rows = from_folder.table
    manifest = pd.DataFrame({
        "path": [os.path.relpath(p, folder) for p in rows["path"]],  # relative to the manifest's folder
        "label": rows["label"],
        "split": ["validation" if name.endswith("rgb.bmp") else "" for name in rows["path"]],
    })
    manifest.loc[len(manifest)] = ["dogs/gone.png", "dogs", ""]
    path = folder / f"labels{suffix}"
    manifest.to_csv(path, index=False) if suffix == ".csv" else manifest.to_parquet(path, index=False)

    result = scan_here(path, tmp_path)
    table = result.table.iloc[:-1]
    pd.testing.assert_frame_equal(table.drop(columns="split"), rows.drop(columns="split"))
    assert by_name(result).loc["rgb.bmp", "split"] == "validation"  # a given split wins
    free = ~table["path"].str.endswith("rgb.bmp")
    assert (table.loc[free, "split"] == rows.loc[free, "split"]).all()
    assert tuple(result.table.iloc[-1][["status", "reason"]]) == ("quarantined", "missing")


def test_manifest_refuses_escaping_paths_and_bad_columns(tmp_path):
    write_good_images(tmp_path / "outside", 1)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "labels.csv").write_text("path,label\n../outside/img_0_0.png,cats\n")
    assert "outside the manifest's folder" in error_of(tmp_path / "m" / "labels.csv", cache_dir=tmp_path)
    (tmp_path / "m" / "labels.csv").write_text(f"path,label\n{tmp_path}/outside/img_0_0.png,cats\n")
    assert "outside the manifest's folder" in error_of(tmp_path / "m" / "labels.csv", cache_dir=tmp_path)
    (tmp_path / "m" / "labels.csv").write_text("file,class\na.png,cats\n")
    assert "no path or label column (columns: file, class)" in error_of(tmp_path / "m" / "labels.csv", cache_dir=tmp_path)
    (tmp_path / "m" / "labels.csv").write_text("path,label,split\na.png,cats,test\n")
    assert "split values 'test'" in error_of(tmp_path / "m" / "labels.csv", cache_dir=tmp_path)


def test_splits_are_stable_as_the_dataset_grows_tenfold(tmp_path):
    """Three classes grow from 10, 5 and 5 images to 100, 95 and 95 in ten steps. Class `small`
    starts with five images whose hashes all miss validation, so it needs the small-class rule."""
    folder, fraction = tmp_path / "grow", 0.2
    seeds = iter(range(10_000, 100_000))

    def add(label, count, above=False):
        for _ in range(count):
            while True:
                path = write_image(str(folder / label / f"{next(seeds)}.png"), pattern(16, 16, seed=next(seeds)))
                if not above or hash_fraction(scan_sha(path)) >= fraction:
                    break
                os.remove(path)

    add("big", 10), add("small", 5, above=True), add("tiny", 5)
    history = []
    for step in range(10):
        result = scan_here(folder, tmp_path, val_split=fraction)
        usable = result.usable()
        history.append(dict(zip(usable["sha256"], usable["split"])))
        for label, group in usable.groupby("label"):
            assert (group["split"] == "validation").sum() >= 1, (step, label)  # even 5 images
        add("big", 10), add("small", 10), add("tiny", 10)
    moves = set()
    for before, after in zip(history, history[1:]):
        for sha, split in before.items():
            if after[sha] != split:
                # the only move allowed: a small class's stand-in validation image going back to training
                assert (split, after[sha]) == ("validation", "train") and hash_fraction(sha) >= fraction
                moves.add(sha)
    small_stand_in = [sha for sha in moves if sha in set(history[0]) & set(result.usable().query("label == 'small'")["sha256"])]
    assert len(small_stand_in) == 1 and history[-1][small_stand_in[0]] == "train"
    final = result.usable()
    assert len(final) == 100 + 95 + 95
    for label, group in final.groupby("label"):
        assert abs((group["split"] == "validation").mean() - fraction) < 0.1, label
        assert ((group["split"] == "validation") == (group["sha256"].map(hash_fraction) < fraction)).all()


def test_splits_from_an_earlier_scan_never_move_any_image(tmp_path):
    """With the previous scan's report (or a run's snapshot) as `splits_from`, growth moves nothing,
    not even the small-class stand-ins, and every class keeps a validation image."""
    folder, fraction = tmp_path / "grow", 0.2
    seeds = iter(range(200_000, 300_000))

    def add(label, count):
        for _ in range(count):
            write_image(str(folder / label / f"{next(seeds)}.png"), pattern(16, 16, seed=next(seeds)))

    add("a", 5), add("b", 3)
    report, history = None, []
    for step in range(10):
        result = scan_here(folder, tmp_path, val_split=fraction, splits_from=report)
        usable = result.usable()
        history.append(dict(zip(usable["sha256"], usable["split"])))
        assert usable.groupby("label")["split"].apply(lambda s: (s == "validation").any()).all(), step
        report = tmp_path / f"report-{step}.parquet"
        result.write_report(report)
        add("a", 10), add("b", 10)
    for before, after in zip(history, history[1:]):
        assert all(after[sha] == split for sha, split in before.items())
    with pytest.raises(TltoolkitError, match="no sha256 and split columns"):
        pd.DataFrame({"path": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
        scan_here(folder, tmp_path, splits_from=tmp_path / "bad.csv")


def scan_sha(path):
    import hashlib

    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def test_class_index_keeps_ids_and_appends_new_classes(tmp_path):
    for label in ("misty", "tigger"):
        write_good_images(tmp_path / "d" / label, 2, seed=len(label))
    first = scan_here(tmp_path / "d", tmp_path)
    assert first.class_index == {"misty": 0, "tigger": 1} and first.class_names == ["misty", "tigger"]
    save_class_index(first.class_index, tmp_path / "classes.json")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    write_good_images(tmp_path / "d" / "neither", 2, seed=3)
    write_good_images(tmp_path / "d" / "Abyssinian", 2, seed=4)
    grown = scan_here(tmp_path / "d", tmp_path, class_index=tmp_path / "classes.json")
    assert grown.class_index == {"misty": 0, "tigger": 1, "Abyssinian": 2, "neither": 3}
    assert (grown.usable()["label_id"] == grown.usable()["label"].map(grown.class_index)).all()
    save_class_index(grown.class_index, tmp_path / "classes.json")
    assert load_class_index(tmp_path / "classes.json") == grown.class_index
    assert extend_class_index(["b", "a"]) == {"a": 0, "b": 1}

    (tmp_path / "broken.json").write_text('{"a": 0, "b": 0}')
    with pytest.raises(TltoolkitError, match="ids must be 0..1"):
        load_class_index(tmp_path / "broken.json")


def test_rescan_reads_only_new_or_changed_files(tmp_path):
    paths = write_good_images(tmp_path / "d" / "a", 6) + write_good_images(tmp_path / "d" / "b", 6, seed=1)
    assert scan_here(tmp_path / "d", tmp_path).files_read == 12
    assert scan_here(tmp_path / "d", tmp_path).files_read == 0
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert scan_here(tmp_path / "d", tmp_path).files_read == 1
    write_image(paths[1], pattern(seed=999))  # new content in place
    os.remove(paths[2])
    write_good_images(tmp_path / "d" / "b", 1, seed=7)
    result = scan_here(tmp_path / "d", tmp_path)
    assert result.files_read == 2 and len(result.table) == 12
    assert by_name(result).loc[os.path.basename(paths[1]), "sha256"] == scan_sha(paths[1])
    assert scan_here(tmp_path / "d", tmp_path, cache=False).files_read == 12


def test_a_100k_row_scan_holds_its_columns_in_arrow_not_python_objects(tmp_path):
    # Issue 17: a million-image scan must not cost a Python string per row and column (an object column
    # of hashes alone is ~120 bytes a row). 100,000 manifest rows over 20 files: most are duplicates,
    # so the table has every column's kind of value (hash, status, reason, detail) at full length.
    files = write_good_images(tmp_path / "d" / "a", 10) + write_good_images(tmp_path / "d" / "b", 10, seed=1)
    n = 100_000
    manifest = tmp_path / "d" / "labels.parquet"
    pd.DataFrame({"path": [os.path.relpath(files[i % 20], manifest.parent) for i in range(n)],
                  "label": [os.path.basename(os.path.dirname(files[i % 20])) for i in range(n)]}).to_parquet(manifest)
    for reads in (20, 0):  # the first scan, then one answered by the scan cache
        result = scan_here(manifest, tmp_path)
        table = result.table
        assert result.files_read == reads and len(table) == n and (table["status"] == "duplicate").sum() == n - 20
        assert not (table.dtypes == object).any(), table.dtypes
        text = sum(table[c].str.len().sum() for c in table.columns if table[c].dtype == "str")  # ASCII: bytes
        # The strings' own bytes and 8 bytes a cell (an offset or a number); an object column of hashes is 18% more.
        assert table.memory_usage(deep=True, index=False).sum() < 1.01 * (text + 8 * table.size)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tltoolkit", "scan", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_scan_cli_prints_counts_and_writes_the_report(messy, tmp_path):
    folder, expected = messy
    report = tmp_path / "out" / "report.csv"
    done = run_cli("--data", folder, "--report", report, "--cache-dir", tmp_path / "cache", "--show", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["class", "id", "train", "validation", "usable", "duplicate", "quarantined"]
    assert lines[1].split()[:2] == ["cats", "0"] and lines[1].split()[4:] == ["12", "0", "5"]
    assert "quarantined 5 files (not used):" in done.stdout and "... and 3 more (all in" in done.stdout
    assert "ignored 2 hidden or non-image files" in done.stdout
    table = pd.read_csv(report, keep_default_na=False)
    assert {"path", "label", "sha256", "status", "reason", "split"} <= set(table.columns)
    assert len(table) == len([k for k, (s, _) in expected.items() if s != "ignored"]) + 5
    assert set(table.loc[table["status"] == "quarantined", "reason"]) == {"empty", "truncated", "not an image", "unsupported format"}

    again = run_cli("--data", folder, "--report", report, "--cache-dir", tmp_path / "cache")
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    forced = run_cli("--data", folder, "--report", tmp_path / "r.parquet", "--cache-dir", tmp_path / "cache", "--format", "json")
    assert forced.returncode == 0 and pd.read_parquet(tmp_path / "r.parquet").shape == table.shape
    assert "read 0 files" in forced.stderr and json.loads(forced.stdout)[-1]["class"] == "total"

    shutil.rmtree(folder / "dogs")
    single = run_cli("--data", folder, "--cache-dir", tmp_path / "cache")
    assert single.returncode == 2 and single.stderr.strip().endswith("a classifier needs at least two class folders")


def make_tfds_dataset(data_dir):
    """A real TFDS dataset, prepared on disk: 12 PNG-encoded images, two classes, plus one image that
    appears under both labels."""
    import tensorflow_datasets as tfds

    class TltoolkitTinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(16, 16, 3), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=["square", "circle"]),
            }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(12):
                yield i, {"image": pattern(16, 16, seed=5000 + i), "label": i % 2}
            for i, label in ((12, 0), (13, 1)):
                yield i, {"image": pattern(16, 16, seed=6000), "label": label}

    TltoolkitTinyShapes(data_dir=str(data_dir)).download_and_prepare()
    return "tltoolkit_tiny_shapes"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    return data_dir, make_tfds_dataset(data_dir)


def test_tfds_source_gives_the_same_kind_of_table(tfds_dir, tmp_path):
    data_dir, name = tfds_dir
    result = scan(f"tfds:{name}", data_dir=data_dir, cache_dir=tmp_path / "cache")
    assert list(result.table.columns) == COLUMNS and len(result.table) == 14
    assert result.class_index == {"circle": 0, "square": 1}
    usable = result.usable()
    assert len(usable) == 12 and set(usable["status"]) == {"ok"} and set(usable["decoder"]) == {"tf"}
    assert all(path.startswith(str(tmp_path / "cache" / "tfds")) for path in result.table["path"])
    label_of = {pattern(16, 16, seed=5000 + i).tobytes(): ("square", "circle")[i % 2] for i in range(12)}
    assert [label_of[load_rgb(path).tobytes()] for path in usable["path"]] == usable["label"].tolist()
    assert result.conflicts["sha256"].nunique() == 1 and len(result.conflicts) == 2
    again = scan(f"tfds:{name}:train[:6]", data_dir=data_dir, cache_dir=tmp_path / "cache")
    assert len(again.table) == 6 and again.files_read == 6


def test_scan_cli_reads_a_tfds_dataset_it_has_never_imported(tfds_dir, tmp_path):
    data_dir, name = tfds_dir
    done = run_cli("--data", f"tfds:{name}", "--data-dir", data_dir, "--cache-dir", tmp_path / "cache", "--format", "csv")
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(io.StringIO(done.stdout))
    assert summary["class"].tolist() == ["circle", "square", "total"] and summary["usable"].tolist() == [6, 6, 12]
    missing = run_cli("--data", "tfds:no_such_dataset_here", "--data-dir", data_dir, "--cache-dir", tmp_path / "cache")
    assert missing.returncode == 2 and "cannot load TFDS dataset 'no_such_dataset_here'" in missing.stderr


def scan_cli(*arguments, timeout=60):
    """The scan CLI as a real process: a hang (a FIFO read) fails as a timeout, not a stuck suite."""
    return subprocess.run([sys.executable, "-m", "tltoolkit", "scan", *map(str, arguments)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONPATH": ROOT})


def test_only_regular_files_are_read_and_links_stay_inside_their_class_folder(tmp_path):
    data = tmp_path / "data"
    write_good_images(data / "a", 3)
    write_good_images(data / "b", 3, seed=1)
    outside = write_image(str(tmp_path / "outside.png"), pattern(seed=9))
    os.symlink("/dev/zero", data / "a" / "zero.png")  # read without end before: OOM
    os.mkfifo(data / "a" / "pipe.png")  # blocked forever before
    os.symlink(outside, data / "a" / "link.png")  # leaves the data
    os.symlink("..", data / "a" / "up")  # pulled every class into a
    os.symlink(data / "a" / "img_0_0.png", data / "b" / "borrowed.png")  # another class's image
    os.symlink("img_1_0.png", data / "b" / "alias.png")  # inside its own class folder: followed
    done = scan_cli("--data", data, "--report", tmp_path / "report.csv", "--cache-dir", tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    report = pd.read_csv(tmp_path / "report.csv", keep_default_na=False).set_index("path")
    reasons = {os.path.relpath(p, data): r for p, r in report["reason"].items() if report.loc[p, "status"] == "quarantined"}
    assert reasons == {"a/zero.png": "link outside its class folder", "a/pipe.png": "not a regular file",
                       "a/link.png": "link outside its class folder", "a/up": "link outside its class folder",
                       "b/borrowed.png": "link outside its class folder"}
    assert report.loc[str(data / "a" / "pipe.png"), "detail"] == "a FIFO"
    pair = [report.loc[str(data / "b" / name), "status"] for name in ("alias.png", "img_1_0.png")]
    assert pair == ["ok", "duplicate"]  # the link inside its class folder was followed: the same bytes twice
    assert set(report.loc[report["status"] == "ok", "label"].value_counts()) == {3}
    from tltoolkit.data.probe import probe_file  # what predict reads its inputs with

    assert probe_file("/dev/zero")["reason"] == probe_file(str(data / "a" / "pipe.png"))["reason"] == "not a regular file"


def test_a_file_over_the_size_limit_is_quarantined_unread(tmp_path, monkeypatch):
    from tltoolkit.data import probe

    monkeypatch.setattr(probe, "MAX_FILE_BYTES", 1000)  # the limit is 1 GiB; a test file of 1 GiB is not kind
    path = write_image(str(tmp_path / "big.bmp"), pattern(40, 48))
    assert probe.probe_file(path)["reason"] == "too large"


def test_an_animated_gif_is_decoded_first_frame_only(tmp_path):
    from PIL import Image

    from tltoolkit.pipeline import image_dataset

    frames = [Image.fromarray(pattern(64, 64, seed=i)) for i in range(300)]
    path = tmp_path / "data" / "a" / "anim.gif"
    path.parent.mkdir(parents=True)
    frames[0].save(path, save_all=True, append_images=frames[1:])
    write_good_images(tmp_path / "data" / "b", 2)
    row = scan_here(tmp_path / "data", tmp_path, check=False).table.set_index("path").loc[str(path)]
    assert row["reason"] == "palette,first-frame" and row["decoder"] == "pil"
    table = pd.DataFrame({"path": [str(path)], "decoder": ["pil"], "label_id": [0], "format": ["GIF"],
                          "width": [64], "height": [64]})
    images, _ = next(iter(image_dataset(table, (64, 64), 1, resize="stretch")))
    first = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(images[0].numpy().astype(np.uint8), first)


def test_nul_bytes_and_non_utf8_names_are_quarantined_not_a_crash(tmp_path):
    data = tmp_path / "data"
    write_good_images(data / "a", 2)
    write_good_images(data / "b", 2, seed=1)
    with open(os.path.join(os.fsencode(data / "a"), b"caf\xe9.png"), "wb") as handle:  # Latin-1, not UTF-8
        handle.write((data / "a" / "img_0_0.png").read_bytes())
    latin = os.path.join(os.fsencode(data), b"caf\xe9")  # a class folder whose name is not UTF-8
    os.mkdir(latin)
    with open(os.path.join(latin, b"x.png"), "wb") as handle:
        handle.write((data / "a" / "img_0_0.png").read_bytes())
    done = scan_cli("--data", data, "--report", tmp_path / "r.parquet", "--cache-dir", tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    report = pd.read_parquet(tmp_path / "r.parquet").set_index("path")
    assert report.loc[str(data / "a" / "caf\\xe9.png"), "reason"] == "file name is not UTF-8"
    assert report.loc[str(data / "caf\\xe9" / "x.png"), "reason"] == "class folder name is not UTF-8"
    assert "from the cache" not in done.stdout  # rows refused unread are neither read nor cached
    assert sorted(scan_here(data, tmp_path).class_names) == ["a", "b"]
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\ndata/a/img_0_0.png,a\ndata/b/img_1_0.png,b\n\"data/a/x\x00.png\",a\n")
    result = scan_here(manifest, tmp_path, check=False)
    assert list(result.quarantined["reason"]) == ["NUL byte in the path"]


def test_pillow_decompression_bomb_warnings_do_not_reach_users(tmp_path):
    path = write_image(str(tmp_path / "big.png"), pattern(60, 60))  # 3600 pixels: over a limit of 2000
    script = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 2000\n"
              "from tltoolkit.data.probe import probe_file, load_rgb\n"
              "print(probe_file(sys.argv[1])['status'], load_rgb(sys.argv[1]).shape)")
    done = subprocess.run([sys.executable, "-W", "default", "-c", script, path], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert done.returncode == 0 and done.stdout.split()[0] == "ok", done.stderr
    assert "DecompressionBomb" not in done.stderr and "site-packages" not in done.stderr, done.stderr
