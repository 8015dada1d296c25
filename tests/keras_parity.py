"""Helpers for comparing our builders with keras.applications models (test_keras_parity.py's table,
and the family tests that check keras' weights still load under an option): weighted-layer names,
non-trivial BatchNorm statistics, a random batch, and legacy `.h5` weights files (the format of the
published ImageNet files).
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
from keras.src.legacy.saving import legacy_h5_format

TOLERANCE = 1e-4


def weighted_layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if layer.weights]


def randomize_batch_norm(model: keras.Model, seed: int = 0) -> None:
    """Gives every BatchNormalization non-trivial statistics, so a misplaced one shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for w in layer.weights:
                shape = tuple(w.shape)
                if w.name in ("gamma", "moving_variance"):
                    values.append(rng.uniform(0.5, 1.5, shape))
                else:
                    values.append(rng.normal(0.0, 0.1, shape))
            layer.set_weights(values)


def random_batch(model: keras.Model, batch: int = 2, seed: int = 1) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (batch, *shape)).astype("float32")


def write_legacy_h5(model: keras.Model, path) -> None:
    """Writes `model`'s weights in the legacy Keras 2 `.h5` layout of the published ImageNet files."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
