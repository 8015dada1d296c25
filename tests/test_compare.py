"""`tltoolkit models --compare`: measured on real built models, charted as a PNG."""

import io

import pandas as pd
import pytest
from PIL import Image

from tltoolkit.architectures import get_spec
from tltoolkit.cli import main
from tltoolkit.compare import compare, comparison_figure
from tltoolkit.errors import TltoolkitError
from tltoolkit.reports import save_figure


@pytest.mark.slow  # builds and times several bases
def test_compare_quick_writes_the_table_and_bubble_chart(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    chart = tmp_path / "chart.png"
    archs = ["lenet5", "resnet20_cifar", "densenet121"]
    assert main(["models", "--compare", *archs, "--quick", "--out", str(chart), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out.rsplit("wrote", 1)[0]))
    assert frame["id"].tolist() == archs
    assert frame["params"].tolist() == [get_spec(a).params for a in archs]
    assert frame["input"].tolist() == ["64x64"] * 3 and frame["batch"].tolist() == [4] * 3
    assert (frame["latency_ms"] > 0).all() and (frame["throughput"] > 0).all() and (frame["activation_MB"] > 0).all()
    densenet = frame.set_index("id").loc["densenet121"]
    # the best published top-1 among its weight tags (timm's ra_in1k beats keras.applications' 0.750)
    assert densenet["top1"] == pytest.approx(0.765) and densenet["top1_source"].startswith("timm results-imagenet")
    assert pd.isna(frame.set_index("id").loc["lenet5", "top1"])
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size[0] > 400

    assert main(["models", "--compare", "lenet5", "--quick", "--out", str(chart)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_activation_memory_grows_with_the_input_and_unknown_ids_fail_first():
    small = compare(["resnet20_cifar"], quick=True, timed_calls=1, batch_size=1)
    full = compare(["resnet20_cifar"], timed_calls=1, batch_size=2)
    assert full.loc[0, "input"] == "32x32" and small.loc[0, "input"] == "64x64"
    assert small.loc[0, "activation_MB"] == pytest.approx(4 * full.loc[0, "activation_MB"], rel=0.01)
    with pytest.raises(TltoolkitError, match="unknown architecture 'resnet5'"):
        compare(["resnet20_cifar", "resnet5"])


def test_chart_uses_top1_when_every_model_has_one(tmp_path):
    table = pd.DataFrame({"id": ["vgg16", "resnet50"], "params": [138e6, 25.6e6], "GMACs": [15.5, 3.9],
                          "top1": [0.713, 0.749]})
    figure = comparison_figure(table)
    assert figure.axes[0].get_ylabel() == "ImageNet top-1 accuracy (%)"
    table.loc[0, "top1"] = float("nan")
    assert comparison_figure(table).axes[0].get_ylabel() == "parameters (millions)"
    assert save_figure(figure, tmp_path / "c.png").stat().st_size > 0
