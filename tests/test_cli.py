"""The CLI as users run it: a real subprocess, exit codes, stdout and stderr."""

import io
import json
import subprocess
import sys

import pandas as pd
import pytest


def tltoolkit(*args):
    return subprocess.run([sys.executable, "-m", "tltoolkit", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_models_lists_every_architecture_from_the_registry():
    from tltoolkit.architectures import all_specs

    result = tltoolkit("models", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {s.id for s in all_specs()}
    assert rows["vgg16"]["params"] == 138_357_544
    assert rows["vgg16"]["stages"] == "block1 block2 block3 block4 block5"
    assert rows["vgg16"]["weights"] == "keras, tv_in1k"  # `imagenet` loads the first
    assert rows["vgg16"]["source"] == "keras.applications, torchvision"
    assert rows["vgg16"]["top1"] == "71.3, 71.6"
    assert rows["resnet18"]["weights"] == "tv_in1k, a1_in1k"
    assert rows["resnet18"]["licence"] == "BSD-3-Clause, Apache-2.0"
    assert rows["nin"]["weights"] == "-"
    assert result.stderr == "", "TensorFlow's start-up noise is hidden"


@pytest.mark.slow
def test_models_family_filter_and_csv():
    result = tltoolkit("models", "--family", "vgg", "--format", "csv")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert set(frame["id"]) == {"vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"}


@pytest.mark.slow
def test_layers_shows_freeze_points():
    result = tltoolkit("layers", "vgg16", "--format", "csv")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout)).set_index("freeze-until")
    assert frame.loc["block5", "trainable params"] == 130_722_280
    assert frame.loc["head", "trainable params"] == 123_642_856
    assert frame.loc["block5", "first layer"] == "block5_conv1"
    assert result.stderr == ""


@pytest.mark.slow
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


@pytest.mark.slow
def test_weights_convert_writes_a_file_that_loads_and_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    import numpy as np

    from tests.torch_reference import randomize_batch_norm, torch, torchvision
    from tltoolkit.architectures import build

    torch.manual_seed(0)
    reference = randomize_batch_norm(torchvision.models.resnet18(weights=None))
    source = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), source)
    out = tmp_path / "resnet18.weights.h5"

    result = tltoolkit("weights", "convert", str(source), "--arch", "resnet18", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and out.exists()
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype("float32")
    with torch.no_grad():
        expected = torch.softmax(reference(torch.from_numpy(x)), 1).numpy()
    ours = build("resnet18", weights=str(out))
    np.testing.assert_allclose(np.asarray(ours(x.transpose(0, 2, 3, 1))), expected, atol=1e-5)

    # Refusals, in this process (the same main() the subprocess ran): one line, exit 2, nothing written.
    from tltoolkit.cli import main

    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep fd 2 alone so capsys sees the CLI's stderr
    refusals = [
        ([], out, "already exists; pass --force"),
        # The published tv_in1k file's name carries its sha256 prefix: this file is not it.
        (["--tag", "tv_in1k"], tmp_path / "tagged.weights.h5", "does not match the published sha256 hash"),
        (["--arch", "resnet34"], tmp_path / "r34.weights.h5", "lacks layer1.2.conv1.weight"),
    ]
    for extra, target, message in refusals:
        capsys.readouterr()
        assert main(["weights", "convert", str(source), "--arch", "resnet18", "--out", str(target), *extra]) == 2
        stderr = capsys.readouterr().err
        assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert target == out or not target.exists()


def test_one_line_collapses_a_message_and_names_a_silent_exception():
    from tltoolkit.errors import one_line

    assert one_line(ValueError("first line\n   second\tline  ")) == "first line second line"
    assert one_line(ValueError("x" * 500), 120) == "x" * 120
    assert one_line(KeyError()) == "KeyError"


def test_tltoolkit_debug_raises_with_the_exception_the_message_was_made_from(tmp_path, capsys, monkeypatch):
    from tltoolkit.cli import main
    from tltoolkit.errors import TltoolkitError

    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep fd 2 alone so capsys sees the CLI's stderr
    arguments = ["predict", "--model", str(broken), str(tmp_path / "image.png")]
    assert main(arguments) == 2
    stderr = capsys.readouterr().err
    assert f"cannot load {broken}" in stderr and len(stderr.strip().splitlines()) == 1, stderr

    monkeypatch.setenv("TLTOOLKIT_DEBUG", "1")
    with pytest.raises(TltoolkitError, match="cannot load") as raised:
        main(arguments)
    assert raised.value.__context__ is not None and not raised.value.__suppress_context__
