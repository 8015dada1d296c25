"""Pieces every family builder shares: the input, the pooled classifier head, option checks."""

from __future__ import annotations

import keras
from keras import layers

from tltoolkit.architectures.registry import ArchitectureError, ArchSpec, resolve_input_shape

POOLINGS = (None, "avg", "max")


def model_input(spec: ArchSpec, input_shape) -> keras.KerasTensor:
    return keras.Input(shape=resolve_input_shape(spec, input_shape), name="input")


def check_pooling(spec: ArchSpec, pooling) -> None:
    if pooling not in POOLINGS:
        raise ArchitectureError(f"{spec.id}: pooling must be one of avg, max or None; received {pooling!r}")


def pooled_head(x, include_top: bool, num_classes: int, pooling, dropout: float = 0.0,
                classifier_activation="softmax"):
    """keras.applications' head for globally pooled networks.

    With the top: `avg_pool` (GlobalAveragePooling2D) -> [dropout] -> `predictions` Dense.
    Without it: the feature map, or a global `avg_pool`/`max_pool` when `pooling` asks for one.
    """
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = layers.Dropout(dropout, name="top_dropout")(x)
        return layers.Dense(num_classes, activation=classifier_activation, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x
