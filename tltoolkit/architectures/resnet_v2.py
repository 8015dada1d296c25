"""Pre-activation ResNet (He et al. 2016, Identity Mappings), laid out as keras.applications does.

Layer names, weight shapes and their order are those of keras.applications ResNet50V2/101V2/152V2,
so its ImageNet `.h5` files load unchanged. Like keras.applications (and unlike the paper's v1
layout), each stage downsamples in its last block, on the 3x3 convolution, with a
`MaxPooling2D(1, strides=2)` identity shortcut; that pooling layer, auto-named in keras.applications,
is named here `convS_blockB_0_pool` (it carries no weights).
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.registry import ArchSpec, Reference, keras_imagenet_weights, register

PAPER = "He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027"
STOCHASTIC_DEPTH_PAPER = "Huang et al. 2016, Deep Networks with Stochastic Depth, arXiv:1603.09382"
# Bottleneck blocks per stage (conv2..conv5).
BLOCKS = {
    "resnet50v2": (3, 4, 6, 3),
    "resnet101v2": (3, 4, 23, 3),
    "resnet152v2": (3, 8, 36, 3),
}
STAGE_NAMES = ("conv2", "conv3", "conv4", "conv5")
FILTERS = (64, 128, 256, 512)  # bottleneck width; blocks output 4x
LAST_STRIDES = (2, 2, 2, 1)  # stride of each stage's last block
BN_EPSILON = 1.001e-5
STAGES = (("conv1", "conv1_pad"),
          *((stage, f"{stage}_block1_preact_bn") for stage in STAGE_NAMES),
          ("post", "post_bn"))



def _bn(name: str):
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)


def residual_block_v2(x, filters: int, stride: int = 1, conv_shortcut: bool = False,
                      drop_rate: float = 0.0, name: str = ""):
    """Pre-activation bottleneck: BN-ReLU, then 1x1 -> 3x3 (stride) -> 1x1 (4 x filters)."""
    preact = _bn(f"{name}_preact_bn")(x)
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(preact)
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    elif stride > 1:
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_1_conv")(preact)
    y = _bn(f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(y)
    y = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_2_conv")(y)
    y = _bn(f"{name}_2_bn")(y)
    y = layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(y)
    return common.residual_add(shortcut, y, drop_rate, name=f"{name}_out")


def residual_stack_v2(x, filters: int, blocks: int, last_stride: int, drop_rates, name: str):
    """`blocks` blocks: a projection shortcut in the first, the stride in the last."""
    for b in range(1, blocks + 1):
        x = residual_block_v2(
            x, filters,
            stride=last_stride if b == blocks else 1,
            conv_shortcut=b == 1,
            drop_rate=drop_rates[b - 1],
            name=f"{name}_block{b}",
        )
    return x


def resnet_v2(spec: ArchSpec, include_top: bool = True, num_classes: int = 1000, input_shape=None,
              pooling=None, drop_path_rate: float = 0.0) -> keras.Model:
    """Pre-activation ResNet with stages `BLOCKS[spec.id]` (He et al. 2016, arXiv:1603.05027).

    Options:
      drop_path_rate: stochastic depth (Huang et al. 2016, arXiv:1603.09382): the residual branch of
        block l of L is dropped for the whole batch with probability l/L x drop_path_rate while
        training and scaled by its survival probability at inference. The merge layer keeps the
        name of the Add it replaces, so the ImageNet weights still load.
    """
    common.check_pooling(spec, pooling)
    common.check_rate(spec, "drop_path_rate", drop_path_rate)
    blocks = BLOCKS[spec.id]
    rates = common.drop_path_rates(drop_path_rate, sum(blocks))
    inputs = common.model_input(spec, input_shape)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)  # no BN: the first block pre-activates
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    first = 0
    for stage, n, filters, stride in zip(STAGE_NAMES, blocks, FILTERS, LAST_STRIDES):
        x = residual_stack_v2(x, filters, n, stride, rates[first:first + n], name=stage)
        first += n
    x = _bn("post_bn")(x)
    x = layers.Activation("relu", name="post_relu")(x)
    x = common.pooled_head(x, include_top, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


# The family's defaults: a registration says only what differs.
ResNetV2Spec = functools.partial(ArchSpec, family="resnet_v2", builder=resnet_v2, stages=STAGES,
                                 base_output="post_relu", penultimate="avg_pool", default_size=224, min_size=32,
                                 preprocessing="tf", paper=PAPER, options=("drop_path_rate",))
# (id, keras.applications name, params, trainable params, GMACs, file hash, notop hash, top-1)
for _id, _application, _params, _trainable, _macs, _hash, _notop_hash, _top1 in (
        ("resnet50v2", "ResNet50V2", 25_613_800, 25_568_360, 3.4823,
         "3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917", 0.760),
        ("resnet101v2", "ResNet101V2", 44_675_560, 44_577_896, 7.1945,
         "6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5", 0.772),
        ("resnet152v2", "ResNet152V2", 60_380_648, 60_236_904, 10.9067,
         "a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33", 0.780)):
    register(ResNetV2Spec(
        id=_id, params=_params, trainable_params=_trainable, macs=_macs,
        reference_params=Reference(_params, "total", f"keras.applications {_application} (keras.io/api/applications)"),
        weights=keras_imagenet_weights("resnet", _id, _hash, _notop_hash, _top1), keras_application=_application))
