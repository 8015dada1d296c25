"""Failures of the disk, for real: a full tmpfs, read-only mounts, a file where a folder goes. Each
gives one line and exit 2 and leaves nothing half-written; a read-only complete cache still reads."""

import os

import numpy as np
import pandas as pd
import pytest

from tests.faults import one_line_error, read_only, tltoolkit, tmpfs
from tests.runs import train_run, write_class_folders

ARCH = "resnet20_cifar"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    write_class_folders(root / "data", per_class=3)
    return root


def extract(*arguments):
    return ["extract", "--base", ARCH, "--weights", "none", "--quiet", *arguments]


def test_extract_into_a_read_only_out_or_a_file_as_cache_dir_is_one_line(data, tmp_path):
    (tmp_path / "ro").mkdir()
    done = tltoolkit([read_only(tmp_path / "ro")], *extract("--data", data / "data", "--out", tmp_path / "ro" / "out",
                                                            "--cache-dir", tmp_path / "cache"))
    assert "is read-only or not yours); choose a writable folder" in one_line_error(done)
    assert "computed" not in done.stderr  # refused before any work
    (tmp_path / "file").write_text("not a folder")
    done = tltoolkit([], *extract("--data", data / "data", "--out", tmp_path / "out", "--cache-dir", tmp_path / "file"))
    assert f"--cache-dir {tmp_path / 'file'} is a file" in one_line_error(done)
    assert not (tmp_path / "out").exists()


def test_a_complete_cache_on_a_read_only_disk_is_read(data, tmp_path):
    arguments = extract("--data", data / "data", "--cache-dir", tmp_path / "cache")
    first = tltoolkit([], *arguments, "--out", tmp_path / "first")
    assert first.returncode == 0, first.stderr
    again = tltoolkit([read_only(tmp_path / "cache")], *arguments, "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert "computed 0 of 9" in again.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again"), pd.read_parquet(tmp_path / "first"))


@pytest.fixture(scope="module")
def run(data):
    return train_run(data / "run", data / "data", epochs=1, filters=8)


@pytest.mark.parametrize("fmt, name", [("keras", "m.keras"), ("savedmodel", "served")])
def test_export_into_a_full_disk_is_one_line_and_leaves_nothing(run, tmp_path, fmt, name):
    (tmp_path / "small").mkdir()
    done = tltoolkit([tmpfs(tmp_path / "small", "32k")], "export", "--model", run, "--format", fmt, "--out",
                     tmp_path / "small" / name, after=f"echo LEFT; ls -A {tmp_path / 'small'}")
    assert "no space left on device; free space there or choose another folder" in one_line_error(done)
    assert done.stdout.split("LEFT")[-1].split() == []  # no temporary file or folder left behind


def test_evaluate_into_a_full_disk_writes_no_part_of_its_report(run, data, tmp_path):
    (tmp_path / "small").mkdir()
    out = tmp_path / "small" / "report"
    done = tltoolkit([tmpfs(tmp_path / "small", "60k")], "evaluate", "--model", run, "--data", data / "data",
                     "--out", out, "--quiet", after=f"echo LEFT; ls -A {out}")
    assert "no space left on device" in one_line_error(done)
    assert done.stdout.split("LEFT")[-1].split() == []  # before: 7 of 8 files, and a retry refused


@pytest.mark.parametrize("command", ["scan", "predict", "augment"])
def test_scan_report_predict_out_and_augment_out_into_a_full_disk_are_one_line(command, run, data, tmp_path):
    (tmp_path / "small").mkdir()
    out = tmp_path / "small" / {"scan": "report.csv", "predict": "predictions.csv", "augment": "grid.png"}[command]
    arguments = {"scan": ["scan", "--data", data / "data", "--report", out, "--no-cache"],
                 "predict": ["predict", "--model", run, "--out", out, "--quiet", data / "data"],
                 "augment": ["augment", "--data", data / "data", "--out", out, "--image-size", "256"]}[command]
    # The disk is full before the command starts.
    fill = f"(head -c 1M /dev/zero > {tmp_path / 'small' / 'fill'} 2>/dev/null || true)"
    done = tltoolkit([tmpfs(tmp_path / "small", "8k"), fill], *arguments, after=f"echo LEFT; ls -A {tmp_path / 'small'}")
    assert "no space left on device" in one_line_error(done)
    assert done.stdout.split("LEFT")[-1].split() == ["fill"]  # nothing half-written, no temporary left
