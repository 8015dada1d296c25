"""New classifier heads: pooling -> standardisation -> dropout -> optional hidden Dense layers (each followed
by dropout) -> `Dense(num_classes, softmax)` named `predictions`, on any base (a registry model,
`keras:NAME`, a saved `.keras`).

    head = head_model(features.shape[1:], num_classes=3)   # phase 1: trained on cached features
    model = attach_head(base, 3)                             # phase 2: the base and the same head
    copy_head_weights(head, model)                           # same predictions on the same images

The head alone (`head_model`) and the head inside the full model (`attach_head`) have the same layer
names and weight shapes, so weights move between them 1:1. Pooling has no weights: a head trained on
pooled feature vectors is the head of the full model. The standardisation (`head_normalization`)
holds the training features' mean and variance once phase 1 has set them (`set_standardisation`);
until then it is the identity. It is a frozen `BatchNormalization` without scale and offset, i.e.
(x - mean) / sqrt(variance), its statistics variables: Keras' `Normalization` layer computes with
constant copies of its statistics, which tf2onnx cannot export. Only Keras core layers: saved models
load in safe mode without custom objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tltoolkit.errors import TltoolkitError

GLOBAL_POOLINGS = ("avg", "max")  # the global poolings of a feature map (extraction pools with these)
POOLINGS = (*GLOBAL_POOLINGS, "flatten", "none")  # a head's
PREDICTIONS = "predictions"
HEAD_LAYER_PREFIX = "head_"  # every head layer but `predictions` is named head_*: a head's layers are findable
NORMALIZATION = f"{HEAD_LAYER_PREFIX}normalization"


def _check(num_classes: int, hidden: Sequence[int], dropout: float, pooling: str) -> None:
    if num_classes < 2:
        raise TltoolkitError(f"a classifier needs at least 2 classes, got {num_classes}")
    if pooling not in POOLINGS:
        raise TltoolkitError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    if not 0 <= dropout < 1:
        raise TltoolkitError(f"dropout must be in [0, 1), got {dropout}")
    if any(int(units) < 1 for units in hidden):
        raise TltoolkitError(f"hidden layer sizes must be positive, got {list(hidden)}")


def fold_standardisation(model) -> bool:
    """Folds the head's standardisation into the Dense layer after it, in place: that layer's kernel
    and bias absorb (x - mean) / std, the standardisation becomes the identity, and the model computes
    the same function. Exports do this: int8 quantisation of the standardised features would amplify
    the rounding of every low-variance feature. Returns whether `model` (or a model nested in it) had one."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model) and fold_standardisation(layer):
            return True
    names = [layer.name for layer in model.layers]
    if NORMALIZATION not in names:
        return False
    norm = model.get_layer(NORMALIZATION)
    mean, variance = (np.asarray(w, "float64") for w in norm.get_weights())
    scale = 1.0 / np.sqrt(variance + norm.epsilon)
    dense = dense_layers(model)[0]  # dropout between them is the identity at inference
    kernel, bias = (np.asarray(w, "float64") for w in dense.get_weights())
    dense.set_weights([(kernel * scale[:, None]).astype("float32"), (bias - (mean * scale) @ kernel).astype("float32")])
    norm.set_weights([np.zeros_like(mean, "float32"), np.full_like(variance, 1.0 - norm.epsilon, "float32")])
    return True


def _pool(x, pooling: str):
    import keras

    if len(x.shape) == 2 or pooling == "none":
        return x  # already a vector (e.g. a classifier's penultimate layer or pooled cached features)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=f"{HEAD_LAYER_PREFIX}avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=f"{HEAD_LAYER_PREFIX}max_pool")(x)
    return keras.layers.Flatten(name=f"{HEAD_LAYER_PREFIX}flatten")(x)


def _classifier(x, num_classes: int, hidden: Sequence[int], dropout: float, l2: float, name: str):
    import keras

    regularizer = keras.regularizers.L2(l2) if l2 else None
    x = keras.layers.BatchNormalization(center=False, scale=False, epsilon=1e-9, trainable=False,
                                        name=NORMALIZATION)(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{HEAD_LAYER_PREFIX}dropout")(x)
    for i, units in enumerate(hidden, start=1):
        x = keras.layers.Dense(int(units), activation="relu", kernel_regularizer=regularizer,
                               name=f"{HEAD_LAYER_PREFIX}dense{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{HEAD_LAYER_PREFIX}dropout{i}")(x)
    # float32 softmax even under mixed precision: half-precision probabilities underflow.
    return keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer,
                              dtype="float32", name=name)(x)


def attach_head(base, num_classes: int, hidden: Sequence[int] = (), dropout: float = 0.2, pooling: str = "avg",
                l2: float = 0.0, name: str = PREDICTIONS):
    """`base` (a Functional model ending in a feature map or a feature vector) with a new head; the
    base is nested as one layer, so `model.get_layer(base.name)` is the base."""
    import keras

    _check(num_classes, hidden, dropout, pooling)
    inputs = keras.Input(base.input.shape[1:], dtype=base.input.dtype, name="base_input")
    x = _classifier(_pool(base(inputs), pooling), num_classes, hidden, dropout, l2, name)
    return keras.Model(inputs, x, name=f"{base.name}_classifier")


def head_model(feature_shape, num_classes: int, hidden: Sequence[int] = (), dropout: float = 0.2,
               pooling: str = "avg", l2: float = 0.0, name: str = PREDICTIONS):
    """The head alone, on features of `feature_shape` (a feature map, or vectors already pooled)."""
    import keras

    _check(num_classes, hidden, dropout, pooling)
    inputs = keras.Input(tuple(feature_shape), name="features")
    x = _classifier(_pool(inputs, pooling), num_classes, hidden, dropout, l2, name)
    return keras.Model(inputs, x, name="head")


def head_layers(model) -> list:
    """The weighted head layers of `model` (standardisation, hidden Dense layers, `predictions`), in order."""
    return [layer for layer in model.layers
            if layer.weights and (layer.name.startswith(HEAD_LAYER_PREFIX) or layer.name == PREDICTIONS)]


def dense_layers(model) -> list:
    """The head's Dense layers (hidden ones, then `predictions`), in order."""
    return [layer for layer in head_layers(model) if layer.name != NORMALIZATION]


def set_standardisation(model, mean: np.ndarray, variance: np.ndarray) -> None:
    """Sets the head's standardisation to the training features' statistics."""
    model.get_layer(NORMALIZATION).set_weights([np.asarray(mean, "float32"), np.asarray(variance, "float32")])


def copy_head_weights(source, target) -> None:
    """Copies the head of `source` into `target` (head model <-> full model), layer by layer by name."""
    for layer in head_layers(source):
        try:
            other = target.get_layer(layer.name)
        except ValueError:
            raise TltoolkitError(f"{target.name} has no head layer {layer.name!r}; the heads differ") from None
        other.set_weights(layer.get_weights())


def grow_predictions(old_kernel: np.ndarray, old_bias: np.ndarray, new_kernel: np.ndarray,
                     new_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A grown classifier's weights: the old classes' columns as they were, the new ones as freshly
    initialised (`new_*`, already of the grown size). Raises unless only output columns are added."""
    old_inputs, old_classes = old_kernel.shape
    new_inputs, new_classes = new_kernel.shape
    if old_inputs != new_inputs or new_classes < old_classes:
        raise TltoolkitError(f"cannot grow a {old_inputs}x{old_classes} classifier into {new_inputs}x{new_classes}: "
                             f"only new classes can be added")
    kernel, bias = new_kernel.copy(), new_bias.copy()
    kernel[:, :old_classes] = old_kernel
    bias[:old_classes] = old_bias
    return kernel, bias


def transfer_head(source, target) -> int:
    """Copies `source`'s head into `target`, whose `predictions` may have more classes: old classes keep
    their weights, new ones keep `target`'s fresh initialisation. Returns the number of added classes."""
    names = {layer.name for layer in head_layers(target)}
    for layer in head_layers(source):  # a head saved before standardisation existed has no such layer
        if layer.name != PREDICTIONS and layer.name in names:
            target.get_layer(layer.name).set_weights(layer.get_weights())
    old = source.get_layer(PREDICTIONS)
    new = target.get_layer(PREDICTIONS)
    kernel, bias = grow_predictions(*old.get_weights(), *new.get_weights())
    new.set_weights([kernel, bias])
    return new.get_weights()[1].shape[0] - old.get_weights()[1].shape[0]


def class_weights(counts: Mapping[int, int] | Sequence[int]) -> dict[int, float]:
    """scikit-learn's "balanced" weights, `n_samples / (n_classes * count)`, from per-class counts
    (a sequence indexed by class id, or a mapping); what `--class-weight auto` uses. Classes
    without training images get weight 0 (nothing to weigh)."""
    items = counts.items() if isinstance(counts, Mapping) else enumerate(counts)
    items = [(int(k), int(v)) for k, v in items]
    present = [v for _, v in items if v > 0]
    total = sum(present)
    return {k: (total / (len(present) * v) if v else 0.0) for k, v in items}
