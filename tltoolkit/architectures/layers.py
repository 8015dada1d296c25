"""The architectures' custom Keras layers: what the papers use and Keras lacks.

Each registers as `tltoolkit>NAME` (`keras.saving.register_keras_serializable(package="tltoolkit")`),
so saved `.keras` models load in safe mode once this module is imported (`tltoolkit.architectures`
imports it); the registered names, not this module's path, are what a saved model refers to.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="tltoolkit")
class LocalResponseNormalization(layers.Layer):
    """AlexNet's response normalization across channels (Krizhevsky et al. 2012, §3.3):
    `a / (k + alpha * sum of a^2 over the n nearest channels)^beta`, paper values k=2, n=5,
    alpha=1e-4, beta=0.75 (`depth_radius` is (n - 1) / 2)."""

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = depth_radius
        self.bias = bias
        self.alpha = alpha
        self.beta = beta

    def call(self, inputs):
        return tf.nn.local_response_normalization(
            inputs, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="tltoolkit")
class ChannelGather(layers.Layer):
    """The channels `indices` of the input, in that order (repeats allowed)."""

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = tuple(int(i) for i in indices)

    def call(self, inputs):
        return keras.ops.take(inputs, list(self.indices), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.indices))

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}


@keras.saving.register_keras_serializable(package="tltoolkit")
class AdaptiveAveragePooling(layers.Layer):
    """torch.nn.AdaptiveAvgPool2d: output cell i averages input rows floor(i*H/out) up to
    ceil((i+1)*H/out), and likewise for columns, so maps smaller than the output are repeated.
    (keras.layers.AdaptiveAveragePooling2D fails on maps smaller than its output.)"""

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        self.output_size = int(output_size)

    @staticmethod
    def _bins(size: int, out: int) -> np.ndarray:
        weights = np.zeros((out, size), "float32")
        for i in range(out):
            start, stop = i * size // out, -(-(i + 1) * size // out)
            weights[i, start:stop] = 1.0 / (stop - start)
        return weights

    def call(self, inputs):
        rows = keras.ops.convert_to_tensor(self._bins(inputs.shape[1], self.output_size), inputs.dtype)
        cols = keras.ops.convert_to_tensor(self._bins(inputs.shape[2], self.output_size), inputs.dtype)
        return keras.ops.einsum("ih,bhwc,jw->bijc", rows, inputs, cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


@keras.saving.register_keras_serializable(package="tltoolkit")
def lecun_tanh(x):
    """LeNet-5's squashing function `1.7159 tanh(2x/3)` (LeCun et al. 1998, Appendix A)."""
    return 1.7159 * keras.ops.tanh(x * (2.0 / 3.0))


def _random_signs(shape, dtype=None):
    return keras.ops.sign(keras.random.uniform(shape, -1.0, 1.0, dtype=dtype))


@keras.saving.register_keras_serializable(package="tltoolkit")
class EuclideanRBF(layers.Layer):
    """LeNet-5's output layer: unit i's penalty is the squared distance of the input to a fixed
    prototype code (`sum_j (x_j - w_ij)^2`, LeCun et al. 1998 eq. 7). The paper's prototypes are
    hand-drawn +-1 bitmaps, kept fixed; these are random +-1 codes, not trained. The output is the
    softmax of the negated penalties, so the usual cross-entropy is the paper's MAP criterion
    (eq. 9) without its rubbish-class term."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.prototypes = self.add_weight(shape=(input_shape[-1], self.units), initializer=_random_signs,
                                          trainable=False, name="prototypes")

    def call(self, inputs):
        w = keras.ops.cast(self.prototypes, inputs.dtype)
        penalties = (keras.ops.sum(keras.ops.square(inputs), axis=-1, keepdims=True)
                     - 2.0 * keras.ops.matmul(inputs, w)
                     + keras.ops.sum(keras.ops.square(w), axis=0))
        return keras.ops.softmax(-penalties, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


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


@keras.saving.register_keras_serializable(package="tltoolkit")
class SubsampleZeroPad(layers.Layer):
    """He et al.'s option-A shortcut: every `strides`-th pixel, with zero channels added up to
    `filters` (no parameters): `before` of them ahead of the input's channels, the rest after."""

    def __init__(self, filters, strides=2, before=0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.before = before

    def call(self, inputs):
        x = inputs[:, ::self.strides, ::self.strides, :]
        extra = self.filters - inputs.shape[-1]
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [self.before, extra - self.before]])

    def compute_output_shape(self, input_shape):
        def sub(d):
            return None if d is None else -(-d // self.strides)
        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides, "before": self.before}


@keras.saving.register_keras_serializable(package="tltoolkit")
class ResidualScale(layers.Layer):
    """`shortcut + scale * residual`: keras.applications' (unexported) CustomScaleLayer."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        shortcut, residual = inputs
        return shortcut + residual * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
