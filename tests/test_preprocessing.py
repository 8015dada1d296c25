"""The preprocessing layer equals keras.applications' preprocess_input (and the CIFAR checkpoints' Normalize), saves and loads in safe mode."""

import keras
import numpy as np
import pytest

from tltoolkit.architectures.preprocessing import preprocessing_layer
from tltoolkit.preprocessing_modes import PREPROCESSING_MODES
from tltoolkit.errors import TltoolkitError

CIFAR = {  # chenyaofo/pytorch-cifar-models' Normalize(mean, std), on 0..1 pixels
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5070, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761)),
}

PIXELS = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)


def reference(mode, pixels):
    """What keras.applications does for each mode (on a float copy: preprocess_input edits in place)."""
    x = pixels.astype("float32")
    if mode == "none":
        return x
    if mode == "scale":
        return x / 255
    if mode in CIFAR:
        mean, std = (np.asarray(v, "float32") for v in CIFAR[mode])
        return (x / 255 - mean) / std
    return keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_matches_keras_applications(mode, dtype):
    out = np.asarray(preprocessing_layer(mode)(PIXELS.astype(dtype)), dtype="float32")
    np.testing.assert_allclose(out, reference(mode, PIXELS), atol=1e-4)


def test_family_preprocess_input_functions_agree():
    """The modes the registry uses, as the architecture families themselves spell them."""
    x = PIXELS.astype("float32")
    pairs = {"caffe": keras.applications.vgg16.preprocess_input,
             "tf": keras.applications.resnet_v2.preprocess_input,
             "torch": keras.applications.densenet.preprocess_input}
    for mode, family in pairs.items():
        out = np.asarray(preprocessing_layer(mode)(PIXELS))
        np.testing.assert_allclose(out, family(x.copy()), atol=1e-4, err_msg=mode)


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
def test_no_trainable_weights_and_safe_mode_round_trip(mode, tmp_path):
    inputs = keras.Input(shape=(8, 8, 3))
    model = keras.Model(inputs, preprocessing_layer(mode)(inputs))
    assert model.trainable_weights == []
    path = tmp_path / f"{mode}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.trainable_weights == []
    np.testing.assert_allclose(np.asarray(loaded(PIXELS.astype("float32"))),
                               reference(mode, PIXELS), atol=1e-4)


def test_unknown_mode_is_a_one_line_error():
    with pytest.raises(TltoolkitError, match="unknown preprocessing mode 'bgr'.*caffe"):
        preprocessing_layer("bgr")


def test_grey_models_take_rgb_pixels_as_luma():
    import numpy as np

    from tltoolkit.architectures.preprocessing import preprocessing_layer

    layer = preprocessing_layer("scale", channels=1)
    pixels = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]]], "uint8")
    grey = np.asarray(layer(pixels))
    assert grey.shape == (1, 1, 4, 1) and not layer.trainable_weights
    np.testing.assert_allclose(grey[0, 0, :, 0], [0.299, 0.587, 0.114, 1.0], atol=1e-6)
