"""`finetune` end to end on tiny generated data (3 colour classes, 32x32 PNGs) with resnet20_cifar
(random weights, seeded, saved as a "pretrained" file; or `--weights none`) and on the embedded real
digits: phases, freezing, the growth policy on a growing folder, resume after kill -9, new classes,
the run directory and the CLI's errors."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tltoolkit.cli import main
from tltoolkit.errors import TltoolkitError
from tltoolkit.training.finetune import DEFAULTS, finetune

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": 0, "green": 1, "blue": 2, "yellow": (0, 1)}
BASE = dict(base="resnet20_cifar", weights="none", batch_size=8, seed=0, augment="none", patience=20)


def make_images(root, per_class, classes=("red", "green", "blue"), start=0):
    """Noise plus a strong class colour: learnable from a few images, even on random features."""
    for name in classes:
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            rng = np.random.default_rng([sorted(COLOURS).index(name), i])
            image = rng.integers(0, 80, (32, 32, 3)).astype(np.uint8)
            image[..., COLOURS[name]] += 170
            Image.fromarray(image).save(folder / f"{i}.png")


def settings(tmp, **kwargs):
    return {**BASE, "cache_dir": str(tmp / "cache"), **kwargs}


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A resnet20_cifar base with seeded random weights as a file: a "pretrained" start for the recipe."""
    from tltoolkit.architectures import build

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.weights.h5"
    build("resnet20_cifar", include_top=False, input_shape=(32, 32, 3)).save_weights(path)
    return str(path)


@pytest.fixture(scope="module")
def grown(tmp_path_factory, random_weights):
    """One run directory through three runs, the policy by its rule of thumb (no budget): head only; a
    grown folder (the prior unfreezes conv4); a new class."""
    tmp = tmp_path_factory.mktemp("grown")
    data, out = tmp / "data", tmp / "run"
    make_images(data, 12)
    config = settings(tmp, data=str(data), out=str(out), weights=random_weights, policy_thresholds=[20, 40, 1000],
                      policy_budget=0, fine_tune_epochs=2)
    first = finetune(config, progress=False, echo=quiet)
    snapshot1 = pd.read_parquet(out / "snapshot.parquet")
    make_images(data, 20, start=12)
    lines = []
    plan = finetune(config, plan=True, progress=False, echo=lines.append)
    second = finetune(config, progress=False, echo=quiet)
    snapshot2 = pd.read_parquet(out / "snapshot.parquet")
    model2 = keras.models.load_model(out / "model.keras")
    make_images(data, 12, classes=("yellow",))
    third = finetune({**config, "epochs": 0, "fine_tune_epochs": 0}, progress=False, echo=quiet)
    return dict(out=out, data=data, config=config, runs=[first, second, third], plan=plan, plan_lines=lines,
                snapshots=(snapshot1, snapshot2), model2=model2)


@pytest.mark.slow
def test_phase_1_alone_writes_the_whole_run_directory(grown):
    first, out = grown["runs"][0], grown["out"]
    assert first["decision"] == "head" and [p["phase"] for p in first["phases"]] == [1]
    assert re.fullmatch(r"policy: auto without a budget to measure in, by the rule of thumb "
                        r"\(\d+ images/class < 20\): training the head only", first["notes"][1])
    for name in ["config.json", "class_index.json", "snapshot.parquet", "metrics.csv", "model.keras", "report.md",
                 "state.json", "plots/curves.png", "plots/confusion.png"]:
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp")) and not (out / "checkpoints").exists()
    assert set(json.loads((out / "config.json").read_text())) == set(DEFAULTS)
    snapshot = grown["snapshots"][0]
    assert list(snapshot.columns) == ["sha256", "path", "label", "label_id", "split"] and len(snapshot) == 36
    assert first["phases"][0]["val_accuracy"] >= 0.5  # colours are learnable on random conv features


@pytest.mark.slow
def test_saved_model_loads_in_safe_mode_and_takes_raw_images(grown):
    import tltoolkit.architectures  # noqa: F401  registers the architectures' own layers

    model = keras.models.load_model(grown["out"] / "model.keras")  # safe_mode=True is the default
    image = np.asarray(Image.open(next((grown["data"] / "red").glob("*.png"))))[None]
    probabilities = model.predict(image, verbose=0)
    assert model.input.dtype == "uint8" and probabilities.shape == (1, 4)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
    assert [layer.name for layer in model.layers if "augment" in layer.name] == []


@pytest.mark.slow
def test_grown_folder_extracts_only_new_images_and_unfreezes_per_policy(grown):
    first, second = grown["runs"][:2]
    assert grown["plan"]["misses"] == 60 and grown["plan"]["decision"] == "conv4"
    assert any("60 to extract" in line for line in grown["plan_lines"])
    assert second["run"] == 2 and second["extracted"] == 60
    assert second["decision"] == "conv4" and second["trained_stages"] == ["conv4"]
    assert any(re.search(r"\(\d+ images/class ≥ 20\): training conv4 and the head", note) for note in second["notes"])
    old, new = grown["snapshots"]
    merged = old.merge(new, on="sha256", suffixes=("_old", "_new"))
    assert len(merged) == 36 and (merged["split_old"] == merged["split_new"]).all()
    metrics = pd.read_csv(grown["out"] / "metrics.csv")
    assert set(zip(metrics["run"], metrics["phase"])) >= {(1, 1), (2, 1), (2, 2)}
    report = (grown["out"] / "report.md").read_text()
    assert "## Run 1" in report and "## Run 2" in report and "training conv4 and the head" in report


@pytest.mark.slow
def test_a_new_class_grows_the_head_keeping_the_old_weights(grown):
    third = grown["runs"][2]
    assert third["new_classes"] == ["yellow"] and third["classes"][:3] == ["blue", "green", "red"]
    assert any("head grows from 3 to 4 outputs" in note for note in third["notes"])
    if grown["runs"][1]["phases"][1]["kept"]:  # run 2 fine-tuned the base: features come from it, all anew
        assert third["extracted"] == 108 and any("fine-tuned base re-extracts" in note for note in third["notes"])
    else:
        assert third["extracted"] == 12
    from tltoolkit.training.phases import find_classifier

    old = find_classifier(grown["model2"]).get_layer("predictions").get_weights()
    new = find_classifier(keras.models.load_model(grown["out"] / "model.keras")).get_layer("predictions").get_weights()
    assert new[0].shape == (64, 4)
    np.testing.assert_array_equal(new[0][:, :3], old[0])
    np.testing.assert_array_equal(new[1][:3], old[1])
    state = json.loads((grown["out"] / "state.json").read_text())
    assert [r["run"] for r in state["runs"]] == [1, 2, 3]
    assert json.loads((grown["out"] / "class_index.json").read_text()) == {"blue": 0, "green": 1, "red": 2, "yellow": 3}


@pytest.fixture(scope="module")
def two_phases(tmp_path_factory, random_weights):
    tmp = tmp_path_factory.mktemp("phases")
    make_images(tmp / "data", 16)
    config = settings(tmp, data=str(tmp / "data"), out=str(tmp / "run"), weights=random_weights,
                      freeze_until="conv4", val_split=0.3, epochs=1, learning_rate=1e-4, fine_tune_epochs=6,
                      fine_tune_learning_rate=3e-3, warmup_epochs=1)
    return finetune(config, progress=False, echo=quiet)


def real_digits(root, per_class, source="digits59"):
    """The first `per_class` images of each class of an embedded real folder, copied under `root`."""
    import shutil

    for folder in sorted((ROOT / "data" / source).iterdir()):
        (root / folder.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.png"))[:per_class]:
            shutil.copy(path, root / folder.name / path.name)
    return root


BACKBONE = str(ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5")


@pytest.mark.slow
def test_phase_1_converges_and_standardises_inside_the_model(tmp_path):
    """Real digits 5-9 on the digits 0-4 backbone: the sweep's head fits the training images; kept, it
    is refit on training and validation images, its standardisation their statistics, inside the model."""
    from tltoolkit.features.cache import FeatureCache
    from tltoolkit.data import scan
    from tltoolkit.features.extractor import feature_extractor
    from tltoolkit.heads import NORMALIZATION
    from tltoolkit.training.phases import find_classifier

    data = real_digits(tmp_path / "digits", 16)
    config = settings(tmp_path, base="resnet20_cifar", weights=BACKBONE, data=str(data), out=str(tmp_path / "run"),
                      freeze_until="head", batch_size=32)
    entry = finetune(config, progress=False, echo=quiet)
    sweep = pd.DataFrame(entry["head_sweep"])
    assert len(sweep) == 5 and (sweep["chosen"] == "yes").sum() == 1  # 5 L2 values (a linear head: no dropout)
    assert (sweep["epochs"] < 500).all()  # each stopped by its patience, not by the cap
    report = (tmp_path / "run" / "report.md").read_text()
    assert "### Phase 1: the head settings tried (scored on validation)" in report
    assert "frozen features alone: k-NN accuracy" in report  # the baseline `tltoolkit rank` would report
    assert entry["baseline"]["knn_accuracy"] >= 0.8 and np.isfinite(entry["baseline"]["logme"])

    assert any(note.startswith("the head is kept: chosen again by 5-fold cross-validation") for note in entry["notes"])
    table = scan(str(data), 0.2).usable()
    extractor = feature_extractor("resnet20_cifar", weights=BACKBONE, image_size=32, layer="conv4", pooling="avg")
    _, features = FeatureCache(extractor.spec, tmp_path / "cache").features(table)
    head = find_classifier(keras.models.load_model(tmp_path / "run" / "model.keras"))
    mean = head.get_layer(NORMALIZATION).get_weights()[0]
    np.testing.assert_allclose(mean, features.mean(0), rtol=1e-4, atol=1e-5)
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in table["path"]])
    accuracy = (model.predict(images, verbose=0).argmax(-1) == table["label_id"].to_numpy()).mean()
    assert accuracy >= 0.97, accuracy  # 5 separable classes of 64-d features: a converged head fits them

    # Calibrated on validation: the saved model's probabilities are softmax(logits / T) for the T it reports.
    from tltoolkit.calibration import logits_model, softmax, temperature_of

    temperature = entry["calibration"]["temperature"]
    assert temperature_of(model) == pytest.approx(temperature, rel=1e-3) and temperature != 1.0
    np.testing.assert_allclose(model.predict(images[:8], verbose=0),
                               softmax(logits_model(model).predict(images[:8], verbose=0), temperature), atol=1e-5)
    assert any(note.startswith("probabilities calibrated: temperature") for note in entry["notes"])
    # ... with the rejection threshold keeping 95% of the validation images' msp scores at that T
    from tltoolkit.rejection import rejection_of, threshold_for_coverage

    stored = rejection_of(model)
    assert (stored["score"], stored["coverage"], stored["threshold"]) == ("msp", 0.95, entry["calibration"]["threshold"])
    assert len(stored["quantiles"]) == entry["calibration"]["images"]
    assert threshold_for_coverage(stored["quantiles"], 0.95) == stored["threshold"]
    assert any(note.startswith("unknown inputs: predict answers unknown below msp score") for note in entry["notes"])


@pytest.mark.slow
def test_weights_none_trains_from_scratch_with_batchnorm_and_learns(tmp_path):
    """--weights none with the defaults: the from-scratch recipe (every layer, BatchNorm included, at one
    rate) on 20 real digits per class beats chance (0.2) by a wide margin, on validation and on the
    held-out digits (whichever phase is kept: a head on random features can be good on digits too)."""
    from tltoolkit.architectures import build
    from tltoolkit.architectures.stages import trainable_count
    from tltoolkit import evaluate

    data = real_digits(tmp_path / "digits", 20)
    config = settings(tmp_path, weights="none", data=str(data), out=str(tmp_path / "run"), batch_size=32,
                      fine_tune_epochs=25)
    del config["patience"]
    entry = finetune(config, progress=False, echo=quiet)
    assert entry["recipe"] == "scratch" and entry["decision"] == "none"
    assert any("scratch recipe (lr 0.001 for every layer, BatchNorm train" in note for note in entry["notes"])
    phase2 = entry["phases"][1]
    everything = trainable_count(build("resnet20_cifar", include_top=False, input_shape=(32, 32, 3)))
    assert phase2["trainable_params"] == everything + 64 * 5 + 5  # BatchNorm's scale and offset train too
    assert phase2["val_accuracy"] >= 0.6, phase2
    accuracy = evaluate(str(tmp_path / "run"), str(ROOT / "data" / "digits59-test")).accuracy
    assert accuracy >= 0.6, accuracy


@pytest.mark.slow
def test_auto_measures_every_freeze_point_and_keeps_the_best(tmp_path, random_weights):
    make_images(tmp_path / "data", 10)
    config = settings(tmp_path, data=str(tmp_path / "data"), out=str(tmp_path / "run"), weights=random_weights,
                      fine_tune_epochs=2, policy_budget=1e6)
    entry = finetune(config, progress=False, echo=quiet)
    trials = pd.DataFrame(entry["trials"])
    assert list(trials["freeze_until"]) == ["head", "conv4", "conv3", "conv2", "none"]
    assert trials["val_loss"].notna().all() and (trials["kept"] == "yes").sum() == 1
    kept = trials.loc[trials["kept"] == "yes"].iloc[0]
    # A costlier candidate replaces a cheaper one only when it wins clearly (so with a lower val_loss).
    assert kept["val_loss"] == trials.loc[:kept.name, "val_loss"].min() and entry["decision"] == kept["freeze_until"]
    assert entry["kept"] == kept["freeze_until"]
    assert any(note.startswith("policy: auto, measured on validation") for note in entry["notes"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "### Freeze points tried (--freeze-until auto)" in report and "| conv2 |" in report
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    refit = {"refit"} if entry["kept"] != "head" else set()  # a kept phase 2 trains once more on all images
    assert set(metrics.loc[metrics["phase"] == 2, "trial"]) == {"conv4", "conv3", "conv2", "none"} | refit


def test_a_costlier_freeze_point_must_win_by_more_than_the_noise_of_validation():
    from tltoolkit.training.finetune import _clearly_better

    rng = np.random.default_rng(0)
    losses, hits = rng.exponential(0.5, 40), (rng.random(40) < 0.8).astype(float)
    noise = rng.normal(0, 0.3, 40)
    assert _clearly_better((losses - 0.3 + noise, hits), (losses, hits), "val_loss")
    assert not _clearly_better((losses - 0.01 + noise, hits), (losses, hits), "val_loss")  # lower, by noise
    assert not _clearly_better((losses[:1] - 1, hits[:1]), (losses[:1], hits[:1]), "val_loss")  # one image
    assert not _clearly_better((losses - 0.3, hits * 0), (losses, hits), "val_loss")  # confident, less often right
    swapped = hits.copy()
    right, wrong = np.flatnonzero(hits)[0], np.flatnonzero(hits == 0)[:2]
    swapped[right], swapped[wrong] = 0, 1  # two images gained, one lost: higher accuracy, by noise
    assert swapped.mean() > hits.mean() and not _clearly_better((losses, swapped), (losses, hits), "val_accuracy")
    assert _clearly_better((losses, np.ones(40)), (losses, hits), "val_accuracy")
    # by val_loss, more images right beyond noise wins too, where the loss is no higher (within noise or not)
    assert _clearly_better((losses - 0.01 + noise, np.ones(40)), (losses, hits), "val_loss")
    assert not _clearly_better((losses + 0.01 + noise, np.ones(40)), (losses, hits), "val_loss")


@pytest.mark.slow
def test_freeze_until_a_stage_trains_exactly_that_stage_and_the_head(two_phases):
    from tltoolkit.architectures import build, get_spec
    from tltoolkit.architectures.stages import spec_stage_ranges, trainable_counts_per_stage

    base = build("resnet20_cifar", include_top=False, input_shape=(32, 32, 3))
    ranges = spec_stage_ranges(base, get_spec("resnet20_cifar"))
    counts = trainable_counts_per_stage(base, ranges)
    head = 64 * 3 + 3
    # --bn frozen (the default) also freezes the BatchNormalization scale and offset of conv4.
    conv4 = next(r for r in ranges if r.name == "conv4").layers(base)
    batch_norm = sum(int(np.prod(w.shape)) for layer in conv4 if isinstance(layer, keras.layers.BatchNormalization)
                     for w in layer.trainable_weights)
    assert batch_norm > 0
    assert two_phases["phases"][1]["trainable_params"] == counts["conv4"] - batch_norm + head


@pytest.mark.slow
def test_phase_2_improves_or_holds_validation_accuracy(two_phases):
    # No augmentation: phase 2 trained conv4 + head on the cached output of conv3.
    assert any("phase 2 (conv4) trains from the cached output of conv3_block3_out" in note
               for note in two_phases["notes"])
    phase1, phase2, _ = two_phases["phases"]
    assert phase2["val_accuracy"] >= phase1["val_accuracy"]
    assert phase2["val_accuracy"] >= 0.8 and phase2["kept"]


@pytest.mark.slow
def test_a_kept_phase_2_trains_again_on_training_and_validation_for_its_best_epochs(two_phases, tmp_path):
    phase2, refit = two_phases["phases"][1:]
    assert refit["trial"] == "refit" and refit["kept"] and "val_accuracy" not in refit
    best = phase2["best_epoch"]
    assert refit["stopped"].startswith(f"trained {best} epochs, the validated fit's best, on the 48 training and "
                                       "validation images together")
    out = Path(two_phases["config"]["out"])
    metrics = pd.read_csv(out / "metrics.csv")
    refit_rows = metrics[metrics["trial"] == "refit"]
    assert list(refit_rows["epoch"]) == list(range(best)) and refit_rows["val_loss"].isna().all()
    assert "calibration" in two_phases  # fitted on validation, before the refit saw it
    assert f"- {refit['summary']}" in (out / "report.md").read_text()
    no_refit = finetune({**two_phases["config"], "refit": False, "out": str(tmp_path / "run")}, progress=False,
                        echo=quiet)
    assert [p["trial"] for p in no_refit["phases"]] == ["head", "conv4"]


@pytest.mark.slow
def test_killed_phase_2_resumes_at_its_epoch(tmp_path):
    make_images(tmp_path / "data", 12)
    config = settings(tmp_path, data=str(tmp_path / "data"), out=str(tmp_path / "run"), freeze_until="conv4",
                      epochs=1, fine_tune_epochs=12, augment="flip")  # on images, through augmentation
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    command = [sys.executable, "-m", "tltoolkit", "finetune", "--config", str(config_file), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and ((frame := pd.read_csv(metrics))["phase"] == 2).sum() >= 2:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = pd.read_csv(metrics)
    saved_epochs = int((done["phase"] == 2).sum())
    assert 2 <= saved_epochs < 12, "the run was not killed during phase 2"
    assert json.loads((tmp_path / "run" / "state.json").read_text())["runs"][-1]["status"] == "running"

    entry = finetune(config, progress=False, echo=quiet)
    assert entry["run"] == 1 and any("resuming run 1" in note for note in entry["notes"])
    assert entry["phases"][1]["first_epoch"] >= saved_epochs  # not epoch 0
    rows = pd.read_csv(metrics)
    assert sorted(rows.loc[(rows["phase"] == 2) & (rows["trial"] != "refit"), "epoch"]) == list(range(12))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_vgg16_freeze_until_block5_runs_as_written(tmp_path, capsys, monkeypatch):
    make_images(tmp_path / "cats", 6)
    monkeypatch.chdir(tmp_path)
    out = Path("runs") / "cats-vgg16"  # the default --out
    code = main(["finetune", "--base", "vgg16", "--freeze-until", "block5", "--data", "cats",
                 "--weights", "none", "--image-size", "32", "--epochs", "1",
                 "--fine-tune-epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--quiet",
                 "--hidden", "16", "--class-weight", "auto", "--label-smoothing", "0.1", "--l2", "1e-4"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "phase 1 (head on cached features)" in printed and "phase 2 (block5 + head, scratch recipe)" in printed
    assert f"report: {out}/report.md" in printed and (out / "model.keras").is_file()
    from tltoolkit.training.phases import find_classifier

    head = find_classifier(keras.models.load_model(out / "model.keras", compile=False))
    assert head.get_layer("head_dense1").units == 16 and head.get_layer("predictions").units == 3
    config = json.loads((out / "config.json").read_text())
    assert config["class_weight"] == "auto" and config["label_smoothing"] == 0.1 and config["image_size"] == [32, 32]


@pytest.fixture
def cli_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep fd 2 alone so capsys sees the CLI's stderr
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no weights here, and no network
    make_images(tmp_path / "data", 4)
    make_images(tmp_path / "one", 2, classes=("red",))
    return tmp_path


@pytest.mark.parametrize("arguments, message", [
    (["--base", "vgg17"], "unknown architecture 'vgg17'; close matches: vgg19, vgg16"),
    (["--freeze-until", "block5"], "unknown stage 'block5' for resnet20_cifar; valid: auto, head, none, conv1"),
    # before the scan: a misspelt stage is reported without reading a (possibly huge) folder first
    (["--freeze-until", "block5", "--data", "{tmp}/nowhere"], "unknown stage 'block5' for resnet20_cifar"),
    (["--data", "{tmp}/nowhere"], "does not exist"),
    (["--data", "{tmp}/empty"], "no images in"),
    (["--data", "{tmp}/one"], "only one class"),
    (["--weights", "imagenet"], "resnet20_cifar has no published 'imagenet' weights"),
    (["--weights", "{tmp}/missing.h5"], "weights file"),
    (["--config", "{tmp}/bad.json"], "unknown setting 'epoch'; close matches: epochs"),
    (["--base", "vgg16", "--image-size", "32", "--weights", "imagenet"], "and put it in {tmp}/keras/models/"),
])
def test_bad_input_is_one_line_and_exit_2(cli_data, capsys, arguments, message):
    tmp = cli_data
    (tmp / "empty").mkdir()
    (tmp / "bad.json").write_text(json.dumps({"epoch": 3}))
    defaults = {"--base": "resnet20_cifar", "--data": str(tmp / "data"), "--out": str(tmp / "run"),
                "--weights": "none"}
    given = dict(zip(arguments[::2], [a.format(tmp=tmp) for a in arguments[1::2]]))
    argv = [x for pair in {**defaults, **given}.items() for x in pair]
    assert main(["finetune", *argv, "--plan"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.format(tmp=tmp) in err, err
    assert not (tmp / "run").exists() or not any((tmp / "run").iterdir())


@pytest.mark.slow
def test_an_incompatible_out_is_refused_unless_forced(grown, capsys):
    out = grown["out"]
    before = (out / "state.json").read_text()
    with pytest.raises(TltoolkitError, match=r"holds a run that differs \(base 'resnet20_cifar' -> 'resnet32_cifar'\)"):
        finetune({**grown["config"], "base": "resnet32_cifar"}, plan=True, echo=quiet)
    fewer = out.parent / "fewer"
    make_images(fewer, 4, classes=("red", "green"))
    with pytest.raises(TltoolkitError, match="classes blue, yellow of the earlier run are missing from --data"):
        finetune({**grown["config"], "data": str(fewer)}, plan=True, echo=quiet)
    assert (out / "state.json").read_text() == before
    other = out.parent / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TltoolkitError, match="not empty and holds no finetune run"):
        finetune({**grown["config"], "out": str(other)}, plan=True, echo=quiet)


def test_config_file_yaml_and_flags_override_it(cli_data, capsys):
    tmp = cli_data
    (tmp / "settings.yaml").write_text(f"base: resnet20_cifar\nweights: none\ndata: {tmp / 'data'}\n"
                                       f"out: {tmp / 'run'}\ncache-dir: {tmp / 'cache'}\nfreeze_until: conv3\n"
                                       f"fine_tune_epochs: 7\n")
    assert main(["finetune", "--config", str(tmp / "settings.yaml"), "--freeze-until", "conv4", "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "--freeze-until conv4: training conv4 and the head" in printed
    assert "phase 2: conv4 + head, scratch recipe (lr 0.001 for every layer, BatchNorm train, warm-up 3, up to 7 " \
           "epochs, patience 20)" in printed and "0 hits, 12 to extract" in printed
    assert not (tmp / "run").exists()  # a plan writes nothing


@pytest.mark.slow
def test_bn_policy_and_per_stage_learning_rates():
    from tltoolkit.architectures import build, get_spec
    from tltoolkit.architectures.preprocessing import preprocessing_layer
    from tltoolkit.architectures.stages import freeze_until, spec_stage_ranges, trainable_count, trainable_counts_per_stage
    from tltoolkit.augment import augmentation
    from tltoolkit.training import phases

    spec = get_spec("resnet20_cifar")
    base = build(spec.id, include_top=False, input_shape=(32, 32, 3))
    ranges = spec_stage_ranges(base, spec)
    counts = trainable_counts_per_stage(base, ranges)
    training, inference, _ = phases.full_model(base, augmentation("none"), preprocessing_layer(spec.preprocessing),
                                               (32, 32), 3, {}, "train")
    freeze_until(base, ranges, "conv3")
    phases.apply_bn_policy(base, "train")
    assert trainable_count(training) == counts["conv3"] + 64 * 3 + 3

    # One Adam step moves each weight by about its learning rate: conv4 0.3x and conv3 0.09x the head's.
    multipliers = phases.stage_multipliers(base, ranges, ("conv3", "conv4"), 0.3)
    phases.compile_model(training, 1e-3, 0.0, False, multipliers)
    before = {v.path: v.numpy().copy() for v in training.trainable_variables}
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    training.train_on_batch(images, np.eye(3)[np.arange(8) % 3])
    step = {v.path: np.abs(v.numpy() - before[v.path]).max() for v in training.trainable_variables}
    conv3 = next(r for r in ranges if r.name == "conv3").layers(base)[1].kernel.path
    conv4 = next(r for r in ranges if r.name == "conv4").layers(base)[1].kernel.path
    head = inference.get_layer(index=-1).get_layer("predictions").kernel.path
    np.testing.assert_allclose([step[conv3], step[conv4], step[head]], [0.09e-3, 0.3e-3, 1e-3], rtol=0.02)


@pytest.mark.slow
def test_force_starts_an_incompatible_run_over(tmp_path):
    make_images(tmp_path / "data", 4)
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_text(json.dumps({"runs": [{"run": 1, "status": "finished", "config": {
        **DEFAULTS, "base": "vgg11", "data": "elsewhere", "out": str(out)}}]}))
    (out / "model.keras").write_text("an older model")
    config = settings(tmp_path, data=str(tmp_path / "data"), out=str(out), epochs=1, fine_tune_epochs=0)
    lines = []
    finetune(config, plan=True, force=True, progress=False, echo=lines.append)
    assert any("would remove the earlier run" in line for line in lines) and (out / "model.keras").read_text()
    entry = finetune(config, force=True, progress=False, echo=quiet)
    state = json.loads((out / "state.json").read_text())
    assert entry["run"] == 1 and [r["config"]["base"] for r in state["runs"]] == ["resnet20_cifar"]
    assert keras.models.load_model(out / "model.keras", compile=False).output.shape == (None, 3)


def test_a_new_run_scans_its_data_once(tmp_path, monkeypatch):
    # The scan is read again only when --force cleared the earlier run whose class index and splits it
    # followed; a first run has none (on a million images a second scan costs its time and memory again).
    import tltoolkit.data

    scans, real = [], tltoolkit.data.scan
    monkeypatch.setattr(tltoolkit.data, "scan", lambda *args, **kwargs: scans.append(args) or real(*args, **kwargs))
    make_images(tmp_path / "data", 4)
    finetune(settings(tmp_path, data=str(tmp_path / "data"), out=str(tmp_path / "run")), plan=True, echo=quiet)
    assert len(scans) == 1


def test_a_second_writer_of_a_run_directory_is_refused_in_one_line(cli_data, capsys):
    import fcntl

    tmp = cli_data
    run = tmp / "run"
    argv = ["finetune", "--base", "resnet20_cifar", "--weights", "none", "--data", str(tmp / "data"), "--out", str(run),
            "--cache-dir", str(tmp / "cache"), "--epochs", "1", "--fine-tune-epochs", "0", "--batch-size", "8",
            "--freeze-until", "head", "--quiet"]
    run.mkdir()
    with open(run / ".lock", "a") as writer:  # another finetune holds the run directory
        fcntl.flock(writer, fcntl.LOCK_EX)
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"another finetune is writing {run}" in err, err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written beside it
        assert main([*argv, "--force"]) == 2  # --force never removes what another writer is writing
    assert main(argv) == 0  # the lock alone is not "a folder that holds no run"
    assert json.loads((run / "state.json").read_text())["runs"][0]["status"] == "finished"
    assert main(argv) == 0  # released when the run ended: the next run continues it


KILLED_AT_SAVE = """
import os, signal, sys
import tltoolkit.training.run as run
run.save_model = lambda model, path: os.kill(os.getpid(), signal.SIGKILL)  # kill -9 as the model is written
from tltoolkit.cli import main
main(["finetune", "--config", sys.argv[1], "--quiet"])
"""


@pytest.mark.slow
def test_a_run_killed_while_committing_leaves_the_previous_complete_run(tmp_path):
    from tltoolkit.inference.classifier import load_classifier

    make_images(tmp_path / "data", 6)
    config = settings(tmp_path, data=str(tmp_path / "data"), out=str(tmp_path / "run"), epochs=3,
                      fine_tune_epochs=0, freeze_until="head")
    finetune(config, progress=False, echo=quiet)
    make_images(tmp_path / "data", 6, classes=("yellow",))  # the next run grows the head to 4 classes
    (tmp_path / "config.json").write_text(json.dumps(config))
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_SAVE, str(tmp_path / "config.json")], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    classifier = load_classifier(tmp_path / "run")  # still the complete first run: 3 classes, 3 outputs
    assert classifier.class_names == ["blue", "green", "red"]
    assert json.loads((tmp_path / "run" / "class_index.json").read_text()) == {"blue": 0, "green": 1, "red": 2}
    entry = finetune(config, progress=False, echo=quiet)  # the re-run completes the grown run
    assert entry["status"] == "finished" and load_classifier(tmp_path / "run").class_names[-1] == "yellow"
    assert len(list((tmp_path / "run" / ".sets").iterdir())) == 1  # the killed run's set is gone


@pytest.mark.parametrize("flag, inside", [("--out", "data/run"), ("--cache-dir", "data/red/cache"),
                                          ("--out", "data")])
def test_an_out_or_cache_dir_inside_the_data_is_refused_before_anything_is_written(cli_data, capsys, flag, inside):
    tmp = cli_data
    before = sorted(p.relative_to(tmp) for p in (tmp / "data").rglob("*"))
    argv = {"--base": "resnet20_cifar", "--weights": "none", "--data": str(tmp / "data"), "--out": str(tmp / "run"),
            "--cache-dir": str(tmp / "cache"), flag: str(tmp / inside)}
    assert main(["finetune", *[x for pair in argv.items() for x in pair], "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} {tmp / inside} is inside --data" in err, err
    assert sorted(p.relative_to(tmp) for p in (tmp / "data").rglob("*")) == before
    assert not (tmp / "run").exists() and not (tmp / "cache").exists()


@pytest.mark.parametrize("setting, message", [
    ({"epochs": "ten"}, "--epochs takes int, got 'ten'"), ({"epochs": True}, "--epochs takes int, got True"),
    ({"epochs": 2.7}, "--epochs takes int, got 2.7"), ({"hidden": "abc"}, "--hidden takes integers"),
    ({"seed": "x"}, "--seed takes int"), ({"learning_rate": "fast"}, "--learning-rate takes float"),
    ({"l2": "nan"}, "--l2 takes float"), ({"image_size": 0}, "--image-size takes one size"),
    ({"dropout": 1.5}, "--dropout must be in [0, 1)"), ({"hidden": [0]}, "--hidden sizes must be positive"),
    ({"augment": "flip,bogus"}, "unknown augmentation 'bogus'"), ({"jit": 5}, "--jit takes bool"),
    ({"base": 5}, "--base takes str"),
])
@pytest.mark.parametrize("plan", [True, False])
def test_every_config_value_is_typed_and_checked_before_anything_runs(cli_data, capsys, setting, message, plan):
    tmp = cli_data
    (tmp / "c.json").write_text(json.dumps({"base": "resnet20_cifar", "weights": "none", "data": str(tmp / "data"),
                                            "out": str(tmp / "run"), "cache_dir": str(tmp / "cache"), **setting}))
    assert main(["finetune", "--config", str(tmp / "c.json"), "--quiet", *(["--plan"] if plan else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp / "run").exists() and not (tmp / "cache").exists()


@pytest.mark.parametrize("state", [{"runs": 5}, [], {"runs": [3]}, {"runs": [{"run": 1}]}])
def test_a_malformed_state_json_is_one_line(cli_data, capsys, state):
    tmp = cli_data
    (tmp / "run").mkdir()
    (tmp / "run" / "state.json").write_text(json.dumps(state))
    assert main(["finetune", "--base", "resnet20_cifar", "--weights", "none", "--data", str(tmp / "data"),
                 "--out", str(tmp / "run"), "--plan"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "state.json is not a finetune state" in err, err
