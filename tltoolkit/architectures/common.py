"""Pieces the family builders share: the input, the pooled classifier head, option checks, Caffe's
max pool, Keras' fresh-session layer names and torch checkpoint key names."""

from __future__ import annotations

import collections
import functools

import keras
from keras import layers

from tltoolkit.architectures.layers import StochasticDepth
from tltoolkit.architectures.registry import ArchitectureError, ArchSpec, resolve_input_shape
from tltoolkit.heads import GLOBAL_POOLINGS

# The Inception family's defaults, shared by googlenet.py, inception_v3.py, inception_v4.py and
# inception_resnet_v2.py (one module per model, as keras.applications and timm split them).
InceptionSpec = functools.partial(ArchSpec, family="inception", penultimate="avg_pool", default_size=299,
                                  min_size=75, preprocessing="tf")
SZEGEDY_2016 = ("Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact of Residual "
                "Connections on Learning, arXiv:1602.07261")  # Inception-v4 and Inception-ResNet-v2


def model_input(spec: ArchSpec, input_shape) -> keras.KerasTensor:
    return keras.Input(shape=resolve_input_shape(spec, input_shape), name="input")


def check_pooling(spec: ArchSpec, pooling) -> None:
    if pooling is not None and pooling not in GLOBAL_POOLINGS:  # keras.applications' `pooling` argument
        raise ArchitectureError(f"{spec.id}: pooling must be one of {', '.join(GLOBAL_POOLINGS)} or None; "
                                f"received {pooling!r}")


def check_rate(spec: ArchSpec, option: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ArchitectureError(f"{spec.id}: {option} must be a rate in [0, 1); received {value!r}")


def check_bool(spec: ArchSpec, option: str, value) -> None:
    if not isinstance(value, bool):
        raise ArchitectureError(f"{spec.id}: {option} must be True or False; received {value!r}")


def check_aux_logits(spec: ArchSpec, aux_logits, include_top: bool) -> None:
    if aux_logits and not include_top:
        raise ArchitectureError(f"{spec.id}: aux_logits=True needs include_top=True; received include_top=False")


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


def max_pool(x, caffe: bool, name: str, size: int = 3):
    """`size`x`size` stride-2 max pooling; `caffe` rounds the output size up (Caffe's pooling,
    torch's ceil_mode), otherwise down (torchvision's AlexNet). Rounding up pads the bottom/right
    with zeros: the input is post-ReLU. Maps of unknown size round down."""
    if caffe:
        pads = [(0, 0 if d is None else (d - size) % 2) for d in x.shape[1:3]]
        if any(after for _, after in pads):
            x = layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(size, strides=2, name=name)(x)


class KerasNames:
    """Hands out the names Keras gives unnamed layers in a fresh session: `conv2d`, `conv2d_1`, ...

    One instance per model build, so the names do not depend on the session's global counters.
    """

    def __init__(self):
        self._used = collections.Counter()

    def __call__(self, prefix: str, name: str | None = None) -> str:
        if name is not None:  # keras.applications named this layer itself
            return name
        n = self._used[prefix]
        self._used[prefix] += 1
        return prefix if n == 0 else f"{prefix}_{n}"


# PyTorch checkpoints (checkpoints.py): a BatchNorm's tensors in Keras' weight order
# (gamma, beta, moving mean, moving variance).
BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def basic_conv_keys(module: str, kind: str) -> list[str]:
    """The tensors of a conv-BN module (torchvision's and timm's BasicConv2d: `conv` and `bn` inside)
    for our `{name}_conv` (its kernel) or `{name}_bn` layer."""
    return [f"{module}.conv.weight"] if kind == "conv" else [f"{module}.bn.{key}" for key in BN_KEYS]
