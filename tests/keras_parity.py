"""Checks that one of our builders computes the same function as a keras.applications model.

Used by the family tests whose architectures share keras.applications' ImageNet weights: equal
weighted-layer names in equal order, weights that transplant one to one, equal outputs, and legacy
`.h5` weights files (the format of the published ImageNet files) that load topologically.
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


def assert_same_outputs(ours: keras.Model, theirs: keras.Model) -> None:
    x = random_batch(theirs)
    expected = keras.ops.convert_to_numpy(theirs(x, training=False))
    actual = keras.ops.convert_to_numpy(ours(x, training=False))
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE, atol=TOLERANCE)


def assert_transplants(ours: keras.Model, theirs: keras.Model) -> None:
    """keras.applications' weights, in its order, fit ours and give the same outputs."""
    assert weighted_layer_names(ours) == weighted_layer_names(theirs)
    randomize_batch_norm(theirs)
    ours.set_weights(theirs.get_weights())  # raises on any shape mismatch
    assert_same_outputs(ours, theirs)


def write_legacy_h5(model: keras.Model, path) -> None:
    """Writes `model`'s weights in the legacy Keras 2 `.h5` layout of the published ImageNet files."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def assert_loads_legacy_h5(ours: keras.Model, theirs: keras.Model, path) -> None:
    """A legacy `.h5` file written from keras.applications loads into ours (topologically)."""
    randomize_batch_norm(theirs)
    write_legacy_h5(theirs, path)
    ours.load_weights(str(path))
    for name in weighted_layer_names(theirs):  # every weight landed on the layer of the same name
        for a, b in zip(ours.get_layer(name).get_weights(), theirs.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert_same_outputs(ours, theirs)
