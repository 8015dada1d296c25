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
    ArchSpec,
    Preprocessing,
    Reference,
    TorchLayout,
    checkpoint_weights,
    keras_imagenet_weights,
    register,
    torchvision_checkpoint,
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


def vgg(spec: ArchSpec, include_top: bool = True, num_classes: int = 1000, input_shape=None, pooling=None,
        *, depths: tuple[int, ...], batch_norm: bool = False, dropout: float = 0.0) -> keras.Model:
    """VGG with `depths` convolutions per block (Simonyan & Zisserman 2014, arXiv:1409.1556).

    Options:
      batch_norm: BatchNormalization after every convolution (torchvision's `vgg*_bn`), named
        `blockN_convK_bn`; the convolutions keep their bias.
      dropout: rate of the dropout after fc1 and fc2 (the paper trained with 0.5); 0 adds no layer.
    """
    common.check_pooling(spec, pooling)
    common.check_bool(spec, "batch_norm", batch_norm)
    common.check_rate(spec, "dropout", dropout)
    inputs = common.model_input(spec, input_shape)
    x = inputs
    for block, (convs, filters) in enumerate(zip(depths, WIDTHS), start=1):
        x = vgg_block(x, filters, convs, batch_norm, name=f"block{block}")
    if include_top:
        x = vgg_classifier(x, num_classes, dropout)
    else:
        x = common.pooled_head(x, False, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


def _torch_features(model) -> dict[str, str]:
    """Our conv and BN layers -> their index in torchvision's `features` Sequential (conv, [BN,] ReLU, ..., pool)."""
    index, names = 0, {}
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.BatchNormalization)):
            names[layer.name] = f"features.{index}"
            fused_relu = isinstance(layer, layers.Conv2D) and layer.activation is keras.activations.relu
            index += 2 if fused_relu else 1
        elif isinstance(layer, (layers.Activation, layers.MaxPooling2D)):
            index += 1
    return names


def _layout(model, classifier: dict[str, str]) -> dict[str, list[str]]:
    prefixes = {**_torch_features(model), **classifier}
    layout = {}
    for layer in model.layers:
        if layer.weights:
            suffixes = common.BN_KEYS if isinstance(layer, layers.BatchNormalization) else ("weight", "bias")
            layout[layer.name] = [f"{prefixes[layer.name]}.{suffix}" for suffix in suffixes]
    return layout


def torchvision_layout(model):
    """torchvision's VGG keys: `features.N`, `classifier.{0,3,6}` (Linear layers)."""
    return _layout(model, {"fc1": "classifier.0", "fc2": "classifier.3", "predictions": "classifier.6"})


def timm_layout(model):
    """timm's VGG keys: `features.N`, `pre_logits.fc1` (a 7x7 conv), `pre_logits.fc2` (1x1), `head.fc`."""
    return _layout(model, {"fc1": "pre_logits.fc1", "fc2": "pre_logits.fc2", "predictions": "head.fc"})


TORCH_LAYOUTS = (TorchLayout("torchvision", torchvision_layout, head=("classifier.",)),
                 TorchLayout("timm", timm_layout, head=("pre_logits.", "head.")))


KERAS_LICENCE = "CC BY 4.0 (VGG at Oxford)"  # fchollet/deep-learning-models README


# The family's defaults: a registration says only what differs.
VGGSpec = functools.partial(ArchSpec, family="vgg", stages=STAGES, base_output="block5_pool", penultimate="fc2",
                            default_size=224, min_size=32, preprocessing="torch", paper=PAPER,
                            options=("batch_norm", "dropout"), torch_layouts=TORCH_LAYOUTS)


def _builder(arch_id: str):
    """`vgg` for configuration `vgg16` of `vgg16` and `vgg16_bn` (with BN)."""
    return functools.partial(vgg, depths=DEPTHS[arch_id.split("_")[0]], batch_norm=arch_id.endswith("_bn"))


def _weights(arch_id: str, fname: str, top1: float, keras_files: tuple | None = None) -> dict:
    """torchvision's ImageNet file (tag tv_in1k: timm's of the same weights), after keras.applications'
    where it has one (then the default `imagenet`)."""
    enum = arch_id.upper() + "_Weights"  # VGG11_BN_Weights
    tv = torchvision_checkpoint("tv_in1k", fname, enum, top1)
    if keras_files is None:
        return checkpoint_weights(tv, default="tv_in1k")
    file_hash, notop_hash, keras_top1 = keras_files
    keras_weights = keras_imagenet_weights(arch_id, arch_id, file_hash, notop_hash, keras_top1, licence=KERAS_LICENCE,
                                           preprocessing=Preprocessing("caffe", 224))
    return {**keras_weights, **checkpoint_weights(tv)}


register(VGGSpec(
    id="vgg11", builder=_builder("vgg11"), params=132_863_336, trainable_params=132_863_336, macs=7.6091,
    reference_params=Reference(132_863_336, "trainable", "torchvision vgg.py VGG11_Weights"),
    reference_macs=Reference(7.609, "gmacs", "torchvision vgg.py VGG11_Weights"),
    weights=_weights("vgg11", "vgg11-8a719046.pth", 0.6902),
))
register(VGGSpec(
    # 11.308466 GMACs: 11.3085 would round to 11.309 at the reference's three decimals.
    id="vgg13", builder=_builder("vgg13"), params=133_047_848, trainable_params=133_047_848, macs=11.30847,
    reference_params=Reference(133_047_848, "trainable", "torchvision vgg.py VGG13_Weights"),
    reference_macs=Reference(11.308, "gmacs", "torchvision vgg.py VGG13_Weights"),
    weights=_weights("vgg13", "vgg13-19584684.pth", 0.69928),
))
register(VGGSpec(
    id="vgg16", builder=_builder("vgg16"), params=138_357_544, trainable_params=138_357_544, macs=15.4703,
    preprocessing="caffe",
    reference_params=Reference(138_357_544, "total", "keras.applications VGG16 (keras.io/api/applications)"),
    reference_macs=Reference(15.47, "gmacs", "torchvision vgg.py VGG16_Weights"),
    weights=_weights("vgg16", "vgg16-397923af.pth", 0.71592, ("64373286793e3c8b2b4e3219cbf3544b",
                                                              "6d6bbae143d832006294945121d1f1fc", 0.713)),
    keras_application="VGG16",
))
register(VGGSpec(
    id="vgg19", builder=_builder("vgg19"), params=143_667_240, trainable_params=143_667_240, macs=19.6321,
    preprocessing="caffe",
    reference_params=Reference(143_667_240, "total", "keras.applications VGG19 (keras.io/api/applications)"),
    reference_macs=Reference(19.632, "gmacs", "torchvision vgg.py VGG19_Weights"),
    weights=_weights("vgg19", "vgg19-dcbb9e9d.pth", 0.72376, ("cbe5617147190e668d6c5d5026f83318",
                                                              "253f8cb515780f3b799900260a226db6", 0.713)),
    keras_application="VGG19",
))
# torchvision's vgg*_bn: BN (eps 1e-5) after every conv, the convs keep their bias; the same MACs as without.
# (id, params, trainable params = torchvision's num_params, GMACs, torchvision _ops, file, top-1)
for _id, _params, _trainable, _macs, _ops, _fname, _top1 in (
        ("vgg11_bn", 132_874_344, 132_868_840, 7.6091, 7.609, "vgg11_bn-6002323d.pth", 0.7037),
        ("vgg13_bn", 133_059_624, 133_053_736, 11.30847, 11.308, "vgg13_bn-abd245e5.pth", 0.71586),
        ("vgg16_bn", 138_374_440, 138_365_992, 15.4703, 15.47, "vgg16_bn-6c64b313.pth", 0.7336),
        ("vgg19_bn", 143_689_256, 143_678_248, 19.6321, 19.632, "vgg19_bn-c79401a0.pth", 0.74218)):
    _source = f"torchvision vgg.py {_id.upper()}_Weights"
    register(VGGSpec(id=_id, builder=_builder(_id), params=_params, trainable_params=_trainable, macs=_macs,
                     reference_params=Reference(_trainable, "trainable", _source),
                     reference_macs=Reference(_ops, "gmacs", _source), weights=_weights(_id, _fname, _top1)))
