"""Inception v3 (Szegedy et al. 2015), layer for layer keras.applications.InceptionV3.

Same weight shapes, same topological order of weighted layers (so the official legacy `.h5` files
load), and the same layer names. keras.applications leaves most of its layers unnamed, so their
names come from Keras' per-session counters (`conv2d_8`, `activation_93`); ours carry exactly the
names Keras gives them in a fresh session, but set explicitly (`common.KerasNames`), so they do not
depend on what else the session has built.
"""

from __future__ import annotations

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.registry import ArchitectureError, Reference, keras_imagenet_weights, register

SZEGEDY_2015 = ("Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision, "
                "arXiv:1512.00567")

def v3_conv(x, filters, kernel_size, names: common.KerasNames, strides=1, padding="same"):
    """keras.applications' inception_v3.conv2d_bn: conv without bias, BN without scale, ReLU."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                      name=names("conv2d"))(x)
    x = layers.BatchNormalization(scale=False, name=names("batch_normalization"))(x)
    return layers.Activation("relu", name=names("activation"))(x)


def v3_avg_pool(x, names):
    return layers.AveragePooling2D(3, strides=1, padding="same", name=names("average_pooling2d"))(x)


def v3_max_pool(x, names):
    return layers.MaxPooling2D(3, strides=2, name=names("max_pooling2d"))(x)


def v3_block35(x, pool_filters, name, names):
    """35x35 block (Figure 5 of the paper)."""
    branch1x1 = v3_conv(x, 64, 1, names)
    branch5x5 = v3_conv(x, 48, 1, names)
    branch5x5 = v3_conv(branch5x5, 64, 5, names)
    branch3x3dbl = v3_conv(x, 64, 1, names)
    branch3x3dbl = v3_conv(branch3x3dbl, 96, 3, names)
    branch3x3dbl = v3_conv(branch3x3dbl, 96, 3, names)
    branch_pool = v3_conv(v3_avg_pool(x, names), pool_filters, 1, names)
    return layers.Concatenate(name=name)([branch1x1, branch5x5, branch3x3dbl, branch_pool])


def v3_reduction35(x, name, names):
    """35x35 -> 17x17 grid reduction (Figure 10)."""
    branch3x3 = v3_conv(x, 384, 3, names, strides=2, padding="valid")
    branch3x3dbl = v3_conv(x, 64, 1, names)
    branch3x3dbl = v3_conv(branch3x3dbl, 96, 3, names)
    branch3x3dbl = v3_conv(branch3x3dbl, 96, 3, names, strides=2, padding="valid")
    branch_pool = v3_max_pool(x, names)
    return layers.Concatenate(name=name)([branch3x3, branch3x3dbl, branch_pool])


def v3_block17(x, width, name, names):
    """17x17 block with factorized 7x7 convolutions (Figure 6); `width` is the inner 7x7 width."""
    branch1x1 = v3_conv(x, 192, 1, names)
    branch7x7 = v3_conv(x, width, 1, names)
    branch7x7 = v3_conv(branch7x7, width, (1, 7), names)
    branch7x7 = v3_conv(branch7x7, 192, (7, 1), names)
    branch7x7dbl = v3_conv(x, width, 1, names)
    branch7x7dbl = v3_conv(branch7x7dbl, width, (7, 1), names)
    branch7x7dbl = v3_conv(branch7x7dbl, width, (1, 7), names)
    branch7x7dbl = v3_conv(branch7x7dbl, width, (7, 1), names)
    branch7x7dbl = v3_conv(branch7x7dbl, 192, (1, 7), names)
    branch_pool = v3_conv(v3_avg_pool(x, names), 192, 1, names)
    return layers.Concatenate(name=name)([branch1x1, branch7x7, branch7x7dbl, branch_pool])


def v3_reduction17(x, name, names):
    """17x17 -> 8x8 grid reduction."""
    branch3x3 = v3_conv(x, 192, 1, names)
    branch3x3 = v3_conv(branch3x3, 320, 3, names, strides=2, padding="valid")
    branch7x7x3 = v3_conv(x, 192, 1, names)
    branch7x7x3 = v3_conv(branch7x7x3, 192, (1, 7), names)
    branch7x7x3 = v3_conv(branch7x7x3, 192, (7, 1), names)
    branch7x7x3 = v3_conv(branch7x7x3, 192, 3, names, strides=2, padding="valid")
    branch_pool = v3_max_pool(x, names)
    return layers.Concatenate(name=name)([branch3x3, branch7x7x3, branch_pool])


def v3_block8(x, index, name, names):
    """8x8 block with expanded filter banks (Figure 7); `index` numbers keras' inner `mixed9_{i}`."""
    branch1x1 = v3_conv(x, 320, 1, names)
    branch3x3 = v3_conv(x, 384, 1, names)
    branch3x3 = layers.Concatenate(name=f"mixed9_{index}")(
        [v3_conv(branch3x3, 384, (1, 3), names), v3_conv(branch3x3, 384, (3, 1), names)])
    branch3x3dbl = v3_conv(x, 448, 1, names)
    branch3x3dbl = v3_conv(branch3x3dbl, 384, 3, names)
    branch3x3dbl = layers.Concatenate(name=names("concatenate"))(
        [v3_conv(branch3x3dbl, 384, (1, 3), names), v3_conv(branch3x3dbl, 384, (3, 1), names)])
    branch_pool = v3_conv(v3_avg_pool(x, names), 192, 1, names)
    return layers.Concatenate(name=name)([branch1x1, branch3x3, branch3x3dbl, branch_pool])


# (block = stage name, builder, arguments, first layer of the stage in model.layers)
INCEPTION_V3_BLOCKS = (
    ("mixed0", v3_block35, (32,), "conv2d_8"),
    ("mixed1", v3_block35, (64,), "conv2d_15"),
    ("mixed2", v3_block35, (64,), "conv2d_22"),
    ("mixed3", v3_reduction35, (), "conv2d_27"),
    ("mixed4", v3_block17, (128,), "conv2d_34"),
    ("mixed5", v3_block17, (160,), "conv2d_44"),
    ("mixed6", v3_block17, (160,), "conv2d_54"),
    ("mixed7", v3_block17, (192,), "conv2d_64"),
    ("mixed8", v3_reduction17, (), "conv2d_72"),
    ("mixed9", v3_block8, (0,), "conv2d_80"),
    ("mixed10", v3_block8, (1,), "conv2d_89"),
)
V3_AUX_AFTER = "mixed7"
V3_AUX_MIN_SIZE = 299  # the aux head's 5x5 valid conv needs the full 17x17 grid


def v3_stem(inputs, names):
    x = v3_conv(inputs, 32, 3, names, strides=2, padding="valid")
    x = v3_conv(x, 32, 3, names, padding="valid")
    x = v3_conv(x, 64, 3, names)
    x = v3_max_pool(x, names)
    x = v3_conv(x, 80, 1, names, padding="valid")
    x = v3_conv(x, 192, 3, names, padding="valid")
    return v3_max_pool(x, names)


def v3_aux(x, num_classes):
    """The auxiliary classifier on the 17x17 grid (paper section 4; torchvision's InceptionAux)."""
    x = layers.AveragePooling2D(5, strides=3, name="aux_pool")(x)
    for i, (filters, size) in enumerate(((128, 1), (768, 5))):
        x = layers.Conv2D(filters, size, use_bias=False, name=f"aux_{i}_conv")(x)
        x = layers.BatchNormalization(scale=False, name=f"aux_{i}_bn")(x)
        x = layers.Activation("relu", name=f"aux_{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="aux_avg_pool")(x)
    return layers.Dense(num_classes, activation="softmax", name="aux_predictions")(x)


def inception_v3(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, aux_logits=False):
    """Inception v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer
    Vision", arXiv:1512.00567), layer for layer keras.applications.InceptionV3.

    aux_logits: add the paper's auxiliary classifier on the 17x17 grid (after mixed7); the model
      then has two outputs [main, aux], for training. Needs include_top and an input of at least
      299x299. keras.applications has no aux head, so its ImageNet weights load only without it.
    """
    common.check_pooling(spec, pooling)
    common.check_aux_logits(spec, aux_logits, include_top)
    inputs = common.model_input(spec, input_shape)
    if aux_logits and any(d is not None and d < V3_AUX_MIN_SIZE for d in inputs.shape[1:3]):
        raise ArchitectureError(f"{spec.id}: aux_logits needs an input of at least {V3_AUX_MIN_SIZE}x"
                                f"{V3_AUX_MIN_SIZE}; received {tuple(inputs.shape[1:])}")
    names = common.KerasNames()
    x = v3_stem(inputs, names)
    aux = []
    for name, block, args, _ in INCEPTION_V3_BLOCKS:
        x = block(x, *args, name, names)
        if aux_logits and name == V3_AUX_AFTER:
            aux.append(v3_aux(x, num_classes))
    x = common.pooled_head(x, include_top, num_classes, pooling)
    return keras.Model(inputs, [x, *aux] if aux else x, name=spec.id)


register(common.InceptionSpec(
    id="inception_v3",
    builder=inception_v3,
    stages=(("stem", "conv2d"),) + tuple((name, first) for name, _, _, first in INCEPTION_V3_BLOCKS),
    base_output="mixed10",
    params=23_851_784,
    trainable_params=23_817_352,
    macs=5.7132,
    reference_params=Reference(23_851_784, "total", "keras.io/api/applications (InceptionV3)"),
    reference_macs=Reference(5.713, "gmacs", "torchvision Inception_V3_Weights.IMAGENET1K_V1 GFLOPS"),
    weights=keras_imagenet_weights("inception_v3", "inception_v3", "9a0d58056eeedaa3f26cb7ebd46da564",
                                   "bcbd6486424b2319ff4ef7d526e38f63", top1=0.779, ),
    keras_application="InceptionV3",
    paper=SZEGEDY_2015,
    options=("aux_logits",),
))
