"""Export round trips: each format is loaded back with its own runtime and fed raw uint8 images of
sizes the model was not trained at; its probabilities must match the Keras model on the same centre
crop within the stated tolerance."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.int8_drift import converter_default_int8, framed_images
from tests.runs import COLOURS, coloured_image, train_run, write_class_folders
from tltoolkit.cli import main
from tltoolkit.errors import TltoolkitError
from tltoolkit.inference.classifier import load_classifier
from tltoolkit.export import TOLERANCES, _keras_runner, export, serving_model, verification_sizes, verify

# third-party notices: tf.lite.Interpreter is deprecated in TF 2.21; Keras' tf2onnx patch probes np.object
pytestmark = [pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")]

# format, quantization, largest accepted probability difference (stated in the README)
ROUND_TRIPS = [
    ("keras", None, 1e-5),
    ("savedmodel", None, 1e-5),
    ("tflite", None, 1e-4),
    ("tflite", "float16", 1e-2),
    ("tflite", "dynamic", 0.05),
    ("tflite", "int8", 0.1),
    ("onnx", None, 1e-4),
]
# a tensor type each quantization must leave in the .tflite file (proof that it was applied)
QUANTIZED_TYPE = {"float16": np.float16, "dynamic": np.int8, "int8": np.int8}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    write_class_folders(root / "data", per_class=6)
    # 48 filters: the conv kernel has > 1024 weights, the converter's floor for weight quantization
    return train_run(root / "run", root / "data", filters=48, epochs=30)


def odd_images():
    rng = np.random.default_rng(7)
    return [(name, coloured_image(colour, height, width, rng))
            for (name, colour), (height, width) in zip(COLOURS.items(), [(45, 61), (70, 33), (32, 32)])]


def crop_resized(image):
    """The image centre-cropped (largest centred square) and resized to 32x32, as uint8."""
    import tensorflow as tf

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side].astype(np.float32)
    return np.clip(np.round(tf.image.resize(square, (32, 32)).numpy()), 0, 255).astype(np.uint8)


def reference(run, image):
    """The run's Keras model on the image centre-cropped and resized to 32x32."""
    import keras

    model = keras.models.load_model(f"{run}/model.keras")
    return model(crop_resized(image)[None], training=False).numpy()[0]


def load_back(fmt, path):
    """A function image -> (probabilities, rejection score), with the runtime a user of the format would use."""
    if fmt == "keras":
        import keras

        model = keras.models.load_model(path, safe_mode=True)
        return lambda image: tuple(o.numpy()[0] for o in model(image[None]))
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda image: tuple(o.numpy()[0] for o in loaded.serve(image[None]))
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        return lambda image: tuple(o[0] for o in session.run(None, {session.get_inputs()[0].name: image[None]}))
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))

    def tflite(image):
        (inp,), outs = interpreter.get_input_details(), interpreter.get_output_details()
        interpreter.resize_tensor_input(inp["index"], [1, *image.shape])
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        # the probabilities [1, classes] and the score [1]; TFLite does not keep the outputs' order
        outputs = sorted((interpreter.get_tensor(out["index"])[0] for out in outs), key=np.ndim, reverse=True)
        return tuple(outputs)

    tflite.interpreter = interpreter
    return tflite


@pytest.mark.parametrize("fmt, quantize, tolerance", ROUND_TRIPS,
                         ids=[f"{f}-{q or 'float'}" for f, q, _ in ROUND_TRIPS])
def test_export_round_trips_within_tolerance(run, tmp_path, fmt, quantize, tolerance):
    suffix = {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx", "savedmodel": ""}[fmt]
    out = tmp_path / f"exported{suffix}"
    result = export(run, fmt, out, quantize=quantize)
    assert result.max_difference <= tolerance and result.top1_agreement == 1.0 and result.images == 6
    assert result.sizes == [(32, 32), (16, 16), (64, 64), (128, 128), (48, 96)] and result.worst_size in result.sizes
    assert result.bytes > 0 and out.exists()
    labels = (out / "labels.txt") if fmt == "savedmodel" else (tmp_path / "labels.txt")
    assert result.labels == labels and labels.read_text().splitlines() == list(COLOURS)
    card = json.loads(result.card.read_text())
    assert result.card == ((out / "serving.json") if fmt == "savedmodel" else tmp_path / f"exported{suffix}.json")
    assert card["labels"] == list(COLOURS) and card["format"] == fmt and card["quantize"] == quantize
    assert card["score"] == "msp" and card["reject_below"] is None and card["input"]["model_size"] == [32, 32]

    served = load_back(fmt, out)
    for name, image in odd_images():
        got, score = served(image)
        assert list(COLOURS)[int(np.argmax(got))] == name
        np.testing.assert_allclose(got, reference(run, image), atol=tolerance)
        assert score == pytest.approx(reference(run, image).max(), abs=tolerance)  # msp: the model has no settings
        # int8's softmax output is quantised in steps of 1/256
        assert got.sum() == pytest.approx(1.0, abs=1e-2 if quantize == "int8" else 1e-5)
    if quantize:
        types = {detail["dtype"] for detail in served.interpreter.get_tensor_details()}
        assert QUANTIZED_TYPE[quantize] in types


def test_export_refuses_to_overwrite_and_replaces_with_force(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")
    out = tmp_path / "served"
    assert main(["export", "--model", str(run), "--format", "savedmodel", "--out", str(out)]) == 0
    assert "verified on 6 images" in capsys.readouterr().out
    (out / "stale.txt").write_text("from before")
    assert main(["export", "--model", str(run), "--format", "savedmodel", "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["export", "--model", str(run), "--format", "savedmodel", "--out", str(out), "--force"]) == 0
    assert not (out / "stale.txt").exists() and (out / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]  # no temporary leftovers


def test_export_rejects_bad_requests(run, tmp_path):
    with pytest.raises(TltoolkitError, match="--quantize applies to tflite"):
        export(run, "keras", tmp_path / "m.keras", quantize="int8")
    with pytest.raises(TltoolkitError, match="ending in .tflite"):
        export(run, "tflite", tmp_path / "m.onnx")
    with pytest.raises(TltoolkitError, match="unknown export format"):
        export(run, "coreml", tmp_path / "m.mlmodel")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    with pytest.raises(TltoolkitError, match="labels.txt exists with other labels"):
        export(run, "keras", tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
    (tmp_path / "labels.txt").unlink()
    (tmp_path / "m.keras.json").write_text("{}")  # a user's file where the serving card would go
    with pytest.raises(TltoolkitError, match="m.keras.json already exists; pass --force"):
        export(run, "keras", tmp_path / "m.keras")
    assert (tmp_path / "m.keras.json").read_text() == "{}" and not (tmp_path / "m.keras").exists()


def test_int8_needs_real_calibration_images_and_takes_them_from_data(run, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the scan cache
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(f"{run}/model.keras", plain / "model.keras")
    with pytest.raises(TltoolkitError, match="int8 calibration needs real images"):
        export(plain / "model.keras", "tflite", tmp_path / "out" / "m.tflite", quantize="int8")
    data = tmp_path / "data"
    write_class_folders(data, per_class=3, seed=3)
    result = export(plain / "model.keras", "tflite", tmp_path / "out" / "m.tflite", quantize="int8", data=data)
    assert result.max_difference <= 0.1
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines() == ["0", "1", "2"]  # no labels beside


def keras_probabilities(run, images):
    return _keras_runner(serving_model(load_classifier(run)))(images)


def test_int8_export_matches_keras_far_above_the_training_size(run, tmp_path):
    out = export(run, "tflite", tmp_path / "m.tflite", quantize="int8").path
    served = load_back("tflite", out)
    for height, width in [(128, 128), (256, 256), (100, 300), (1000, 750)]:  # 4x, 8x, non-square, a photo
        images = framed_images(height, width)  # the class depends on the crop box
        for image, (expected, _) in zip(images, keras_probabilities(run, images)):
            got, _ = served(image)
            np.testing.assert_allclose(got, expected[0], atol=TOLERANCES["int8"])
            assert got.argmax() == expected.argmax()


def test_verification_fails_on_an_export_that_drifts_at_other_sizes(run, tmp_path):
    # The converter's default int8 quantises the crop box arithmetic with ranges from the training
    # images' sizes: right at the training size, wrong crops at others.
    drifting = converter_default_int8(run, tmp_path / "default.tflite")
    sizes = verification_sizes((32, 32))
    images = [image for height, width in sizes for image in framed_images(height, width)]
    expected = keras_probabilities(run, images)
    at_training_size = slice(0, 3)
    verify("tflite", drifting, images[at_training_size], expected[at_training_size], TOLERANCES["int8"])
    with pytest.raises(TltoolkitError) as failure:
        verify("tflite", drifting, images, expected, TOLERANCES["int8"])
    message = str(failure.value)
    assert "\n" not in message and "tolerance 0.1" in message
    assert re.search(r"differs from the Keras model by 0\.\d+ on a (64x64|48x96|128x128|16x16) image", message)


@pytest.fixture(scope="module")
def calibrated(run, tmp_path_factory):
    """The run with a temperature and an energy threshold fitted on its images (`tltoolkit calibrate`)."""
    import shutil

    from tltoolkit.inference.calibrate import calibrate

    copy = shutil.copytree(run, tmp_path_factory.mktemp("calibrated") / "run")
    calibrate(copy, Path(run).parent / "data", coverage=0.9, score="energy")
    return copy


@pytest.mark.parametrize("fmt", ["keras", "savedmodel", "tflite", "onnx"])
def test_exports_carry_the_temperature_and_the_rejection_score(calibrated, tmp_path, fmt):
    from tltoolkit.calibration import logits_model, softmax
    from tltoolkit.rejection import rejection_of, score

    classifier = load_classifier(calibrated)
    stored = rejection_of(classifier.model)
    assert stored["temperature"] != 1.0
    out = tmp_path / ("exported" + {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx", "savedmodel": ""}[fmt])
    result = export(calibrated, fmt, out)
    assert f"its second output is the energy score: reject below {stored['threshold']:.6g}" in result.summary()
    card = json.loads(result.card.read_text())  # what a server applies to the second output
    assert card["score"] == "energy" and card["reject_below"] == pytest.approx(stored["threshold"])
    assert card["temperature"] == pytest.approx(stored["temperature"]) and card["coverage"] == pytest.approx(0.9)
    served = load_back(fmt, out)
    to_logits = logits_model(classifier.model)
    for _, image in odd_images():
        got, got_score = served(image)
        logits = np.asarray(to_logits(crop_resized(image)[None], training=False))
        tolerance = 1e-5 if fmt in ("keras", "savedmodel") else 1e-4
        np.testing.assert_allclose(got, softmax(logits, stored["temperature"])[0], atol=tolerance)
        assert got_score == pytest.approx(score(logits, "energy", stored["temperature"])[0], rel=tolerance)
    if fmt == "keras":
        from tltoolkit.architectures import load_model

        assert rejection_of(load_model(out))["threshold"] == stored["threshold"]  # in the file's config


def position_sensitive_model(folder) -> Path:
    """A seeded untrained 32x32 classifier that flattens its feature map: every view (crop, mirror image)
    gives other probabilities, unlike a pooled net trained on colours."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 64)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(len(COLOURS), activation="softmax", name="predictions")(x))
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in COLOURS))
    return folder / "model.keras"


@pytest.mark.parametrize("tta", ["flip", "ten-crop"])
def test_tta_inside_the_export_matches_evaluate_tta(tmp_path, tta):
    """On images at the TTA's load size (no resizing, so the pipeline and the export's front end agree),
    the exported model's outputs are `evaluate --tta`'s: the same views, averaged the same way."""
    import pandas as pd
    from PIL import Image

    from tests.images import write_image
    from tltoolkit.inference.predict import outputs
    from tltoolkit.inference.tta import load_size

    model = position_sensitive_model(tmp_path / "model")
    classifier = load_classifier(model)
    height, width = load_size(classifier.image_size, tta)
    rng = np.random.default_rng(11)
    paths = [write_image(tmp_path / "images" / f"{name}.png", coloured_image(colour, height, width, rng))
             for name, colour in COLOURS.items()]
    table = pd.DataFrame({"path": paths})
    expected, expected_scores = outputs(classifier, table, tta)
    assert np.abs(expected - outputs(classifier, table)[0]).max() > 1e-2  # the views matter: this can fail
    for fmt, suffix, tolerance in (("keras", ".keras", 1e-5), ("tflite", ".tflite", 1e-4)):
        result = export(model, fmt, tmp_path / "out" / f"tta{suffix}", tta=tta)
        assert f"with {tta} TTA inside" in result.summary()
        served = load_back(fmt, result.path)
        for path, want, want_score in zip(paths, expected, expected_scores):
            got, got_score = served(np.asarray(Image.open(path).convert("RGB")))
            np.testing.assert_allclose(got, want, atol=tolerance)
            assert got_score == pytest.approx(want_score, abs=tolerance)


def test_int8_export_with_tta_inside_passes_the_multi_size_verification(run, tmp_path):
    """int8 where it converts: the flip views and their mean quantised with the rest, verified at every
    size against the float Keras serving model with the same TTA inside."""
    result = export(run, "tflite", tmp_path / "int8-flip.tflite", quantize="int8", tta="flip")
    assert "tflite (int8) with flip TTA inside" in result.summary()
    assert result.max_difference <= TOLERANCES["int8"] and result.top1_agreement == 1.0
    assert json.loads(result.card.read_text())["tta"] == "flip"
    served = load_back("tflite", result.path)
    for name, image in odd_images():
        assert list(COLOURS)[int(np.argmax(served(image)[0]))] == name
