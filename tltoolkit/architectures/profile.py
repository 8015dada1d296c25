"""Analytic multiply-accumulate counts from layer shapes (no profiler, no forward pass).

Counts Conv2D (groups included), DepthwiseConv2D, SeparableConv2D (depthwise + pointwise) and Dense
as output elements x kernel fan-in, recursing into nested models. BN, activations, pooling, adds and
SE multiplies are not counted; FLOPs are about 2 x MACs. This is the convention of torchvision's
`_ops` and of the ResNet/SENet papers' "FLOPs", which are MACs.
"""

from __future__ import annotations

import math

import keras
from keras import layers


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape[1:])


def layer_macs(layer) -> int:
    if isinstance(layer, keras.Model):
        return sum(layer_macs(inner) for inner in layer.layers)
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        out = _elements(layer.output.shape)
        spatial = out // layer.filters
        channels = layer.input.shape[-1] * layer.depth_multiplier
        return spatial * channels * kh * kw + out * channels
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _elements(layer.output.shape) * kh * kw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        fan_in = kh * kw * layer.input.shape[-1] // layer.groups
        return _elements(layer.output.shape) * fan_in
    if isinstance(layer, layers.Dense):
        return _elements(layer.output.shape) * layer.input.shape[-1]
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one image."""
    return sum(layer_macs(layer) for layer in model.layers)


def activation_bytes(model: keras.Model, bytes_per_element: int = 4) -> int:
    """Sum of every layer's output size for one image: a simple upper bound on activation memory."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        total += sum(_elements(t.shape) for t in outputs)
    return total * bytes_per_element
