"""`finetune`, `extract` and `layers` on bases we did not register: `keras:NAME` (real keras.applications
models, weights=None, 32x32) and a saved `.keras` base the test builds: derived stages, probed
preprocessing, cut points, cache keys, runs end to end (phase 1, phase 2 with exact trainable counts,
a grown re-run, the plan) and one-line errors."""

import json

import keras
import pandas as pd
import pytest

from tests.test_finetune import make_images, quiet
from tltoolkit.architectures import build, get_spec
from tltoolkit.architectures.bases import build_base, keras_preprocessing, resolve_base
from tltoolkit.architectures.stages import cut_points, spec_stage_ranges, trainable_counts_per_stage
from tltoolkit.cli import main
from tltoolkit.errors import TltoolkitError
from tltoolkit.features.extractor import feature_extractor
from tltoolkit.features.local import extract_features
from tltoolkit.training.finetune import finetune

VGG16_STAGE5 = 3 * (3 * 3 * 512 * 512 + 512)  # block5_conv1..3
HEAD_ON_512 = 512 * 3 + 3


def save_residual_base(path, filters=8, seed=0):
    """A tiny base with a residual block (whose inner layer is no cut point) and two downsamplings."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(filters, 3, padding="same", name="inner")(x)
    x = keras.layers.Add(name="block_out")([x, y])
    x = keras.layers.Conv2D(2 * filters, 3, strides=2, padding="same", name="down")(x)
    x = keras.layers.ReLU(name="top")(x)
    keras.Model(inputs, x, name="tiny_base").save(path)
    return str(path)


@pytest.mark.parametrize("name, registered, size", [("VGG16", "vgg16", 32), ("ResNet50", "resnet50", 32)])
def test_derived_stages_of_keras_apps_train_what_the_registered_stages_do(name, registered, size):
    spec = resolve_base(f"keras:{name}", size)
    model = build_base(spec, None, (size, size))
    derived = trainable_counts_per_stage(model, spec_stage_ranges(model, spec))
    reference = build(registered, include_top=False, input_shape=(size, size, 3))
    known = trainable_counts_per_stage(reference, spec_stage_ranges(reference, get_spec(registered)))
    assert spec.stage_names == ("stage1", "stage2", "stage3", "stage4", "stage5")
    assert [derived[s] for s in spec.stage_names] == [known[s] for s in get_spec(registered).stage_names]
    if name == "VGG16":
        assert [first for _, first in spec.stages] == [f"block{i}_conv1" for i in range(1, 6)]
        assert derived["stage5"] == VGG16_STAGE5


def test_efficientnet_stages_follow_its_resolution_drops_whatever_the_input_size():
    small, large = resolve_base("keras:EfficientNetB0", 32), resolve_base("keras:EfficientNetB0", 224)
    assert small.stages == large.stages
    assert [first for _, first in small.stages] == [
        "stem_conv", "block2a_expand_conv", "block3a_expand_conv", "block4a_expand_conv", "block6a_expand_conv"]
    assert small.preprocessing == "none" and small.base_output == "top_activation"


@pytest.mark.parametrize("name, mode", [("VGG16", "caffe"), ("MobileNetV2", "tf"), ("DenseNet121", "torch"),
                                        ("EfficientNetB0", "none"), ("ConvNeXtTiny", "none")])
def test_preprocessing_is_probed_from_the_applications_own_preprocess_input(name, mode):
    assert keras_preprocessing(name) == mode


def test_only_single_tensor_layers_are_cut_points(tmp_path):
    model = keras.models.load_model(save_residual_base(tmp_path / "base.keras"))
    assert [model.layers[c].name for c in cut_points(model)] == ["pixels", "stem", "block_out", "down", "top"]
    spec = resolve_base(str(tmp_path / "base.keras"), preprocessing="scale")
    with pytest.raises(TltoolkitError, match=r"'inner' of 'tiny_base' is inside a block.*valid cut layers: stem, "
                                             r"block_out, down, top$"):
        feature_extractor(spec, layer="inner")
    assert feature_extractor(spec, layer="block_out", pooling="avg").feature_shape == (8,)
    # penultimate: the base's output as a vector (avg-pooled unless told max); naming the layer keeps the map
    penultimate, last = feature_extractor(spec), feature_extractor(spec, layer="top")
    assert penultimate.spec.pooling == "avg" and penultimate.feature_shape == last.feature_shape[-1:]
    assert len(last.feature_shape) == 3 and feature_extractor(spec, pooling="max").spec.pooling == "max"


def test_a_saved_base_needs_preprocessing_and_its_cache_key_follows_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    path = save_residual_base(tmp_path / "base.keras")
    make_images(tmp_path / "data", 2)
    assert main(["extract", "--base", path, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a saved model does not say how its input pixels are scaled; pass " \
        "--preprocessing MODE" in err, err

    def key(**options):
        return feature_extractor(path, preprocessing="scale", weights="imagenet", **options).spec.key()

    first = key()
    assert key() == first  # the same file: the same features
    assert key(layer="block_out") != first
    save_residual_base(path, seed=1)  # other weights, same architecture and name
    assert key() != first
    other_weights = key()
    with pytest.raises(TltoolkitError, match="weights file .*missing.weights.h5 does not exist"):
        feature_extractor(path, preprocessing="scale", weights=str(tmp_path / "missing.weights.h5"))
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(
        tmp_path / "vgg.weights.h5")
    with pytest.raises(TltoolkitError, match=f"vgg.weights.h5 does not fit {path}: "):
        feature_extractor(path, preprocessing="scale", weights=str(tmp_path / "vgg.weights.h5"))
    save_residual_base(path, filters=4)  # another architecture
    assert key() not in (first, other_weights)


def test_keras_imagenet_weights_offline_fail_with_one_line_naming_file_and_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    make_images(tmp_path / "data", 2)
    argv = ["extract", "--base", "keras:VGG16", "--image-size", "32", "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "could not download vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 for keras:VGG16" in err
    assert f"put it in {tmp_path}/keras/models/" in err


def test_layers_shows_derived_stages(capsys):
    assert main(["layers", "keras:VGG16", "--image-size", "32", "--format", "csv"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(table["freeze-until"]) == ["none", "stage1", "stage2", "stage3", "stage4", "stage5", "head"]
    assert list(table["first layer"])[1:6] == [f"block{i}_conv1" for i in range(1, 6)]
    assert table.set_index("freeze-until").loc["stage5", "trainable params"] == VGG16_STAGE5


@pytest.fixture(scope="module")
def vgg_runs(tmp_path_factory):
    """keras:VGG16 at 32x32: the head alone, then on a grown folder phase 1 and phase 2 from stage5 (on the
    cut cache)."""
    tmp = tmp_path_factory.mktemp("vgg")
    data, out = tmp / "data", tmp / "run"
    make_images(data, 8)
    config = dict(base="keras:VGG16", weights="none", data=str(data), out=str(out), image_size=32, batch_size=8,
                  augment="none", epochs=3, fine_tune_epochs=1, freeze_until="head", seed=0, patience=20,
                  cache_dir=str(tmp / "cache"))
    first = finetune(config, progress=False, echo=quiet)
    make_images(data, 4, start=8)
    config["freeze_until"] = "stage5"
    lines = []
    plan = finetune(config, plan=True, progress=False, echo=lines.append)
    second = finetune(config, progress=False, echo=quiet)
    return dict(out=out, runs=[first, second], plan=plan, plan_lines=lines)


def test_keras_app_finetunes_end_to_end_with_the_exact_trainable_count(vgg_runs):
    first, second, out = *vgg_runs["runs"], vgg_runs["out"]
    assert first["decision"] == "head" and [p["phase"] for p in first["phases"]] == [1]
    assert second["decision"] == "stage5" and second["trained_stages"] == ["stage5"]
    assert [p["phase"] for p in second["phases"]] == [1, 2] + ([2] if second["phases"][1]["kept"] else [])  # refit
    assert second["phases"][1]["trainable_params"] == VGG16_STAGE5 + HEAD_ON_512
    assert any("cached output of block4_pool" in note for note in second["notes"])
    for name in ["model.keras", "report.md", "config.json", "metrics.csv", "snapshot.parquet"]:
        assert (out / name).is_file(), name
    assert "keras:VGG16" in (out / "report.md").read_text()
    model = keras.models.load_model(out / "model.keras")
    assert model.input.dtype == "uint8" and tuple(model.input.shape[1:]) == (32, 32, 3)
    assert json.loads((out / "config.json").read_text())["preprocessing"] is None


def test_keras_app_rerun_on_a_grown_folder_extracts_only_new_images(vgg_runs):
    second = vgg_runs["runs"][1]
    assert vgg_runs["plan"]["misses"] == 12  # 4 new images x 3 classes; the 24 old ones are cached
    assert second["run"] == 2 and second["extracted"] == 12
    assert any("warm start from run 1" in note for note in second["notes"])


def test_a_keras_app_run_predicts_evaluates_and_exports(vgg_runs, tmp_path):
    from tltoolkit import evaluate, predict
    from tltoolkit.export import export

    out = vgg_runs["out"]
    data = out.parent / "data"
    predictions = predict(out, data)
    assert (predictions["error"] == "").all() and set(predictions["label"]) <= {"red", "green", "blue"}
    accuracy = evaluate(out, data).accuracy
    assert accuracy >= 0.9, accuracy  # colours, seen in training (1.0 here)
    result = export(out, "keras", tmp_path / "model.keras")
    assert result.max_difference <= result.tolerance


def test_saved_base_finetunes_from_a_layer_name(tmp_path):
    path = save_residual_base(tmp_path / "base.keras")
    make_images(tmp_path / "data", 6)
    config = dict(base=path, preprocessing="scale", data=str(tmp_path / "data"), out=str(tmp_path / "run"),
                  batch_size=8, augment="none", epochs=2, fine_tune_epochs=1, freeze_until="down",
                  cache_dir=str(tmp_path / "cache"), patience=20)
    entry = finetune(config, progress=False, echo=quiet)
    assert entry["trained_stages"] == ["stage2"]
    assert entry["phases"][1]["trainable_params"] == (3 * 3 * 8 * 16 + 16) + (16 * 3 + 3)  # down + head
    with pytest.raises(TltoolkitError, match="'block_out' of 'tiny_base' starts inside a block.*valid layers to "
                                             "train from: stem, inner, down, top$"):
        finetune({**config, "freeze_until": "block_out", "out": str(tmp_path / "run2")}, plan=True, echo=quiet)
    with pytest.raises(TltoolkitError, match=r"holds a run that differs \(preprocessing 'scale' -> 'tf'\)"):
        finetune({**config, "preprocessing": "tf"}, plan=True, echo=quiet)
    save_residual_base(path, seed=1)  # the same path, other weights: not the run's base any more
    with pytest.raises(TltoolkitError, match=r"holds a run that differs \(base content saved-\w+ -> saved-\w+\)"):
        finetune(config, plan=True, echo=quiet)


def test_extract_cli_on_a_keras_app_stage_with_pooling(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    make_images(tmp_path / "data", 2)
    argv = ["extract", "--base", "keras:VGG16", "--weights", "none", "--image-size", "32", "--layer", "stage4",
            "--pooling", "avg", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--quiet",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert "wrote 6 feature vector(s) [512]" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "_extract.json").read_text())
    assert meta["layer"] == "block4_pool" and meta["preprocessing"] == "caffe"
    frame = pd.read_parquet(tmp_path / "out")
    assert len(frame) == 6 and len(frame["features"].iloc[0]) == 512
    table = frame.assign(status="ok")
    extractor = feature_extractor("keras:VGG16", image_size=32, layer="stage4", pooling="avg")
    _, stats = extract_features(table, extractor, tmp_path / "cache", progress=False)
    assert stats.computed == 0  # the CLI's cache, keyed the same
