"""Pieces every family builder shares: the input, the pooled classifier head, option checks."""

from __future__ import annotations

import keras
from keras import layers

from tltoolkit.architectures.registry import ArchitectureError, ArchSpec, resolve_input_shape
from tltoolkit.heads import GLOBAL_POOLINGS


def model_input(spec: ArchSpec, input_shape) -> keras.KerasTensor:
    return keras.Input(shape=resolve_input_shape(spec, input_shape), name="input")


def check_pooling(spec: ArchSpec, pooling) -> None:
    if pooling is not None and pooling not in GLOBAL_POOLINGS:  # keras.applications' `pooling` argument
        raise ArchitectureError(f"{spec.id}: pooling must be one of {', '.join(GLOBAL_POOLINGS)} or None; "
                                f"received {pooling!r}")


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


@keras.saving.register_keras_serializable(package="tltoolkit")
class StochasticDepth(layers.Layer):
    """`shortcut + residual`, the residual branch dropped at random while training.

    Stochastic depth (Huang et al. 2016, arXiv:1603.09382) in its "inverted" form (timm's
    DropPath): each sample's residual is dropped with probability `rate` and the kept ones are
    scaled by 1/(1 - rate) during training, so inference is the plain sum. The paper drops whole
    mini-batches and scales by 1 - rate at inference instead, which would change what pretrained
    weights compute the moment the option is switched on: wrong for fine-tuning.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        shortcut, residual = inputs
        if training and self.rate > 0:
            keep = 1.0 - self.rate
            per_sample = (keras.ops.shape(residual)[0],) + (1,) * (len(residual.shape) - 1)
            mask = keras.ops.floor(keep + keras.random.uniform(per_sample, seed=self.seed_generator))
            residual = residual * keras.ops.cast(mask / keep, residual.dtype)
        return shortcut + residual

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def drop_path_rates(drop_path_rate: float, blocks: int) -> list[float]:
    """Huang et al.'s linear rule: block l of L is dropped with probability l/L * drop_path_rate."""
    return [drop_path_rate * b / blocks for b in range(1, blocks + 1)]


def residual_add(shortcut, residual, drop_rate: float, name: str):
    """`shortcut + residual` as an Add, or StochasticDepth when `drop_rate` > 0: same name, no
    weights, so layer positions and weight order (and pretrained files) are unchanged.
    The input order [shortcut, residual] is keras.applications': it fixes the weighted-layer order."""
    if drop_rate:
        return StochasticDepth(drop_rate, name=name)([shortcut, residual])
    return layers.Add(name=name)([shortcut, residual])
