"""predict, evaluate, TTA and ensembles on tiny classifiers trained here on generated colour images."""

import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.runs import COLOURS, write_class_folders, train_run
from tltoolkit.cli import main
from tltoolkit import evaluate, predict
from tltoolkit.errors import TltoolkitError
from tltoolkit.inference.classifier import load_classifier
from tltoolkit.inference.predict import probabilities
from tltoolkit.inference.tta import flip_views, load_size, ten_crop


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Class folders and two runs trained on them with different seeds (so their outputs differ)."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    write_class_folders(data, per_class=8)
    first = train_run(root / "run_a", data, seed=0)
    second = train_run(root / "run_b", data, seed=1, epochs=25, filters=6)
    return data, first, second


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the scan cache
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep fd 2 alone so capsys sees the CLI's stderr


def coordinate_images(batch, height, width):
    """Pixel (b, y, x) holds (y, x, b): every crop says where it came from."""
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([np.stack([y, x, np.full_like(y, b)], axis=-1) for b in range(batch)]).astype(np.int32)


def test_ten_crop_is_centre_four_corners_and_their_mirrors():
    images = coordinate_images(2, 9, 12)
    crops = ten_crop(images, (4, 5)).numpy()
    assert crops.shape == (2, 10, 4, 5, 3)
    expected_top_left = [(2, 3), (0, 0), (0, 7), (5, 0), (5, 7)]  # centre, TL, TR, BL, BR
    for b in range(2):
        for view, (top, left) in enumerate(expected_top_left):
            np.testing.assert_array_equal(crops[b, view], images[b, top:top + 4, left:left + 5])
            np.testing.assert_array_equal(crops[b, view + 5], crops[b, view][:, ::-1])
        assert len({crops[b, v].tobytes() for v in range(10)}) == 10


def test_flip_views_and_ten_crop_load_size():
    images = coordinate_images(3, 4, 6)
    views = flip_views(images).numpy()
    assert views.shape == (3, 2, 4, 6, 3)
    np.testing.assert_array_equal(views[:, 0], images)
    np.testing.assert_array_equal(views[:, 1], images[:, :, ::-1])
    assert load_size((224, 224), "ten-crop") == (256, 256)
    assert load_size((32, 48), "ten-crop") == (37, 55)
    assert load_size((32, 32), "flip") == (32, 32)


def test_ten_crop_probabilities_are_the_mean_over_the_ten_views(trained):
    from tltoolkit.pipeline import image_dataset

    data, run, _ = trained
    classifier = load_classifier(run)
    table = pd.DataFrame({"path": sorted(str(p) for p in data.glob("*/*.png"))[:5]})
    got = probabilities(classifier, table, tta="ten-crop", batch_size=2)
    (images,) = list(image_dataset(table, load_size((32, 32), "ten-crop"), batch_size=5, with_labels=False,
                                   deterministic=True))
    images = images.numpy()
    crops = [images[:, t:t + 32, l:l + 32] for t, l in [(2, 2), (0, 0), (0, 5), (5, 0), (5, 5)]]
    views = crops + [c[:, :, ::-1] for c in crops]
    manual = np.mean([classifier.model.predict(v, verbose=0) for v in views], axis=0)
    np.testing.assert_allclose(got, manual, atol=1e-6)


def test_predict_every_tta_mode_gives_the_true_class_and_normalised_probabilities(trained):
    data, run, _ = trained
    results = {tta: predict(run, [data], top_k=3, tta=tta) for tta in ("none", "flip", "ten-crop")}
    truth = [os.path.basename(os.path.dirname(p)) for p in results["none"]["path"]]
    for tta, frame in results.items():
        assert frame["label"].tolist() == truth, tta
        total = frame[["probability", "probability_2", "probability_3"]].sum(axis=1)
        np.testing.assert_allclose(total, 1.0, atol=1e-5)
        assert (frame["probability"] >= frame["probability_2"]).all()
        assert (frame["error"] == "").all()


def test_predict_reports_bad_files_and_writes_parquet(trained, tmp_path, capsys):
    data, run, _ = trained
    folder = tmp_path / "inbox"
    folder.mkdir()
    good = shutil.copy(next(data.glob("red/*.png")), folder / "photo.png")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "predictions.parquet"
    assert main(["predict", "--model", str(run), str(folder), "--top-k", "2", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "notes.jpg" in captured.err and "empty.png" in captured.err
    frame = pd.read_parquet(out).set_index("path")
    assert frame.loc[str(good), "label"] == "red" and frame.loc[str(good), "error"] == ""
    assert frame.loc[str(folder / "notes.jpg"), "error"].startswith("not an image")
    assert frame.loc[str(folder / "empty.png"), "error"].startswith("empty")
    assert np.isnan(frame.loc[str(folder / "empty.png"), "probability"])
    # the check pass keeps the facts the pipeline plans each file's decoder from
    from PIL import Image

    from tltoolkit.inference.predict import image_table

    checked = image_table([folder]).set_index("path")
    assert tuple(checked.loc[str(good), ["decoder", "format", "width", "height"]]) == ("tf", "PNG", *Image.open(good).size)

    # an existing --out is kept; nothing predictable is a failure
    assert main(["predict", "--model", str(run), str(folder), "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["predict", "--model", str(run), str(folder / "notes.jpg"), "--quiet", "--format", "json"]) == 1


def test_a_keras_file_takes_labels_from_labels_txt_or_numbers(trained, tmp_path):
    data, run, _ = trained
    image = str(next(data.glob("green/*.png")))
    model = tmp_path / "plain" / "model.keras"
    model.parent.mkdir()
    shutil.copy(os.path.join(run, "model.keras"), model)
    assert predict(model, [image], top_k=1)["label"].tolist() == ["1"]  # green's id
    (model.parent / "labels.txt").write_text("".join(f"{name}\n" for name in COLOURS))
    assert predict(model, [image], top_k=1)["label"].tolist() == ["green"]
    (model.parent / "labels.txt").write_text("a\nb\n")
    with pytest.raises(TltoolkitError, match="3 outputs but its class index names 2"):
        load_classifier(model)


@pytest.mark.slow
def test_a_fresh_process_loads_a_model_with_tltoolkit_layers(trained, tmp_path):
    """finetune's models hold our registered layers (augmentation, architecture blocks); `predict` in
    a new process must load them without the user importing anything."""
    import subprocess
    import sys

    import keras

    from tltoolkit.augment import PCAColor

    data, run, _ = trained
    inner = keras.models.load_model(os.path.join(run, "model.keras"))
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = PCAColor(eigenvalues=[1.0, 1.0, 1.0], eigenvectors=np.eye(3))(inputs)  # inactive at inference
    shutil.copytree(run, tmp_path / "run")
    keras.Model(inputs, inner(x)).save(tmp_path / "run" / "model.keras")
    image = str(next(data.glob("blue/*.png")))
    done = subprocess.run([sys.executable, "-m", "tltoolkit", "predict", "--model", str(tmp_path / "run"), image,
                           "--format", "csv", "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert pd.read_csv(io.StringIO(done.stdout))["label"].tolist() == ["blue"]


def test_ensemble_is_the_exact_mean_of_its_models(trained):
    data, first, second = trained
    table = pd.DataFrame({"path": sorted(str(p) for p in data.glob("*/*.png"))})
    a, b = probabilities(first, table), probabilities(second, table)
    assert np.abs(a - b).max() > 1e-5  # two genuinely different models
    np.testing.assert_allclose(probabilities([first, second], table), (a + b) / 2, rtol=1e-6, atol=0)
    flipped = (probabilities(first, table, "flip") + probabilities(second, table, "flip")) / 2
    np.testing.assert_allclose(probabilities([first, second], table, "flip"), flipped, rtol=1e-6, atol=0)


def test_ensemble_of_runs_with_other_classes_is_one_clear_error(trained, tmp_path):
    _, first, _ = trained
    other = tmp_path / "other_run"
    shutil.copytree(first, other)
    (other / "class_index.json").write_text(json.dumps({"cat": 0, "dog": 1, "fox": 2}))
    with pytest.raises(TltoolkitError, match="classes differ"):
        predict([first, other], [tmp_path])


def test_evaluate_writes_tables_and_figures_matching_scikit_learn(trained, tmp_path, capsys):
    from sklearn.metrics import precision_recall_fscore_support

    data, run, _ = trained
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--out", str(out), "--quiet",
                 "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy 1.0000" in printed and "per class" in printed
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "worst_predictions.png",
                 "reliability.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 200
    predictions = pd.read_csv(out / "predictions.csv")
    per_class = pd.read_csv(out / "per_class.csv").set_index("class")
    p, r, f, s = precision_recall_fscore_support(predictions["label"], predictions["predicted"],
                                                 labels=list(COLOURS), zero_division=0)
    np.testing.assert_allclose(per_class.loc[list(COLOURS), ["precision", "recall", "f1"]].to_numpy(),
                               np.stack([p, r, f], axis=1))
    assert per_class.loc[list(COLOURS), "support"].tolist() == s.tolist() == [8, 8, 8]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 24 and summary["accuracy"] == 1.0
    # The run's temperature (fitted on its validation split) and the calibration error with and without it,
    # recomputed here from the predictions: ECE = sum over 15 confidence bins of |accuracy - confidence| * share.
    from tltoolkit.calibration import temperature_of
    from tltoolkit.inference.classifier import load_classifier

    assert summary["temperature"] == pytest.approx(temperature_of(load_classifier(run).model))
    confidence, correct = predictions["probability"].to_numpy(), predictions["correct"].to_numpy()
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)  # bins ((m-1)/15, m/15]
    expected = sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
                   for b in np.unique(bins))
    assert summary["expected_calibration_error"] == pytest.approx(expected, abs=1e-6)
    assert ("expected_calibration_error_t1" in summary) == (summary["temperature"] != 1.0)
    # a second evaluation into the same folder needs --force
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--out", str(out), "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err


def test_evaluate_finds_the_confused_pairs_of_swapped_labels(trained, tmp_path):
    data, run, _ = trained
    swapped = tmp_path / "swapped"
    shutil.copytree(data / "green", swapped / "green")
    shutil.copytree(data / "red", swapped / "blue")  # red images labelled blue
    shutil.copytree(data / "blue", swapped / "red")
    result = evaluate(run, swapped, top_k=2)
    assert result.accuracy == pytest.approx(1 / 3)
    pairs = result.confused_pairs()
    assert set(zip(pairs["true"], pairs["predicted"], pairs["count"])) == {("blue", "red", 8), ("red", "blue", 8)}
    assert pairs["share"].tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(result.confusion(), [[0, 0, 8], [0, 8, 0], [8, 0, 0]])
    np.testing.assert_allclose(result.confusion(normalize=True).sum(axis=1), 1.0)
    worst = result.worst(4)
    assert (worst["label"] != worst["predicted"]).all()


def test_evaluate_leaves_out_and_counts_unknown_classes(trained, tmp_path, capsys):
    data, run, _ = trained
    grown = tmp_path / "grown"
    shutil.copytree(data, grown)
    write_class_folders(tmp_path / "extra", per_class=3, seed=5)
    shutil.copytree(tmp_path / "extra" / "red", grown / "purple")
    result = evaluate(run, grown)
    assert len(result.predictions) == 24 and result.unknown.to_dict("records") == [{"class": "purple", "images": 3}]
    assert main(["evaluate", "--model", str(run), "--data", str(grown), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert "left out 3 image(s) of classes the model does not know: purple (3)" in capsys.readouterr().err

    only_new = tmp_path / "only_new"
    shutil.copytree(tmp_path / "extra" / "red", only_new / "purple")
    with pytest.raises(TltoolkitError, match="none of the classes"):
        evaluate(run, only_new)


def test_evaluate_compares_single_tta_and_ensemble(trained, tmp_path, capsys):
    data, first, second = trained
    result = evaluate([first, second], data, tta="flip", top_k=2)
    table = result.comparison
    assert table[["model", "tta"]].values.tolist() == [
        [str(first), "none"], [str(second), "none"], ["ensemble of 2", "none"],
        [str(first), "flip"], [str(second), "flip"], ["ensemble of 2", "flip"]]
    paths = pd.DataFrame({"path": result.predictions["path"]})
    ensemble_flip = probabilities([first, second], paths, "flip")
    np.testing.assert_allclose(result.probabilities, ensemble_flip, rtol=1e-6)
    assert table["accuracy"].iloc[-1] == pytest.approx(result.accuracy)
    assert main(["evaluate", "--model", str(first), "--model", str(second), "--data", str(data), "--tta", "flip",
                 "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    assert "single vs TTA vs ensemble" in capsys.readouterr().out


def test_malformed_run_files_are_one_line_in_predict(trained, tmp_path, capsys):
    from pathlib import Path

    run = trained[1]
    image = str(tmp_path / "x.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    model = broken / "model.keras"
    model.write_bytes(model.read_bytes()[:5000])  # truncated
    assert main(["predict", "--model", str(broken), image]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a complete .keras archive" in err and "not found" not in err, err
    shutil.copy(Path(run) / "model.keras", model)
    (broken / "config.json").write_text("[1, 2]")
    assert main(["predict", "--model", str(broken), image]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json is not a mapping of settings" in err, err


def test_the_hint_for_a_folder_without_images_is_a_valid_command(trained, tmp_path, capsys):
    import re

    from tltoolkit.cli import build_parser

    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", str(trained[1]), "--data", str(tmp_path / "empty")]) == 2
    command = re.search(r"`(tltoolkit scan [^`]*)`", capsys.readouterr().err).group(1)
    assert build_parser().parse_args(command.split()[1:]).data == str(tmp_path / "empty")  # argparse accepts it
