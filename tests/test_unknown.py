"""Calibration and the "unknown" answer wired through the CLI: `calibrate` refits the temperature and the
rejection threshold into a run, `predict` answers unknown below it (or below the one --coverage derives),
`evaluate --ood` measures the rejection of images of other classes; on a tiny classifier trained here."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.images import write_image
from tests.runs import train_run, write_class_folders
from tltoolkit import predict
from tltoolkit.cli import main
from tltoolkit.inference.classifier import load_classifier
from tltoolkit.rejection import auroc, rejection_of


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Class folders, a run trained on them and a folder of out-of-class images (grey and dark noise)."""
    root = tmp_path_factory.mktemp("unknown")
    write_class_folders(root / "data", per_class=8)
    rng = np.random.default_rng(9)
    for i in range(6):
        write_image(root / "ood" / f"grey_{i}.png", rng.integers(90 - 15 * i, 140, (40, 40, 3)).astype(np.uint8))
    return root / "data", train_run(root / "run", root / "data", epochs=30), root / "ood"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the scan cache
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep fd 2 alone so capsys sees the CLI's stderr


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run, for commands that rewrite its model."""
    return shutil.copytree(trained[1], tmp_path / "run")


def test_calibrate_then_predict_answers_unknown_below_the_threshold(trained, run, capsys):
    data, _, _ = trained
    plain = predict(run, [data])  # no stored settings: the maximum softmax probability, never unknown
    np.testing.assert_allclose(plain["score"], plain["probability"], atol=1e-6)
    assert "closest" not in plain and "unknown" not in set(plain["label"])
    assert main(["predict", "--model", str(run), str(data), "--coverage", "0.9", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert "carries no validation scores" in error and "tltoolkit calibrate" in error and "\n" not in error

    # energy: the msp of a model this sure of its training images is 1.0 for all (no threshold between them)
    assert main(["calibrate", "--model", str(run), "--data", str(data), "--coverage", "0.5", "--score", "energy",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "on 24 labelled images: temperature 1 ->" in printed and "keeps 50% of them" in printed
    stored = rejection_of(load_classifier(run).model)
    assert stored["coverage"] == 0.5 and stored["score"] == "energy" and len(stored["quantiles"]) == 24
    assert not list(run.glob(".model.keras*"))  # written atomically: no temporary left

    frame = predict(run, [data])
    truth = [p.split("/")[-2] for p in frame["path"]]
    unknown = frame["label"] == "unknown"
    # the images it was calibrated on: half are kept (one image either way for float32 vs float64 scores)
    assert abs(unknown.mean() - 0.5) <= 1 / 24 + 1e-9
    assert (frame.loc[unknown, "score"] < stored["threshold"]).all()
    assert (frame.loc[~unknown, "score"] >= stored["threshold"]).all()
    assert frame.loc[unknown, "closest"].tolist() == [t for t, u in zip(truth, unknown) if u]
    assert (frame.loc[~unknown, "closest"] == "").all() and (frame.loc[~unknown, "label"] == np.array(truth)[~unknown]).all()
    # --coverage derives another threshold from the stored validation scores
    assert (predict(run, [data], coverage=1.0)["label"] == "unknown").sum() <= 1
    assert (predict(run, [data], coverage=0.25)["label"] == "unknown").mean() == pytest.approx(0.75, abs=1 / 24 + 1e-9)

    # a class named "unknown" stays that class: a rejected image reads "<unknown>"
    index = json.loads((run / "class_index.json").read_text())
    renamed = {("unknown" if i == 0 else name): i for name, i in index.items()}
    (run / "class_index.json").write_text(json.dumps(renamed))
    frame = predict(run, [data], coverage=0.25)
    rejected = frame["closest"] != ""
    assert (frame.loc[rejected, "label"] == "<unknown>").all() and rejected.mean() > 0.5
    first = next(name for name, i in index.items() if i == 0)
    truth = np.array([p.split("/")[-2] for p in frame["path"]])
    assert set(frame.loc[~rejected & (truth == first), "label"]) <= {"unknown"}


@pytest.mark.parametrize("command", ["predict", "evaluate", "calibrate"])
def test_coverage_outside_zero_one_is_a_one_line_error(trained, command, capsys):
    data, run, _ = trained
    args = {"predict": [str(data)], "evaluate": ["--data", str(data), "--out", "unused"],
            "calibrate": ["--data", str(data)]}[command]
    assert main([command, "--model", str(run), *args, "--coverage", "1.5", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("--coverage must be in (0, 1], got 1.5; e.g. 0.95 keeps 95% of known images")
    assert "\n" not in error


def test_evaluate_ood_reports_auroc_and_false_positive_rates(trained, run, tmp_path, capsys):
    data, _, ood = trained
    assert main(["calibrate", "--model", str(run), "--data", str(data), "--coverage", "0.75", "--score", "energy",
                 "--quiet"]) == 0
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--ood", str(ood), "--out", str(out),
                 "--quiet", "--coverage", "0.75"]) == 0
    printed = capsys.readouterr().out
    assert "rejection of unknown inputs: energy score; threshold" in printed and "against 6 --ood images" in printed
    found = json.loads((out / "summary.json").read_text())["rejection"]
    known = pd.read_csv(out / "predictions.csv")["score"].to_numpy()
    unknown = predict(run, [ood])["score"].to_numpy()
    threshold = rejection_of(load_classifier(run).model)["threshold"]
    assert found["ood_images"] == 6 and found["target_coverage"] == 0.75 and found["score"] == "energy"
    assert found["threshold"] == pytest.approx(threshold)
    assert found["coverage"] == pytest.approx(np.mean(known >= threshold), abs=1 / 24 + 1e-9)
    assert found["auroc"] == pytest.approx(auroc(known, unknown), abs=1e-6)
    assert found["fpr_at_threshold"] == pytest.approx(np.mean(unknown >= threshold), abs=1 / 6 + 1e-9)
    # the literature's FPR at 75% TPR: the threshold keeping 75% of these known images
    cut = np.sort(known)[::-1][17] * (1 - 1e-6)
    assert found["fpr_at_target_coverage"] == pytest.approx(np.mean(unknown >= cut), abs=1e-9)
