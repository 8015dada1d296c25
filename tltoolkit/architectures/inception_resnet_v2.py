"""Inception-ResNet-v2 (Szegedy et al. 2016), layer for layer keras.applications.InceptionResNetV2.

Same weight shapes, weighted-layer order (the official legacy `.h5` files load) and layer names,
the unnamed ones as Keras names them in a fresh session (`common.KerasNames`; see inception_v3.py).
"""

from __future__ import annotations

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.layers import ResidualScale
from tltoolkit.architectures.registry import Reference, keras_imagenet_weights, register

def irv2_conv(x, filters, kernel_size, names: common.KerasNames, strides=1, padding="same", name=None,
              activation="relu", use_bias=False):
    """keras.applications' inception_resnet_v2.conv2d_bn: conv, BN without scale unless the conv
    has a bias, activation; named `name`, `{name}_bn`, `{name}_ac` where keras names it."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                      name=names("conv2d", name))(x)
    if not use_bias:
        bn = None if name is None else f"{name}_bn"
        x = layers.BatchNormalization(scale=False, name=names("batch_normalization", bn))(x)
    if activation is not None:
        ac = None if name is None else f"{name}_ac"
        x = layers.Activation(activation, name=names("activation", ac))(x)
    return x


def irv2_residual_block(x, block_type, index, scale, names, activation="relu"):
    """Inception-ResNet-A/B/C (`block35`/`block17`/`block8`, Figures 16-19)."""
    if block_type == "block35":
        branches = [irv2_conv(x, 32, 1, names)]
        branch = irv2_conv(x, 32, 1, names)
        branches.append(irv2_conv(branch, 32, 3, names))
        branch = irv2_conv(x, 32, 1, names)
        branch = irv2_conv(branch, 48, 3, names)
        branches.append(irv2_conv(branch, 64, 3, names))
    elif block_type == "block17":
        branches = [irv2_conv(x, 192, 1, names)]
        branch = irv2_conv(x, 128, 1, names)
        branch = irv2_conv(branch, 160, (1, 7), names)
        branches.append(irv2_conv(branch, 192, (7, 1), names))
    else:  # block8
        branches = [irv2_conv(x, 192, 1, names)]
        branch = irv2_conv(x, 192, 1, names)
        branch = irv2_conv(branch, 224, (1, 3), names)
        branches.append(irv2_conv(branch, 256, (3, 1), names))
    name = f"{block_type}_{index}"
    mixed = layers.Concatenate(name=f"{name}_mixed")(branches)
    up = irv2_conv(mixed, x.shape[-1], 1, names, name=f"{name}_conv", activation=None, use_bias=True)
    x = ResidualScale(scale, name=names("custom_scale_layer"))([x, up])
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_ac")(x)
    return x


def irv2_stem(inputs, names):
    x = irv2_conv(inputs, 32, 3, names, strides=2, padding="valid")
    x = irv2_conv(x, 32, 3, names, padding="valid")
    x = irv2_conv(x, 64, 3, names)
    x = layers.MaxPooling2D(3, strides=2, name=names("max_pooling2d"))(x)
    x = irv2_conv(x, 80, 1, names, padding="valid")
    x = irv2_conv(x, 192, 3, names, padding="valid")
    return layers.MaxPooling2D(3, strides=2, name=names("max_pooling2d"))(x)


def irv2_mixed_5b(x, names):
    """Inception-A block (as in Inception v3) widening the stem to 320 channels."""
    branch0 = irv2_conv(x, 96, 1, names)
    branch1 = irv2_conv(x, 48, 1, names)
    branch1 = irv2_conv(branch1, 64, 5, names)
    branch2 = irv2_conv(x, 64, 1, names)
    branch2 = irv2_conv(branch2, 96, 3, names)
    branch2 = irv2_conv(branch2, 96, 3, names)
    branch_pool = layers.AveragePooling2D(3, strides=1, padding="same", name=names("average_pooling2d"))(x)
    branch_pool = irv2_conv(branch_pool, 64, 1, names)
    return layers.Concatenate(name="mixed_5b")([branch0, branch1, branch2, branch_pool])


def irv2_mixed_6a(x, names):
    """Reduction-A (Figure 7, k=256, l=256, m=384, n=384)."""
    branch0 = irv2_conv(x, 384, 3, names, strides=2, padding="valid")
    branch1 = irv2_conv(x, 256, 1, names)
    branch1 = irv2_conv(branch1, 256, 3, names)
    branch1 = irv2_conv(branch1, 384, 3, names, strides=2, padding="valid")
    branch_pool = layers.MaxPooling2D(3, strides=2, name=names("max_pooling2d"))(x)
    return layers.Concatenate(name="mixed_6a")([branch0, branch1, branch_pool])


def irv2_mixed_7a(x, names):
    """Reduction-B (Figure 18)."""
    branch0 = irv2_conv(x, 256, 1, names)
    branch0 = irv2_conv(branch0, 384, 3, names, strides=2, padding="valid")
    branch1 = irv2_conv(x, 256, 1, names)
    branch1 = irv2_conv(branch1, 288, 3, names, strides=2, padding="valid")
    branch2 = irv2_conv(x, 256, 1, names)
    branch2 = irv2_conv(branch2, 288, 3, names)
    branch2 = irv2_conv(branch2, 320, 3, names, strides=2, padding="valid")
    branch_pool = layers.MaxPooling2D(3, strides=2, name=names("max_pooling2d"))(x)
    return layers.Concatenate(name="mixed_7a")([branch0, branch1, branch2, branch_pool])


# (stage, how to build it, first layer of the stage in model.layers); residual stages are
# (block type, repeats, residual scale) as keras.applications has them.
INCEPTION_RESNET_V2_STAGES = (
    ("mixed_5b", irv2_mixed_5b, "conv2d_8"),
    ("block35", ("block35", 10, 0.17), "conv2d_15"),
    ("mixed_6a", irv2_mixed_6a, "conv2d_73"),
    ("block17", ("block17", 20, 0.1), "conv2d_77"),
    ("mixed_7a", irv2_mixed_7a, "conv2d_160"),
    ("block8", ("block8", 10, 0.2), "conv2d_164"),
)


def inception_resnet_v2(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None):
    """Inception-ResNet-v2 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of
    Residual Connections on Learning", arXiv:1602.07261), layer for layer
    keras.applications.InceptionResNetV2."""
    common.check_pooling(spec, pooling)
    inputs = common.model_input(spec, input_shape)
    names = common.KerasNames()
    x = irv2_stem(inputs, names)
    for _, stage, _ in INCEPTION_RESNET_V2_STAGES:
        if callable(stage):
            x = stage(x, names)
            continue
        block_type, repeats, scale = stage
        for index in range(1, repeats + 1):
            last = block_type == "block8" and index == repeats
            # keras' final block8 is linear: scale 1 and no activation before conv_7b.
            x = irv2_residual_block(x, block_type, index, 1.0 if last else scale, names,
                                    activation=None if last else "relu")
    x = irv2_conv(x, 1536, 1, names, name="conv_7b")
    x = common.pooled_head(x, include_top, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


register(common.InceptionSpec(
    id="inception_resnet_v2",
    builder=inception_resnet_v2,
    stages=(("stem", "conv2d"),) + tuple((name, first) for name, _, first in INCEPTION_RESNET_V2_STAGES)
    + (("conv_7b", "conv_7b"),),
    base_output="conv_7b_ac",
    params=55_873_736,
    trainable_params=55_813_192,
    macs=13.1558,
    reference_params=Reference(55_873_736, "total", "keras.io/api/applications (InceptionResNetV2)"),
    reference_macs=Reference(13.2, "gmacs", "timm inception_resnet_v2.tf_in1k model card"),
    weights=keras_imagenet_weights("inception_resnet_v2", "inception_resnet_v2", "e693bd0210a403b3192acc6073ad2e96",
                                   "d19885ff4a710c122648d3b5c3b684e4", top1=0.803, ),
    keras_application="InceptionResNetV2",
    paper=common.SZEGEDY_2016,
))
