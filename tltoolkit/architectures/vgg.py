"""VGG (Simonyan & Zisserman 2014): configurations A, B, D and E, laid out as keras.applications does.

Layer names, weight shapes and their order are those of keras.applications VGG16/VGG19, so its
ImageNet `.h5` files load into `vgg16`/`vgg19` unchanged; `vgg11`/`vgg13` follow the same naming.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.registry import (
    ArchitectureError,
    ArchSpec,
    Reference,
    keras_imagenet_weights,
    get_spec,
    register,
)

PAPER = ("Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image "
         "Recognition, arXiv:1409.1556")
WIDTHS = (64, 128, 256, 512, 512)
# Convolutions per block: the paper's configurations A, B, D and E (Table 1).
DEPTHS = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
FC_UNITS = 4096
STAGES = tuple((f"block{b}", f"block{b}_conv1") for b in range(1, len(WIDTHS) + 1))



def vgg_block(x, filters: int, convs: int, batch_norm: bool, name: str):
    """`convs` 3x3 convolutions (optionally each followed by BN) and a 2x2 max pool."""
    for i in range(1, convs + 1):
        conv = f"{name}_conv{i}"
        if batch_norm:
            # Bias kept and BN eps 1e-5, as torchvision's vgg*_bn (the published BN weights).
            x = layers.Conv2D(filters, 3, padding="same", name=conv)(x)
            x = layers.BatchNormalization(epsilon=1e-5, name=f"{conv}_bn")(x)
            x = layers.Activation("relu", name=f"{conv}_relu")(x)
        else:
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=conv)(x)
    return layers.MaxPooling2D(2, strides=2, name=f"{name}_pool")(x)


def vgg_classifier(x, num_classes: int, dropout: float):
    x = layers.Flatten(name="flatten")(x)
    for fc in ("fc1", "fc2"):
        x = layers.Dense(FC_UNITS, activation="relu", name=fc)(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)


def _is_rate(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


def vgg(arch_id: str, include_top: bool = True, num_classes: int = 1000, input_shape=None,
        pooling=None, batch_norm: bool = False, dropout: float = 0.0) -> keras.Model:
    """VGG of depth `DEPTHS[arch_id]` (Simonyan & Zisserman 2014, arXiv:1409.1556).

    Options:
      batch_norm: BatchNormalization after every convolution (torchvision's `vgg*_bn`), named
        `blockN_convK_bn`; the convolutions keep their bias.
      dropout: rate of the dropout after fc1 and fc2 (the paper trained with 0.5); 0 adds no layer.
    """
    spec = get_spec(arch_id)
    common.check_pooling(spec, pooling)
    if not isinstance(batch_norm, bool):
        raise ArchitectureError(f"{arch_id}: batch_norm must be True or False; received {batch_norm!r}")
    if not _is_rate(dropout):
        raise ArchitectureError(f"{arch_id}: dropout must be a rate in [0, 1); received {dropout!r}")
    inputs = common.model_input(spec, input_shape)
    x = inputs
    for block, (convs, filters) in enumerate(zip(DEPTHS[arch_id], WIDTHS), start=1):
        x = vgg_block(x, filters, convs, batch_norm, name=f"block{block}")
    if include_top:
        x = vgg_classifier(x, num_classes, dropout)
    else:
        x = common.pooled_head(x, False, num_classes, pooling)
    return keras.Model(inputs, x, name=arch_id)


def _register(arch_id: str, params: int, macs: float, reference_params: Reference,
              reference_macs: Reference, weights: dict | None = None,
              keras_application: str | None = None) -> None:
    register(ArchSpec(
        id=arch_id,
        family="vgg",
        builder=functools.partial(vgg, arch_id),
        stages=STAGES,
        base_output="block5_pool",
        penultimate="fc2",
        default_size=224,
        min_size=32,
        preprocessing="caffe",
        params=params,
        trainable_params=params,
        macs=macs,
        reference_params=reference_params,
        reference_macs=reference_macs,
        weights=weights or {},
        keras_application=keras_application,
        paper=PAPER,
        options=("batch_norm", "dropout"),
    ))


def _keras_weights(name: str, file_hash: str, notop_hash: str, top1: float) -> dict:
    return keras_imagenet_weights(name, name, file_hash, notop_hash, top1)


_register(
    "vgg11", params=132_863_336, macs=7.6091,
    reference_params=Reference(132_863_336, "trainable", "torchvision vgg.py VGG11_Weights"),
    reference_macs=Reference(7.609, "gmacs", "torchvision vgg.py VGG11_Weights"),
)
_register(
    # 11.308466 GMACs: 11.3085 would round to 11.309 at the reference's three decimals.
    "vgg13", params=133_047_848, macs=11.30847,
    reference_params=Reference(133_047_848, "trainable", "torchvision vgg.py VGG13_Weights"),
    reference_macs=Reference(11.308, "gmacs", "torchvision vgg.py VGG13_Weights"),
)
_register(
    "vgg16", params=138_357_544, macs=15.4703,
    reference_params=Reference(138_357_544, "total", "keras.applications VGG16 (keras.io/api/applications)"),
    reference_macs=Reference(15.47, "gmacs", "torchvision vgg.py VGG16_Weights"),
    weights=_keras_weights("vgg16", "64373286793e3c8b2b4e3219cbf3544b",
                           "6d6bbae143d832006294945121d1f1fc", top1=0.713),
    keras_application="VGG16",
)
_register(
    "vgg19", params=143_667_240, macs=19.6321,
    reference_params=Reference(143_667_240, "total", "keras.applications VGG19 (keras.io/api/applications)"),
    reference_macs=Reference(19.632, "gmacs", "torchvision vgg.py VGG19_Weights"),
    weights=_keras_weights("vgg19", "cbe5617147190e668d6c5d5026f83318",
                           "253f8cb515780f3b799900260a226db6", top1=0.713),
    keras_application="VGG19",
)
