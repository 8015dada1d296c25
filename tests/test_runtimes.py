"""CPU runtimes (tltoolkit.runtimes): OpenVINO fp32, bf16 and int8 features against TensorFlow fp32's,
on the embedded ResNet-20 backbone (trained on digits 0-4) and real digit images at 32x32."""

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tltoolkit.errors import TltoolkitError
from tltoolkit.runtimes import INSTALL, check_native, compare_features, compile_runtime, cpu_capabilities, fidelity

ROOT = Path(__file__).resolve().parents[1]
BACKBONE = ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5"
DIGITS = sorted((ROOT / "data" / "digits59").glob("*/*.png"))
BATCH = 16


def load(files) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) for f in files])


@pytest.fixture(scope="module")
def model():
    """Raw 0..255 pixels -> preprocessing -> the backbone, average-pooled: the shape of an extractor."""
    import keras

    import tltoolkit
    from tltoolkit.architectures.preprocessing import preprocessing_layer

    base = tltoolkit.build("resnet20_cifar", weights=str(BACKBONE), include_top=False, pooling="avg",
                           input_shape=(32, 32, 3))
    pixels = keras.Input((32, 32, 3))
    return keras.Model(pixels, base(preprocessing_layer(tltoolkit.get_spec("resnet20_cifar").preprocessing)(pixels)))


@pytest.fixture(scope="module")
def images():
    """37 images, not a multiple of the compiled batch: the last chunk is padded."""
    return load(DIGITS[::4][:37])


@pytest.fixture(scope="module")
def capabilities():
    return cpu_capabilities()


@pytest.fixture(scope="module")
def calibration():
    """32 other digit images in batches of 10 (the last one short) and their file hashes."""
    files = DIGITS[1::4][:32]
    batches = [load(files[i:i + 10]) for i in range(0, len(files), 10)]
    return batches, [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def test_tf_runtime_is_the_keras_model_in_inference_mode(model, images):
    runtime = compile_runtime(model, "tf", "fp32")
    assert runtime.identity == {"runtime": "tf", "precision": "fp32"}
    np.testing.assert_allclose(runtime(images), model.predict_on_batch(images), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def openvino_fp32(model):
    return compile_runtime(model, "openvino", "fp32", batch_size=BATCH)


@pytest.fixture(scope="module")
def openvino_int8(model, calibration):
    batches, hashes = calibration
    return compile_runtime(model, "openvino", "int8", batch_size=BATCH, calibration=iter(batches),
                           calibration_hashes=hashes)


def test_openvino_fp32_matches_tensorflow(model, images, openvino_fp32):
    runtime = openvino_fp32
    features = runtime(images)
    assert features.shape == (37, model.output.shape[-1])
    # Computed in f32 whatever the CPU: OpenVINO's own default there would be bf16.
    assert runtime.identity["inference_precision"] == "f32"
    result = fidelity(runtime, model, images)
    assert result.images == 37
    assert result.cosine_min > 1 - 1e-6 and result.max_relative_difference < 1e-5, result.summary()
    # Each image's features do not depend on the images batched (or padded) with it.
    np.testing.assert_allclose(runtime(images[:1]), features[:1], rtol=1e-6, atol=1e-6)


def test_openvino_bf16_is_close_or_refused(model, images, capabilities):
    if "BF16" not in capabilities:
        with pytest.raises(TltoolkitError, match="no native BF16"):
            compile_runtime(model, "openvino", "bf16", batch_size=BATCH)
        return
    runtime = compile_runtime(model, "openvino", "bf16", batch_size=BATCH)
    assert runtime.identity["inference_precision"] == "bf16"
    result = fidelity(runtime, model, images)
    print(f"\nbf16 {result.summary()}")
    # Measured on this model and these images: cosine min 0.99999, max difference 3.8e-3 of the largest.
    assert result.cosine_min > 0.999 and result.max_relative_difference < 0.02, result.summary()


def test_openvino_int8_calibrated_on_real_images(model, images, calibration, openvino_int8):
    runtime = openvino_int8
    assert runtime.identity["calibration"] == calibration[1] and runtime.identity["nncf"]
    result = fidelity(runtime, model, images)
    print(f"\nint8 {result.summary()}")
    # Measured: cosine min 0.9975, max difference 0.075 of the largest feature.
    assert result.cosine_min > 0.98, result.summary()
    assert result.max_relative_difference > 1e-4  # quantised: not the fp32 numbers


def test_identities_differ_by_runtime_precision_and_calibration(model, calibration, capabilities, openvino_fp32,
                                                                openvino_int8):
    batches, hashes = calibration
    identities = [compile_runtime(model, "tf").identity, openvino_fp32.identity, openvino_int8.identity,
                  compile_runtime(model, "openvino", "int8", batch_size=BATCH, calibration=batches[:1],
                                  calibration_hashes=hashes[:10]).identity]
    if "BF16" in capabilities:
        identities.append(compile_runtime(model, "openvino", "bf16", batch_size=BATCH).identity)
    assert len({repr(sorted(identity.items())) for identity in identities}) == len(identities)
    assert identities[1]["openvino"] and "calibration" not in identities[1]


def test_int8_from_the_same_images_is_the_same_model(model, images, calibration, openvino_int8):
    """What a resumed int8 extraction relies on: its cache key (the identity) names the same features."""
    batches, hashes = calibration
    again = compile_runtime(model, "openvino", "int8", batch_size=BATCH, calibration=batches, calibration_hashes=hashes)
    assert again.identity == openvino_int8.identity
    np.testing.assert_array_equal(again(images), openvino_int8(images))


def test_uint8_input_model(capabilities):
    import keras

    pixels = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(keras.ops.cast(pixels, "float32"))
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    model = keras.Model(pixels, keras.layers.GlobalAveragePooling2D()(x))
    batch = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    runtime = compile_runtime(model, "openvino", "fp32", batch_size=4)
    np.testing.assert_allclose(runtime(batch), model.predict_on_batch(batch), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("package, precision", [("openvino", "fp32"), ("nncf", "int8")])
def test_missing_extra_is_one_line_naming_the_install(model, calibration, monkeypatch, package, precision):
    # None in sys.modules is how Python hides an installed package: the import raises ImportError.
    monkeypatch.setitem(sys.modules, package, None)
    batches, hashes = calibration
    extra = dict(calibration=batches, calibration_hashes=hashes) if precision == "int8" else {}
    with pytest.raises(TltoolkitError) as error:
        compile_runtime(model, "openvino", precision, batch_size=BATCH, **extra)
    message = str(error.value)
    assert "\n" not in message and INSTALL in message and package in message


@pytest.mark.parametrize("arguments, match", [
    (dict(runtime="onnx"), "unknown runtime 'onnx'"),
    (dict(precision="fp16"), "unknown precision 'fp16'"),
    (dict(runtime="tf", precision="bf16"), "--runtime openvino"),
    (dict(runtime="openvino", precision="int8"), "needs calibration images"),
    (dict(runtime="openvino", calibration=[], calibration_hashes=[]), "int8 only"),
    (dict(runtime="openvino", batch_size=0), "batch size must be positive"),
])
def test_bad_arguments(model, arguments, match):
    with pytest.raises(TltoolkitError, match=match):
        compile_runtime(model, **arguments)


def test_calibration_hashes_must_match_the_images(model, calibration):
    batches, hashes = calibration
    with pytest.raises(TltoolkitError, match="32 images but 31 hashes"):
        compile_runtime(model, "openvino", "int8", batch_size=BATCH, calibration=batches,
                        calibration_hashes=hashes[:-1])


def test_check_native_refuses_what_the_cpu_lacks():
    check_native("bf16", ["BF16", "FP32", "INT8"])
    with pytest.raises(TltoolkitError, match="precision bf16: this CPU has no native BF16"):
        check_native("bf16", ["FP32", "INT8"])
    with pytest.raises(TltoolkitError, match="no native INT8"):
        check_native("int8", ["FP32"])


def test_compare_features():
    reference = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    same = compare_features(reference, reference)
    assert (same.images, same.cosine_mean, same.cosine_min, same.max_relative_difference) == (3, 1.0, 1.0, 0.0)
    # Row 1 scaled (cosine 1), row 2 turned by 90 degrees (cosine 0), max |difference| 4 of the largest 4.
    other = compare_features(np.array([[6.0, 8.0], [0.0, 1.0], [0.0, 0.0]]), reference)
    assert other.cosine_min == pytest.approx(0.0) and other.cosine_mean == pytest.approx(2 / 3)
    assert other.max_relative_difference == pytest.approx(4 / 4)
    # Feature maps are compared per image, flattened; a zero vector against a non-zero one disagrees.
    maps = compare_features(np.zeros((2, 2, 2, 1)), np.ones((2, 2, 2, 1)))
    assert (maps.cosine_min, maps.max_relative_difference) == (0.0, 1.0)
    assert "cosine mean" in other.summary()
    with pytest.raises(TltoolkitError, match="same non-empty shape"):
        compare_features(np.zeros((2, 3)), np.zeros((2, 4)))

