"""The registry's preprocessing modes as a Keras layer that sits inside the model.

Putting preprocessing in the model (not the input pipeline) means an exported model takes raw 0..255 RGB
pixels, and the arithmetic runs on the accelerator. The layers are Keras core layers only, with fixed
non-trainable constants, so a saved `.keras` model loads with `safe_mode=True` and no custom objects.
Each mode matches `keras.applications.imagenet_utils.preprocess_input` for that mode.
"""

from __future__ import annotations

import numpy as np

from tltoolkit.architectures.registry import CAFFE_MEAN_BGR, RGB_MEAN_STD
from tltoolkit.preprocessing_modes import PREPROCESSING_MODES
from tltoolkit.errors import TltoolkitError


def preprocessing_layer(mode: str, name: str = "preprocessing", channels: int = 3):
    """A `keras.Sequential` named `name` turning raw RGB pixels (uint8 or float, 0..255) into the input
    the architecture was trained on; `mode` is one of `PREPROCESSING_MODES`. With `channels=1` (LeNet-5)
    the RGB pixels are first turned into luma (ITU-R BT.601), so grey-input models take the same
    RGB batches as every other."""
    import keras

    if mode not in PREPROCESSING_MODES:
        raise TltoolkitError(f"unknown preprocessing mode {mode!r}; use one of {', '.join(PREPROCESSING_MODES)}")
    inputs = keras.Input(shape=(None, None, 3), name=f"{name}_pixels")
    if mode == "tf":
        layers = [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=f"{name}_rescale")]
    elif mode == "scale":
        layers = [keras.layers.Rescaling(1 / 255, name=f"{name}_rescale")]
    elif mode in RGB_MEAN_STD:
        # (x/255 - mean)/std folded into one per-channel scale and offset.
        mean, std = (np.asarray(v) for v in RGB_MEAN_STD[mode])
        scale = (1 / (255 * std)).tolist()
        offset = (-mean / std).tolist()
        layers = [keras.layers.Rescaling(scale, offset=offset, name=f"{name}_rescale")]
    elif mode == "caffe":
        layers = [keras.layers.Rescaling(1.0, name=f"{name}_to_float"), _rgb_to_bgr_minus_mean(name)]
    else:
        layers = [keras.layers.Identity(name=f"{name}_identity")]
    if channels == 1:
        layers = [keras.layers.Rescaling(1.0, name=f"{name}_to_float"), _rgb_to_luma(name), *layers]
    elif channels != 3:
        raise TltoolkitError(f"preprocessing takes RGB pixels into 1 or 3 channels, not {channels}")
    return keras.Sequential([inputs, *layers], name=name)


def _rgb_to_luma(name: str):
    """A frozen 1x1 convolution computing 0.299 R + 0.587 G + 0.114 B (weightless for training)."""
    import keras

    conv = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name=f"{name}_luma")
    conv.build((None, None, None, 3))
    conv.set_weights([np.asarray([0.299, 0.587, 0.114], "float32").reshape(1, 1, 3, 1)])
    return conv


def _rgb_to_bgr_minus_mean(name: str):
    """A frozen 1x1 convolution whose kernel reverses the channels and whose bias is minus the BGR mean.

    It permutes before subtracting, so on raw integer pixels the result is exact even where the GPU
    runs convolutions in TF32 (integers up to 2048 are exact there)."""
    import keras

    conv = keras.layers.Conv2D(3, 1, trainable=False, name=f"{name}_bgr_mean")
    conv.build((None, None, None, 3))
    conv.set_weights([np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3),
                      -np.asarray(CAFFE_MEAN_BGR, dtype="float32")])
    return conv
