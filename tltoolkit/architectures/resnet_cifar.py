"""ResNets for 32x32 images: He et al.'s CIFAR-10 ResNet-20...110 and Wide ResNet-28-10.

`resnetN_cifar` is the paper's net (option-A shortcuts, no parameters in them), the network of the
public CIFAR-10 checkpoints of akamaster/pytorch_resnet_cifar10; `resnetN_cifar_b` (N = 20, 32, 44,
56) the same with option-B projections, the network of the public CIFAR-10/100 checkpoints of
chenyaofo/pytorch-cifar-models. `wrn28_10_cifar` is the network of RobustBench's "Standard" CIFAR-10
model.

Layer names follow keras.applications' ResNet (`conv3_block2_1_conv`, `conv3_block2_out`), so the
stages are `conv1` (the stem), `conv2`, `conv3`, `conv4` (16, 32 and 64 channels times the width)
and, for the pre-activation WRN, `post` (the final BN-ReLU).

Convolutions have no bias and BatchNormalization uses eps 1e-5 and momentum 0.9, as the Torch code
these results come from. A strided 3x3 convolution pads one pixel on every side (not TensorFlow's
"same", which pads only bottom/right), so its outputs stay centred on the pixels that the strided
shortcut keeps.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.layers import SubsampleZeroPad
from tltoolkit.architectures.resnet import TORCH_LAYOUTS, prefixed_layout, torch_layout
from tltoolkit.architectures.registry import (
    ArchitectureError,
    ArchSpec,
    Checkpoint,
    Preprocessing,
    Reference,
    TorchLayout,
    checkpoint_weights,
    register,
)

RESNET_PAPER = "He, Zhang, Ren & Sun 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385"
WRN_PAPER = "Zagoruyko & Komodakis 2016, Wide Residual Networks, arXiv:1605.07146"
WIDTHS = (16, 32, 64)
STRIDES = (1, 2, 2)  # of each stage's first block
STEM_WIDTH = 16
SHORTCUTS = ("A", "B")


def batch_norm(name: str):
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)


def conv3x3(x, filters: int, strides: int, name: str):
    """`{name}_conv`, 3x3 without bias; strided ones after a symmetric `{name}_pad`."""
    if strides == 1:
        return layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.Conv2D(filters, 3, strides=strides, use_bias=False, name=f"{name}_conv")(x)


def basic_block(x, filters: int, strides: int, shortcut: str | None, drop_rate: float, name: str):
    """He et al.'s basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, the shortcut added, ReLU.

    shortcut: "A" (strided subsample, zero-padded channels) or "B" (1x1 conv-BN projection) where
    the shape changes, identity elsewhere; None: no shortcut (the paper's plain nets).
    Option A puts half the zero channels before the input's and half after, as akamaster's
    checkpoints were trained (the paper does not say where they go).
    """
    if shortcut is None:
        skip = None
    elif strides == 1 and x.shape[-1] == filters:
        skip = x
    elif shortcut == "A":
        skip = SubsampleZeroPad(filters, strides, (filters - x.shape[-1]) // 2, name=f"{name}_0_pad")(x)
    else:
        skip = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_0_conv")(x)
        skip = batch_norm(f"{name}_0_bn")(skip)
    y = conv3x3(x, filters, strides, name=f"{name}_1")
    y = batch_norm(f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = conv3x3(y, filters, 1, name=f"{name}_2")
    y = batch_norm(f"{name}_2_bn")(y)
    if skip is not None:
        y = common.residual_add(skip, y, drop_rate, name=f"{name}_add")
    return layers.Activation("relu", name=f"{name}_out")(y)


def wide_block(x, filters: int, strides: int, dropout: float, drop_rate: float, name: str):
    """Zagoruyko & Komodakis' pre-activation block: BN-ReLU, 3x3 conv, BN-ReLU, [dropout], 3x3
    conv, plus the input, or a 1x1 conv of the pre-activated input where the shape changes."""
    preact = batch_norm(f"{name}_preact_bn")(x)
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(preact)
    if strides == 1 and x.shape[-1] == filters:
        skip = x
    else:
        skip = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_0_conv")(preact)
    y = conv3x3(preact, filters, strides, name=f"{name}_1")
    y = batch_norm(f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = conv3x3(y, filters, 1, name=f"{name}_2")
    return common.residual_add(skip, y, drop_rate, name=f"{name}_out")


def resnet_cifar(spec: ArchSpec, include_top: bool = True, num_classes: int = 10, input_shape=None, pooling=None,
                 *, depth: int, shortcut: str = "A", plain: bool = False, drop_path_rate: float = 0.0) -> keras.Model:
    """ResNet-`depth` for CIFAR-10 (He et al. 2015, arXiv:1512.03385, §4.2).

    A 3x3 conv (16), then three stages of n = (depth - 2) / 6 basic blocks with 16, 32 and 64
    filters on 32, 16 and 8 pixel maps (the first block of conv3 and conv4 strides), global
    average pooling and the classifier.

    Options:
      shortcut: "A" (default, the paper's CIFAR choice: subsample and zero-pad channels, no
        parameters) or "B" (1x1 convolution and BN where the shape changes).
      plain: no shortcuts at all, the plain nets of the paper's Fig. 6 (same parameters as "A").
      drop_path_rate: stochastic depth; block l of L is skipped with probability
        l/L * drop_path_rate while training (tltoolkit StochasticDepth named `..._add`).
    """
    common.check_pooling(spec, pooling)
    if shortcut not in SHORTCUTS:
        raise ArchitectureError(f"{spec.id}: shortcut must be one of {', '.join(SHORTCUTS)}; received {shortcut!r}")
    common.check_bool(spec, "plain", plain)
    common.check_rate(spec, "drop_path_rate", drop_path_rate)
    if plain and (shortcut != "A" or drop_path_rate):
        raise ArchitectureError(f"{spec.id}: a plain net has no shortcuts; drop shortcut/drop_path_rate "
                                f"or plain=True")
    n = (depth - 2) // 6
    rates = common.drop_path_rates(drop_path_rate, n * len(WIDTHS))
    inputs = common.model_input(spec, input_shape)
    x = conv3x3(inputs, STEM_WIDTH, 1, name="conv1")
    x = batch_norm("conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    for stage, (filters, stage_strides) in enumerate(zip(WIDTHS, STRIDES)):
        for block in range(1, n + 1):
            strides = stage_strides if block == 1 else 1
            x = basic_block(x, filters, strides, None if plain else shortcut, rates[stage * n + block - 1],
                            name=f"conv{stage + 2}_block{block}")
    x = common.pooled_head(x, include_top, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


def wide_resnet_cifar(spec: ArchSpec, include_top: bool = True, num_classes: int = 10, input_shape=None,
                      pooling=None, *, depth: int, width: int, dropout: float = 0.0,
                      drop_path_rate: float = 0.0) -> keras.Model:
    """WRN-`depth`-`width` (Zagoruyko & Komodakis 2016, arXiv:1605.07146, Table 1).

    A 3x3 conv (16), three stages of n = (depth - 4) / 6 pre-activation basic blocks of 16, 32 and
    64 times `width` filters, a final BN-ReLU (`post`), global average pooling and the classifier.

    Options:
      dropout: rate of the dropout between each block's two convolutions (the paper uses 0.3).
      drop_path_rate: stochastic depth, as for the CIFAR ResNets.
    """
    common.check_pooling(spec, pooling)
    common.check_rate(spec, "dropout", dropout)
    common.check_rate(spec, "drop_path_rate", drop_path_rate)
    n = (depth - 4) // 6
    rates = common.drop_path_rates(drop_path_rate, n * len(WIDTHS))
    inputs = common.model_input(spec, input_shape)
    x = conv3x3(inputs, STEM_WIDTH, 1, name="conv1")
    for stage, (filters, stage_strides) in enumerate(zip(WIDTHS, STRIDES)):
        for block in range(1, n + 1):
            strides = stage_strides if block == 1 else 1
            x = wide_block(x, filters * width, strides, dropout, rates[stage * n + block - 1],
                           name=f"conv{stage + 2}_block{block}")
    x = batch_norm("post_bn")(x)
    x = layers.Activation("relu", name="post_relu")(x)
    x = common.pooled_head(x, include_top, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


# id: (depth, Keras count_params, trainable, GMACs, Table 6's rounded count)
RESNETS = {
    "resnet20_cifar": (20, 271_098, 269_722, 0.0406, 0.27e6),
    "resnet32_cifar": (32, 466_426, 464_154, 0.0689, 0.46e6),
    "resnet44_cifar": (44, 661_754, 658_586, 0.0972, 0.66e6),
    "resnet56_cifar": (56, 857_082, 853_018, 0.1255, 0.85e6),
    "resnet110_cifar": (110, 1_736_058, 1_727_962, 0.2529, 1.7e6),
}
# The same nets with option-B shortcuts, as torchvision-style CIFAR ResNets build them (the public
# CIFAR-10/100 checkpoints of chenyaofo/pytorch-cifar-models): id: (depth, Keras count_params,
# trainable = the parameter count of that project's CifarResNet, GMACs, its published MAdds).
RESNETS_B = {
    "resnet20_cifar_b": (20, 274_042, 272_474, 0.0408, 0.04081),
    "resnet32_cifar_b": (32, 469_370, 466_906, 0.0691, 0.06912),
    "resnet44_cifar_b": (44, 664_698, 661_338, 0.0974, 0.09744),
    "resnet56_cifar_b": (56, 860_026, 855_770, 0.1257, 0.12575),
}
CIFAR_MODELS = "chenyaofo/pytorch-cifar-models"
CIFAR_RELEASES = f"https://github.com/{CIFAR_MODELS}/releases/download/resnet/"
CIFAR_TAG = "chenyaofo"  # weights="cifar10" / "cifar100" (or "cifar10:chenyaofo")
# depth: {dataset: (release file, top-1 on its test set)}, from that project's README tables. The files
# carry a hash-like suffix, but no hash is published, so a download is checked by converting it.
CIFAR_CHECKPOINTS = {
    20: {"cifar10": ("cifar10_resnet20-4118986f.pt", 0.9260), "cifar100": ("cifar100_resnet20-23dac2f1.pt", 0.6883)},
    32: {"cifar10": ("cifar10_resnet32-ef93fc4d.pt", 0.9353), "cifar100": ("cifar100_resnet32-84213ce6.pt", 0.7016)},
    44: {"cifar10": ("cifar10_resnet44-2a3cabcb.pt", 0.9401), "cifar100": ("cifar100_resnet44-ffe32858.pt", 0.7163)},
    56: {"cifar10": ("cifar10_resnet56-187c023a.pt", 0.9437), "cifar100": ("cifar100_resnet56-f2eff4c8.pt", 0.7263)},
}


def cifar_checkpoint(dataset: str, fname: str, top1: float) -> Checkpoint:
    """One of chenyaofo's release files (BSD-3-Clause): trained and tested on 32x32 images as they are
    (no resize, no crop), normalised by the dataset's mean and std (preprocessing modes cifar10/cifar100)."""
    return Checkpoint(tag=CIFAR_TAG, url=CIFAR_RELEASES + fname, file_hash=None, origin=CIFAR_MODELS,
                      licence="BSD-3-Clause", preprocessing=Preprocessing(dataset, 32, 1.0, "none"), top1=top1,
                      source=f"{CIFAR_MODELS} README, {dataset} top-1", num_classes=int(dataset[5:]),
                      dataset=dataset)


AKAMASTER = "akamaster/pytorch_resnet_cifar10"
AKAMASTER_FILES = f"https://github.com/{AKAMASTER}/raw/master/pretrained_models/"
AKAMASTER_TAG = "akamaster"  # weights="cifar10" (or "cifar10:akamaster")
# depth: (file, CIFAR-10 test error in %), from that project's README table (the files it links there).
# The suffix looks like torch.hub's sha256 prefix, but the README does not say so: checked by converting.
AKAMASTER_CHECKPOINTS = {
    20: ("resnet20-12fca82f.th", 8.27),
    32: ("resnet32-d509ac18.th", 7.37),
    44: ("resnet44-014dd654.th", 6.90),
    56: ("resnet56-4bfd9763.th", 6.61),
    110: ("resnet110-1d1ed7c2.th", 6.32),
}


def akamaster_checkpoint(fname: str, error: float) -> Checkpoint:
    """One of akamaster's files (BSD-2-Clause; a torch.save of {'state_dict' (DataParallel's `module.`
    keys), 'best_prec1', ...}): trained on 32x32 CIFAR-10 images normalised by ImageNet's mean and std
    (its trainer.py), tested on them as they are."""
    return Checkpoint(tag=AKAMASTER_TAG, url=AKAMASTER_FILES + fname, file_hash=None, origin=AKAMASTER,
                      licence="BSD-2-Clause", preprocessing=Preprocessing("torch", 32, 1.0, "none"),
                      top1=round(1 - error / 100, 4), source=f"{AKAMASTER} README, CIFAR-10 test error {error}%",
                      num_classes=10, dataset="cifar10")


def akamaster_layout(model) -> dict[str, list[str]]:
    """Our layer names -> akamaster's ResNet keys: torchvision's (`layer1.0.conv1.weight`), the
    classifier called `linear`."""
    return {layer: [f"linear.{key[3:]}" if key.startswith("fc.") else key for key in keys]
            for layer, keys in torch_layout(model).items()}


# RobustBench's "Standard" CIFAR-10 model (robustbench/model_zoo/cifar10.py: WideResNet(depth=28,
# widen_factor=10), the TRADES WideResNet of model_zoo/architectures/wide_resnet.py): our WRN-28-10,
# fed [0, 1] pixels without normalisation. RobustBench downloads it from Google Drive by id and
# publishes no hash; its weights are MIT-licensed (RobustBench LICENSE).
ROBUSTBENCH = "RobustBench/robustbench"
ROBUSTBENCH_STANDARD = Checkpoint(
    tag="robustbench", url="https://docs.google.com/uc?export=download&confirm=t&id=1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC",
    file_hash=None, origin=ROBUSTBENCH, licence="MIT", preprocessing=Preprocessing("scale", 32, 1.0, "none"),
    top1=0.9478, source=f"{ROBUSTBENCH} model_info/cifar10/Linf/Standard.json clean_acc 94.78",
    num_classes=10, dataset="cifar10", filename="robustbench-cifar10-Standard.pt")
WRN_TOP = {"conv1_conv": "conv1", "post_bn": "bn1", "predictions": "fc"}
WRN_PARTS = {"preact_bn": "bn1", "1_conv": "conv1", "1_bn": "bn2", "2_conv": "conv2", "0_conv": "convShortcut"}


def wrn_layout(model) -> dict[str, list[str]]:
    """Our layer names -> the TRADES/RobustBench WideResNet keys (`block1.layer.0.bn1.weight`, final
    `bn1`, `fc`)."""
    def module(name):
        if name in WRN_TOP:
            return WRN_TOP[name]
        stage, block, part = name.split("_", 2)  # conv3_block2_preact_bn
        return f"block{int(stage[4:]) - 1}.layer.{int(block[5:]) - 1}.{WRN_PARTS[part]}"
    return prefixed_layout(model, module)


# id: (depth, width, Keras count_params, trainable, GMACs, the paper's rounded count). Keras' count exceeds
# the trainable one (= RobustBench's WideResNet's parameters) by BN's moving mean and variance alone.
WIDE_RESNETS = {
    "wrn28_10_cifar": (28, 10, 36_497_146, 36_479_194, 5.2433, 36.5e6),
}


def _stages(pre_activation: bool):
    stages = [("conv1", "conv1_conv")]
    for stage, strides in enumerate(STRIDES, start=2):
        first = "preact_bn" if pre_activation else "1_conv" if strides == 1 else "1_pad"
        stages.append((f"conv{stage}", f"conv{stage}_block1_{first}"))
    if pre_activation:
        stages.append(("post", "post_bn"))
    return tuple(stages)


def _blocks_fields(blocks: int, pre_activation: bool) -> dict:
    """The spec fields the blocks per stage and their kind fix: the stages and the base's last layer."""
    return dict(stages=_stages(pre_activation),
                base_output="post_relu" if pre_activation else f"conv{len(WIDTHS) + 1}_block{blocks}_out")


# The family's defaults: a registration says only what differs.
ResNetCifarSpec = functools.partial(ArchSpec, family="resnet_cifar", penultimate="avg_pool", default_size=32,
                                    min_size=8, preprocessing="torch", num_classes=10)


for _id, (_depth, _params, _trainable, _macs, _published) in RESNETS.items():
    register(ResNetCifarSpec(
        id=_id, builder=functools.partial(resnet_cifar, depth=_depth), **_blocks_fields((_depth - 2) // 6, False),
        params=_params, trainable_params=_trainable, macs=_macs,
        reference_params=Reference(_published, "approx", "He et al. 2015, arXiv:1512.03385, Table 6"),
        paper=RESNET_PAPER, options=("shortcut", "plain", "drop_path_rate"),
        torch_layouts=(TorchLayout("akamaster", akamaster_layout, head=("linear.",)),),
        weights=checkpoint_weights(akamaster_checkpoint(*AKAMASTER_CHECKPOINTS[_depth]), default=AKAMASTER_TAG)))

for _id, (_depth, _params, _trainable, _macs, _madds) in RESNETS_B.items():
    register(ResNetCifarSpec(
        id=_id, builder=functools.partial(resnet_cifar, depth=_depth, shortcut="B"),
        **_blocks_fields((_depth - 2) // 6, False), params=_params, trainable_params=_trainable, macs=_macs,
        reference_params=Reference(_trainable, "trainable",
                                   f"{CIFAR_MODELS} cifar10_resnet{_depth} (CifarResNet) parameters"),
        paper=RESNET_PAPER, options=("drop_path_rate",),
        reference_macs=Reference(_madds, "gmacs", f"{CIFAR_MODELS} README, CIFAR-10 #MAdds"),
        # Its CifarResNet is torchvision's ResNet with a 3x3 stem: the same key names.
        torch_layouts=TORCH_LAYOUTS,
        weights=checkpoint_weights(*(cifar_checkpoint(dataset, *entry)
                                     for dataset, entry in CIFAR_CHECKPOINTS[_depth].items()), default=CIFAR_TAG)))

for _id, (_depth, _width, _params, _trainable, _macs, _published) in WIDE_RESNETS.items():
    register(ResNetCifarSpec(
        id=_id, builder=functools.partial(wide_resnet_cifar, depth=_depth, width=_width),
        **_blocks_fields((_depth - 4) // 6, True), params=_params, trainable_params=_trainable, macs=_macs,
        reference_params=Reference(_published, "approx",
                                   "Zagoruyko & Komodakis 2016, arXiv:1605.07146 (WRN-28-10: 36.5M)"),
        paper=WRN_PAPER, options=("dropout", "drop_path_rate"),
        torch_layouts=(TorchLayout("RobustBench", wrn_layout, head=("fc.",)),),
        weights=checkpoint_weights(ROBUSTBENCH_STANDARD, default="robustbench")))
