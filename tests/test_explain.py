"""Grad-CAM: on a task whose class is where a bright patch is, the map of a trained tiny CNN peaks in that
quadrant; on resnet20_cifar inside a finetune-shaped model the maps have the stage's shape; a model
without a spatial stage is refused."""

import keras
import numpy as np
import pytest
from PIL import Image

from tltoolkit.architectures import build, get_spec
from tltoolkit.errors import TltoolkitError
from tltoolkit.explain import explain_to, grad_cam, last_spatial_layer, stage_layer
from tltoolkit.explain import overlay as overlay_of
from tltoolkit.heads import attach_head

QUADRANTS = ((0, 0), (0, 16), (16, 0), (16, 16))  # (top, left) of each class' quadrant in a 32x32 image


def patch_images(n, seed):
    """Class q: an 8x8 bright patch somewhere in quadrant q of dim noise. Channels 1 and 2 are the x and y
    coordinate ramps, so a net with global pooling can tell where the patch is (as CoordConv)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = np.zeros((n, 32, 32, 3), "uint8")
    images[..., 0] = rng.integers(0, 60, (n, 32, 32))
    images[..., 1] = np.linspace(0, 64, 32).astype("uint8")[None, None, :]
    images[..., 2] = np.linspace(0, 64, 32).astype("uint8")[None, :, None]
    for image, label in zip(images, labels):
        top, left = (q + rng.integers(0, 9) for q in QUADRANTS[label])
        image[top:top + 8, left:left + 8, 0] = 255
    return images, labels


@pytest.fixture(scope="module")
def patch_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3), dtype="uint8"),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="features"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, activation="softmax", name="predictions"),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    images, labels = patch_images(800, seed=0)
    model.fit(images, labels, epochs=12, batch_size=32, verbose=0)
    return model


def test_grad_cam_peaks_in_the_quadrant_that_decides_the_class(patch_model, tmp_path):
    images, labels = patch_images(40, seed=1)
    assert (patch_model.predict(images, verbose=0).argmax(1) == labels).mean() >= 0.9
    maps = grad_cam(patch_model, images, class_ids=labels)
    assert maps.shape == (40, 16, 16) and np.isfinite(maps).all() and maps.max() == 1.0
    rows, columns = np.unravel_index(maps.reshape(40, -1).argmax(1), (16, 16))
    peak_quadrant = 2 * (rows >= 8) + (columns >= 8)
    assert (peak_quadrant == labels).mean() >= 0.9
    paths = explain_to(tmp_path, patch_model, images[:3], ["a", "b", "c"], class_ids=labels[:3], batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]  # no temporary left
    overlay = np.asarray(Image.open(paths[1]))
    assert overlay.shape == (32, 32, 3)
    # the blend: 55% image, 45% jet colour (heat 1: dark red 0.5, 0, 0; heat 0: dark blue 0, 0, 0.5)
    hot, cold = overlay_of(images[1], np.ones((4, 4))), overlay_of(images[1], np.zeros((4, 4)))
    np.testing.assert_allclose(hot[..., 0], 0.55 * images[1][..., 0] + 0.45 * 127.5, atol=1)
    np.testing.assert_allclose(cold[..., 2], 0.55 * images[1][..., 2] + 0.45 * 127.5, atol=1)
    np.testing.assert_allclose(cold[..., 0], 0.55 * images[1][..., 0], atol=1)


def resnet20_classifier():
    """finetune's shape: uint8 pixels -> float -> [resnet20_cifar base -> head]."""
    keras.utils.set_random_seed(0)
    classifier = attach_head(build("resnet20_cifar", weights=None, include_top=False), 3)
    pixels = keras.Input((32, 32, 3), dtype="uint8", name="pixels")
    return keras.Model(pixels, classifier(keras.layers.Rescaling(1.0, name="to_float")(pixels)))


def test_resnet20_maps_at_the_last_stage_and_a_named_one():
    model = resnet20_classifier()
    spec = get_spec("resnet20_cifar")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    assert last_spatial_layer(model) == spec.base_output
    maps = grad_cam(model, images)
    assert maps.shape == (2, 8, 8) and np.isfinite(maps).all()
    second = spec.stages[-2][0]
    layer = stage_layer(model, spec.stages, second, spec.base_output)
    assert grad_cam(model, images, layer).shape == (2, 16, 16)
    with pytest.raises(TltoolkitError, match="unknown stage 'conv9'; explain one of conv1"):
        stage_layer(model, spec.stages, "conv9")


def test_a_model_without_a_spatial_stage_is_a_one_line_error():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Dense(4, activation="softmax", name="predictions")(keras.layers.Flatten()(inputs))
    with pytest.raises(TltoolkitError, match="no spatial feature map") as error:
        grad_cam(keras.Model(inputs, x), np.zeros((1, 32, 32, 3), "float32"))
    assert "\n" not in str(error.value)


def test_keras_application_base_at_its_derived_stages():
    from tltoolkit.architectures.bases import build_base, resolve_base

    spec = resolve_base("keras:MobileNetV2", image_size=32)
    model = attach_head(build_base(spec, None, (32, 32)), 3)
    images = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype("float32")
    assert grad_cam(model, images).shape == (1, 1, 1)  # 32 / 32: the last stage is one position
    maps = grad_cam(model, images, stage_layer(model, spec.stages, spec.stages[2][0], spec.base_output))
    assert maps.shape[1:] == (4, 4) and np.isfinite(maps).all()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.runs import train_run, write_class_folders

    root = tmp_path_factory.mktemp("explain")
    write_class_folders(root / "data", per_class=4)
    return root / "data", train_run(root / "run", root / "data", epochs=10)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the scan cache
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep fd 2 alone so capsys sees the CLI's stderr


def test_predict_explain_writes_an_overlay_per_readable_image(run, tmp_path, capsys):
    import pandas as pd

    from tltoolkit.cli import main

    data, model = run
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for colour in ("red", "blue"):
        (inbox / f"{colour}.png").write_bytes(next(data.glob(f"{colour}/*.png")).read_bytes())
    (inbox / "broken.png").write_text("not an image")
    out, table = tmp_path / "explained", tmp_path / "predictions.csv"
    assert main(["predict", "--model", model, str(inbox), "--explain", str(out), "--out", str(table), "--quiet"]) == 0
    frame = pd.read_csv(table, keep_default_na=False).set_index("path")
    assert sorted(p.name for p in out.iterdir()) == ["0001_blue.png", "0003_red.png"]  # table order; no temporary
    assert frame.loc[str(inbox / "red.png"), "explanation"] == str(out / "0003_red.png")
    assert frame.loc[str(inbox / "broken.png"), "explanation"] == ""
    assert Image.open(out / "0003_red.png").size == (32, 32)  # the image as the model sees it
    capsys.readouterr()
    # a layer named instead of a stage; a name the model lacks; existing explanations need --force
    from tltoolkit.inference.classifier import load_classifier

    conv = next(layer.name for layer in load_classifier(model).model.layers if isinstance(layer, keras.layers.Conv2D))
    assert main(["predict", "--model", model, str(inbox), "--explain", str(out), "--explain-stage", conv,
                 "--quiet", "--force"]) == 0
    assert main(["predict", "--model", model, str(inbox), "--explain", str(out), "--quiet"]) == 2
    assert "already holds images; pass --force" in capsys.readouterr().err
    assert main(["predict", "--model", model, str(inbox), "--explain", str(tmp_path / "x"), "--explain-stage",
                 "conv9", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("has no stage or layer 'conv9'")


def test_predict_explain_on_a_model_without_a_spatial_stage_is_one_line(tmp_path, capsys):
    from tltoolkit.cli import main

    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(tmp_path / "flat.keras")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(image)
    assert main(["predict", "--model", str(tmp_path / "flat.keras"), str(image), "--explain", str(tmp_path / "out"),
                 "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no spatial feature map" in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_evaluate_report_has_grad_cam_panels(run, tmp_path):
    from tltoolkit.inference.evaluation import evaluate

    data, model = run
    evaluation = evaluate(model, data)
    worst, per_class = (evaluation.explanations[name] for name in ("explanations_worst.png",
                                                                   "explanations_per_class.png"))
    assert len(worst[1]) == 8 and worst[1]["path"].tolist() == evaluation.worst(8)["path"].tolist()
    assert len(per_class[1]) == 6 and sorted(per_class[1]["label"].value_counts()) == [2, 2, 2]
    assert all(image.shape == (32, 32, 3) for image in per_class[2])
    files = evaluation.write(tmp_path / "report")
    with Image.open(files["explanations_per_class.png"]) as sheet:
        assert sheet.format == "PNG" and sheet.width > 200


def test_a_stage_of_the_runs_base_names_its_last_layer():
    from tltoolkit.explain import explained_layer
    from tltoolkit.inference.classifier import Classifier

    model = resnet20_classifier()
    spec = get_spec("resnet20_cifar")
    classifier = Classifier(model, ["a", "b", "c"], (32, 32), "center_crop", "run", None, "resnet20_cifar")
    assert explained_layer(classifier) == spec.base_output
    assert explained_layer(classifier, spec.stages[-2][0]) == stage_layer(model, spec.stages, spec.stages[-2][0])
    with pytest.raises(TltoolkitError, match="has no stage or layer 'conv9'; its stages: conv1"):
        explained_layer(classifier, "conv9")
