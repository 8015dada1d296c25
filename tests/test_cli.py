"""The CLI as users run it: a real subprocess, exit codes, stdout and stderr."""

import io
import json
import subprocess
import sys

import pandas as pd


def tltoolkit(*args):
    return subprocess.run([sys.executable, "-m", "tltoolkit", *args], capture_output=True, text=True, timeout=600)


def test_models_lists_every_architecture_from_the_registry():
    from tltoolkit.architectures import all_specs

    result = tltoolkit("models", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {s.id for s in all_specs()}
    assert rows["vgg16"]["params"] == 138_357_544
    assert rows["vgg16"]["stages"] == "block1 block2 block3 block4 block5"
    assert rows["vgg16"]["weights"] == "imagenet"
    assert result.stderr == "", "TensorFlow's start-up noise is hidden"


def test_models_family_filter_and_csv():
    result = tltoolkit("models", "--family", "vgg", "--format", "csv")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert set(frame["id"]) == {"vgg11", "vgg13", "vgg16", "vgg19"}


def test_layers_shows_freeze_points():
    result = tltoolkit("layers", "vgg16", "--format", "csv")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout)).set_index("freeze-until")
    assert frame.loc["block5", "trainable params"] == 130_722_280
    assert frame.loc["head", "trainable params"] == 123_642_856
    assert frame.loc["block5", "first layer"] == "block5_conv1"
    assert result.stderr == ""


def test_unknown_architecture_is_one_line_with_close_matches():
    result = tltoolkit("layers", "vgg61")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown architecture 'vgg61'" in lines[0] and "vgg16" in lines[0]


def test_unknown_family_is_an_error():
    result = tltoolkit("models", "--family", "resnt")
    assert result.returncode == 2
    assert "resnet" in result.stderr
