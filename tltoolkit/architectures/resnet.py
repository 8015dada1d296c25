"""ResNet v1 and its direct descendants: ResNeXt, Wide ResNet, SE-ResNet.

One family builder, `resnet`, driven by the depth table of He et al. 2015 (Table 1), builds every
variant; the public builders only say which depth, which weights lineage and which widths.

Three lineages build the same architecture slightly differently, and each must be copied exactly
for its weights to mean anything:
  * `KERAS`: keras.applications ResNet50/101/152 (He et al.'s Caffe models): every conv has a bias,
    the stride sits on the bottleneck's first 1x1 conv, BN epsilon 1.001e-5. Layer names, weight
    shapes and weighted-layer order equal keras.applications, so its `.h5` files load unchanged.
  * `TORCHVISION`: torchvision's ResNet ("v1.5"): no conv biases, the stride on the 3x3 conv,
    BN epsilon 1e-5. resnet18/34, ResNeXt and Wide ResNet follow it (their references are
    torchvision's counts).
  * `SENET_CAFFE`: SENet's Caffe models: no conv biases, the stride on the 1x1 conv, BN epsilon 1e-5,
    and Caffe's unpadded 3x3/2 `pool1` rounding up (torch's ceil_mode, as timm's legacy SENet port keeps
    it), whose windows start a pixel later than the padded pool of the others.

Layer names follow keras.applications everywhere: `conv1_{pad,conv,bn,relu}`, `pool1_{pad,pool}`,
`convS_blockB_{0_conv,0_bn,1_conv,1_bn,1_relu,2_conv,...,add,out}`; a strided conv wider than 1x1
is preceded by an explicit `..._pad` (torchvision's symmetric padding, which Keras' "same" is not).
"""

from __future__ import annotations

import dataclasses
import functools

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.registry import (
    ArchitectureError,
    ArchSpec,
    Checkpoint,
    Reference,
    Preprocessing,
    TIMM_LICENCE,
    TorchLayout,
    checkpoint_weights,
    keras_imagenet_weights,
    timm_checkpoint,
    torchvision_checkpoint,
    register,
)

FAMILY = "resnet"
OPTIONS = ("groups", "width_per_group", "se_ratio", "drop_path_rate")

STAGES = ("conv2", "conv3", "conv4", "conv5")
STAGE_FILTERS = (64, 128, 256, 512)  # "planes": a bottleneck block outputs 4x this
EXPANSION = {"basic": 1, "bottleneck": 4}
FIRST_KERNEL = {"basic": 3, "bottleneck": 1}  # kernel of a block's first conv, `_1_conv`

# depth -> (block kind, blocks per stage conv2..conv5); He et al. 2015, Table 1.
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


@dataclasses.dataclass(frozen=True)
class Convention:
    """How one weights lineage builds the architecture (see the module docstring)."""

    conv_bias: bool
    stride_on_3x3: bool
    bn_epsilon: float
    caffe_pool: bool = False


KERAS = Convention(conv_bias=True, stride_on_3x3=False, bn_epsilon=1.001e-5)
TORCHVISION = Convention(conv_bias=False, stride_on_3x3=True, bn_epsilon=1e-5)
SENET_CAFFE = Convention(conv_bias=False, stride_on_3x3=False, bn_epsilon=1e-5, caffe_pool=True)



def _keras_weights(name: str, file_hash: str, notop_hash: str, top1: float) -> dict:
    return keras_imagenet_weights("resnet", name, file_hash, notop_hash, top1, licence=KERAS_LICENCE,
                                  preprocessing=KERAS_PREPROCESSING)


def _padded(kernel_size: int, stride: int) -> bool:
    return kernel_size > 1 and stride > 1


def _block_stride(stage_index: int, block: int) -> int:
    """conv2 keeps the pooled resolution; conv3..conv5 halve it in their first block."""
    return 2 if block == 1 and stage_index > 0 else 1


def conv_bn(x, filters, kernel_size, stride=1, groups=1, relu=True, convention=KERAS, name=None):
    """Conv -> BN [-> ReLU], named `{name}_conv`, `{name}_bn`, `{name}_relu`."""
    if _padded(kernel_size, stride):
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, groups=groups,
                      use_bias=convention.conv_bias, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=convention.bn_epsilon, name=f"{name}_bn")(x)
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def squeeze_excite(x, ratio, name=None):
    """Channel gating of Hu et al. 2018: global pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid -> scale."""
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
    s = layers.Conv2D(max(1, int(channels * ratio)), 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se_excite")([x, s])


def _shortcut(x, filters, stride, convention, name):
    if stride == 1 and x.shape[-1] == filters:
        return x
    return conv_bn(x, filters, 1, stride, relu=False, convention=convention, name=f"{name}_0")


def _merge(shortcut, residual, se_ratio, drop_rate, name):
    if se_ratio:
        residual = squeeze_excite(residual, se_ratio, name=name)
    x = common.residual_add(shortcut, residual, drop_rate, name=f"{name}_add")
    return layers.Activation("relu", name=f"{name}_out")(x)


def basic_block(x, filters, stride=1, se_ratio=0.0, drop_rate=0.0, convention=TORCHVISION, name=None):
    """Two 3x3 convs (ResNet-18/34)."""
    shortcut = _shortcut(x, filters, stride, convention, name)
    y = conv_bn(x, filters, 3, stride, convention=convention, name=f"{name}_1")
    y = conv_bn(y, filters, 3, relu=False, convention=convention, name=f"{name}_2")
    return _merge(shortcut, y, se_ratio, drop_rate, name)


def bottleneck_block(x, filters, stride=1, groups=1, width_per_group=64, se_ratio=0.0, drop_rate=0.0,
                     convention=KERAS, name=None):
    """1x1 reduce -> 3x3 (grouped for ResNeXt) -> 1x1 expand to 4 x filters."""
    width = int(filters * width_per_group / 64) * groups
    stride_1, stride_2 = (1, stride) if convention.stride_on_3x3 else (stride, 1)
    shortcut = _shortcut(x, 4 * filters, stride, convention, name)
    y = conv_bn(x, width, 1, stride_1, convention=convention, name=f"{name}_1")
    y = conv_bn(y, width, 3, stride_2, groups=groups, convention=convention, name=f"{name}_2")
    y = conv_bn(y, 4 * filters, 1, relu=False, convention=convention, name=f"{name}_3")
    return _merge(shortcut, y, se_ratio, drop_rate, name)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def _check_options(spec, kind, groups, width_per_group, se_ratio, drop_path_rate):
    for option, value in (("groups", groups), ("width_per_group", width_per_group)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArchitectureError(f"{spec.id}: {option} must be a positive integer; received {value!r}")
    if kind == "basic" and (groups, width_per_group) != (1, 64):
        raise ArchitectureError(
            f"{spec.id}: basic blocks take no groups/width_per_group; received groups={groups}, "
            f"width_per_group={width_per_group}; use a bottleneck depth (resnet50 and deeper)"
        )
    if not _is_number(se_ratio) or not 0 <= se_ratio <= 1:
        raise ArchitectureError(
            f"{spec.id}: se_ratio must be in [0, 1] (0: no SE; Hu et al. use 1/16); received {se_ratio!r}"
        )
    common.check_rate(spec, "drop_path_rate", drop_path_rate)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resnet(spec, depth, convention, include_top=True, num_classes=1000, input_shape=None, pooling=None,
           groups=1, width_per_group=64, se_ratio=0.0, drop_path_rate=0.0) -> keras.Model:
    """The ResNet v1 family builder (He et al. 2015, arXiv:1512.03385).

    Args:
      spec: the registry's spec: the model's name and what its input is checked against.
      depth: a key of `DEPTHS`.
      convention: `KERAS`, `TORCHVISION` or `SENET_CAFFE` (see the module docstring).
      groups, width_per_group: the bottleneck's 3x3 conv has `filters * width_per_group / 64 * groups`
        channels in `groups` groups (ResNeXt: 32 x 4; Wide ResNet-50-2: 1 x 128).
      se_ratio: squeeze-and-excitation on every block's residual, reducing channels by this ratio
        (Hu et al. 2018 use 1/16); 0 for none.
      drop_path_rate: stochastic depth (Huang et al. 2016, arXiv:1603.09382): block l of L drops its
        residual branch with probability drop_path_rate * l / L during training, and scales it by
        the survival probability at inference.
    """
    kind, blocks_per_stage = DEPTHS[depth]
    common.check_pooling(spec, pooling)
    _check_options(spec, kind, groups, width_per_group, se_ratio, drop_path_rate)
    block = BLOCKS[kind]
    widths = dict(groups=groups, width_per_group=width_per_group) if kind == "bottleneck" else {}
    total_blocks = sum(blocks_per_stage)

    inputs = common.model_input(spec, input_shape)
    x = conv_bn(inputs, 64, 7, 2, convention=convention, name="conv1")
    if convention.caffe_pool:
        x = common.max_pool(x, caffe=True, name="pool1_pool")
    else:
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    index = 0
    for stage_index, (stage, filters, blocks) in enumerate(zip(STAGES, STAGE_FILTERS, blocks_per_stage)):
        for b in range(1, blocks + 1):
            index += 1
            x = block(x, filters, stride=_block_stride(stage_index, b), se_ratio=se_ratio,
                      drop_rate=drop_path_rate * index / total_blocks, convention=convention,
                      name=f"{stage}_block{b}", **widths)
    outputs = common.pooled_head(x, include_top, num_classes, pooling)
    return keras.Model(inputs, outputs, name=spec.id)


def _stages(depth: int) -> tuple[tuple[str, str], ...]:
    """(stage, first layer): a stage starts with its first block's main path (longer than the shortcut)."""
    kind, _ = DEPTHS[depth]
    stages = [("conv1", "conv1_pad")]
    for stage_index, stage in enumerate(STAGES):
        first = "pad" if _padded(FIRST_KERNEL[kind], _block_stride(stage_index, 1)) else "conv"
        stages.append((stage, f"{stage}_block1_1_{first}"))
    return tuple(stages)


def resnet18(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNet-18 (He et al. 2015, arXiv:1512.03385), as torchvision builds it."""
    return resnet(spec, 18, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def resnet34(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNet-34 (He et al. 2015, arXiv:1512.03385), as torchvision builds it."""
    return resnet(spec, 34, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def resnet50(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNet-50 (He et al. 2015, arXiv:1512.03385), layer for layer keras.applications.ResNet50."""
    return resnet(spec, 50, KERAS, include_top, num_classes, input_shape, pooling, **options)


def resnet101(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNet-101 (He et al. 2015, arXiv:1512.03385), layer for layer keras.applications.ResNet101."""
    return resnet(spec, 101, KERAS, include_top, num_classes, input_shape, pooling, **options)


def resnet152(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNet-152 (He et al. 2015, arXiv:1512.03385), layer for layer keras.applications.ResNet152."""
    return resnet(spec, 152, KERAS, include_top, num_classes, input_shape, pooling, **options)


def resnet50_v1_5(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNet-50 v1.5 (He et al. 2015, arXiv:1512.03385) as torchvision and timm build it: no conv biases,
    the stride on the 3x3 conv. Their ImageNet checkpoints (`resnet50.tv_in1k`, `a1_in1k`, ...) fit it."""
    return resnet(spec, 50, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def resnet101_v1_5(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNet-101 v1.5 (He et al. 2015, arXiv:1512.03385) as torchvision and timm build it (see resnet50_v1_5)."""
    return resnet(spec, 101, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def resnet152_v1_5(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNet-152 v1.5 (He et al. 2015, arXiv:1512.03385) as torchvision and timm build it (see resnet50_v1_5)."""
    return resnet(spec, 152, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def resnext50_32x4d(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNeXt-50 32x4d (Xie et al. 2017, arXiv:1611.05431), as torchvision builds it."""
    options = {"groups": 32, "width_per_group": 4, **options}
    return resnet(spec, 50, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def resnext101_32x8d(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """ResNeXt-101 32x8d (Xie et al. 2017, arXiv:1611.05431), as torchvision builds it."""
    options = {"groups": 32, "width_per_group": 8, **options}
    return resnet(spec, 101, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def wide_resnet50_2(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """Wide ResNet-50-2 (Zagoruyko & Komodakis 2016, arXiv:1605.07146), as torchvision builds it.

    ResNet-50 with every bottleneck's inner width doubled.
    """
    options = {"width_per_group": 128, **options}
    return resnet(spec, 50, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def wide_resnet101_2(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """Wide ResNet-101-2 (Zagoruyko & Komodakis 2016, arXiv:1605.07146), as torchvision builds it.

    ResNet-101 with every bottleneck's inner width doubled.
    """
    options = {"width_per_group": 128, **options}
    return resnet(spec, 101, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


def se_resnet50(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """SE-ResNet-50 (Hu et al. 2018, Squeeze-and-Excitation Networks, arXiv:1709.01507), as SENet's Caffe models.

    ResNet-50 with a squeeze-and-excitation gate (reduction r = 16) on every residual branch, the stride
    on each bottleneck's first 1x1 conv and Caffe's unpadded, rounded-up pool1: the network of timm's
    `legacy_seresnet50` (Cadene's port of the Caffe weights), whose checkpoint it takes.
    """
    options = {"se_ratio": 1 / 16, **options}
    return resnet(spec, 50, SENET_CAFFE, include_top, num_classes, input_shape, pooling, **options)


TORCH_BLOCK_PARTS = {"0_conv": "downsample.0", "0_bn": "downsample.1", "se_reduce": "se.fc1", "se_expand": "se.fc2",
                     **{f"{i}_{kind}": f"{kind}{i}" for i in (1, 2, 3) for kind in ("conv", "bn")}}


def prefixed_layout(model, prefix_of) -> dict[str, list[str]]:
    """{layer name: torch keys} for each weighted layer of `model`: the torch module `prefix_of(name)`'s
    tensors, BatchNorm's four for a `_bn` layer, else weight (and bias)."""
    layout = {}
    for layer in model.layers:
        if layer.weights:
            suffixes = common.BN_KEYS if layer.name.endswith("_bn") else ("weight", "bias")
            layout[layer.name] = [f"{prefix_of(layer.name)}.{suffix}" for suffix in suffixes[:len(layer.weights)]]
    return layout


def _torch_module(name: str) -> str:
    if name in ("conv1_conv", "conv1_bn"):
        return "conv1" if name == "conv1_conv" else "bn1"
    if name == "predictions":
        return "fc"
    stage, block, part = name.split("_", 2)  # conv3_block2_1_conv
    return f"layer{int(stage[4:]) - 1}.{int(block[5:]) - 1}.{TORCH_BLOCK_PARTS[part]}"


def torch_layout(model) -> dict[str, list[str]]:
    """Our layer names -> timm's / torchvision's ResNet keys (`layer1.0.conv1.weight`, `fc.bias`, ...)."""
    return prefixed_layout(model, _torch_module)


TORCH_LAYOUTS = (TorchLayout("timm/torchvision", torch_layout, head=("fc.",)),)
# timm's legacy SENet (Cadene's port of SENet's Caffe models) names the same tensors differently.
LEGACY_SENET_NAMES = (("conv1.", "layer0.conv1."), ("bn1.", "layer0.bn1."), ("fc.", "last_linear."))


def legacy_senet_layout(model) -> dict[str, list[str]]:
    """Our layer names -> timm's `legacy_seresnet50` keys: torchvision's, with the stem in `layer0`,
    `se_module` for `se` and `last_linear` for `fc`."""
    def rename(key):
        key = key.replace(".se.", ".se_module.")
        return next((new + key[len(old):] for old, new in LEGACY_SENET_NAMES if key.startswith(old)), key)
    return {layer: [rename(key) for key in keys] for layer, keys in torch_layout(model).items()}


def se_resnet50_v1_5(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, **options):
    """SE-ResNet-50 (Hu et al. 2018, arXiv:1709.01507) as timm's `seresnet50` builds it: ResNet-50 v1.5
    (the stride on the 3x3 conv) with the same SE gates (r = 16, biased 1x1 convs). The same parameters
    as `se_resnet50`, which strides the 1x1 conv as SENet's Caffe models do; timm's checkpoints need this one."""
    options = {"se_ratio": 1 / 16, **options}
    return resnet(spec, 50, TORCHVISION, include_top, num_classes, input_shape, pooling, **options)


HE_2015 = "He et al. 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385"
XIE_2017 = "Xie et al. 2017, Aggregated Residual Transformations for Deep Neural Networks (ResNeXt), arXiv:1611.05431"
ZAGORUYKO_2016 = "Zagoruyko & Komodakis 2016, Wide Residual Networks, arXiv:1605.07146"
HU_2018 = "Hu et al. 2018, Squeeze-and-Excitation Networks, arXiv:1709.01507"
KERAS_MACS = "keras.applications measured; He et al. 2015 Table 1: 3.8/7.6/11.3"


# The family's defaults: a registration says only what differs.
ResNetSpec = functools.partial(ArchSpec, family=FAMILY, penultimate="avg_pool", default_size=224, min_size=32,
                               options=OPTIONS)


def _depth_fields(depth: int) -> dict:
    """The spec fields a depth fixes: the stages and the last block's output."""
    return dict(stages=_stages(depth), base_output=f"{STAGES[-1]}_block{DEPTHS[depth][1][-1]}_out")


def _torchvision(arch_id, builder, depth, *, params, trainable_params, macs, num_params, ops, weights_enum, paper,
                 tv, tv2=None, timm=None):
    """A torchvision-built variant and its checkpoints: tv/tv2 (file name, top-1) of torchvision's
    IMAGENET1K_V1 (the default `imagenet`; evaluated after resizing to 256) and V2 (resized to 232);
    timm (model, tag, top-1, crop fraction) of a timm-trained file."""
    source = f"torchvision {weights_enum}.IMAGENET1K_V1 meta"
    entries = [torchvision_checkpoint("tv_in1k", tv[0], weights_enum, tv[1])]
    if tv2:
        entries.append(torchvision_checkpoint("tv2_in1k", tv2[0], weights_enum, tv2[1], resize=232))
    if timm:
        model, tag, top1, crop = timm
        entries.append(timm_checkpoint(model, tag, top1, crop_fraction=crop))
    register(ResNetSpec(id=arch_id, builder=builder, **_depth_fields(depth), params=params,
                        trainable_params=trainable_params, macs=macs,
                        reference_params=Reference(num_params, "trainable", f"{source} num_params"),
                        reference_macs=Reference(ops, "gmacs", f"{source} _ops"), preprocessing="torch", paper=paper,
                        weights=checkpoint_weights(*entries, default="tv_in1k"), torch_layouts=TORCH_LAYOUTS))


# ImageNet checkpoints. tv_in1k/tv2_in1k: torchvision's files (IMAGENET1K_V1/V2; timm's tags of the same
# weights); the others: timm's own training recipes (a1 = "ResNet strikes back", Wightman et al. 2021,
# arXiv:2110.00476), top-1 from timm's results table at its test size (288px, crop 1.0 or 0.95).
KERAS_LICENCE = "MIT (Kaiming He's Caffe models)"  # fchollet/deep-learning-models README
KERAS_PREPROCESSING = Preprocessing("caffe", 224)

_torchvision("resnet18", resnet18, 18, params=11_699_112, trainable_params=11_689_512, macs=1.8141,
             num_params=11_689_512, ops=1.814, weights_enum="ResNet18_Weights", paper=HE_2015,
             tv=("resnet18-f37072fd.pth", 0.69758),
             timm=("resnet18", "a1_in1k", 0.73158, 0.95))
_torchvision("resnet34", resnet34, 34, params=21_814_696, trainable_params=21_797_672, macs=3.6638,
             num_params=21_797_672, ops=3.664, weights_enum="ResNet34_Weights", paper=HE_2015,
             tv=("resnet34-b627a593.pth", 0.73314),
             timm=("resnet34", "a1_in1k", 0.77918, 0.95))
# keras.applications' ResNet50/101/152: (builder, depth, params, trainable params, GMACs, file hash, notop hash, top-1)
for _builder, _depth, _params, _trainable, _macs, _hash, _notop_hash, _top1 in (
        (resnet50, 50, 25_636_712, 25_583_592, 3.8580,
         "2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626", 0.749),
        (resnet101, 101, 44_707_176, 44_601_832, 7.5702,
         "f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21", 0.764),
        (resnet152, 152, 60_419_944, 60_268_520, 11.2824,
         "100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c", 0.766)):
    register(ResNetSpec(
        id=f"resnet{_depth}", builder=_builder, **_depth_fields(_depth), params=_params, trainable_params=_trainable,
        macs=_macs, preprocessing="caffe", paper=HE_2015, keras_application=f"ResNet{_depth}",
        reference_params=Reference(_params, "total", f"keras.applications ResNet{_depth} (keras.io applications table)"),
        reference_macs=Reference(round(_macs, 3), "gmacs", KERAS_MACS),
        weights=_keras_weights(f"resnet{_depth}", _hash, _notop_hash, top1=_top1)))
# (builder, depth, params, trainable = torchvision's num_params, GMACs, torchvision _ops, V1 and V2 files with
# their top-1, timm's a1_in1k top-1)
for _builder, _depth, _params, _trainable, _macs, _ops, _tv, _tv2, _a1 in (
        (resnet50_v1_5, 50, 25_610_152, 25_557_032, 4.0892, 4.089,
         ("resnet50-0676ba61.pth", 0.7613), ("resnet50-11ad3fa6.pth", 0.80858), 0.81214),
        (resnet101_v1_5, 101, 44_654_504, 44_549_160, 7.8014, 7.801,
         ("resnet101-63fe2227.pth", 0.77374), ("resnet101-cd907fc2.pth", 0.81886), 0.82322),
        (resnet152_v1_5, 152, 60_344_232, 60_192_808, 11.5136, 11.514,
         ("resnet152-394f9c45.pth", 0.78312), ("resnet152-f82ba261.pth", 0.82284), 0.82732)):
    _torchvision(f"resnet{_depth}_v1_5", _builder, _depth, params=_params, trainable_params=_trainable, macs=_macs,
                 num_params=_trainable, ops=_ops, weights_enum=f"ResNet{_depth}_Weights", paper=HE_2015,
                 tv=_tv, tv2=_tv2, timm=(f"resnet{_depth}", "a1_in1k", _a1, 0.95))
_torchvision("resnext50_32x4d", resnext50_32x4d, 50, params=25_097_128, trainable_params=25_028_904, macs=4.2305,
             num_params=25_028_904, ops=4.23, weights_enum="ResNeXt50_32X4D_Weights", paper=XIE_2017,
             tv=("resnext50_32x4d-7cdf4587.pth", 0.77618), tv2=("resnext50_32x4d-1a0047aa.pth", 0.81198),
             timm=("resnext50_32x4d", "a1h_in1k", 0.82014, 0.95))
_torchvision("resnext101_32x8d", resnext101_32x8d, 101, params=88_994_216, trainable_params=88_791_336, macs=16.4140,
             num_params=88_791_336, ops=16.414, weights_enum="ResNeXt101_32X8D_Weights", paper=XIE_2017,
             tv=("resnext101_32x8d-8ba56ff5.pth", 0.79312), tv2=("resnext101_32x8d-110c445d.pth", 0.82834))
_torchvision("wide_resnet50_2", wide_resnet50_2, 50, params=68_951_464, trainable_params=68_883_240, macs=11.3980,
             num_params=68_883_240, ops=11.398, weights_enum="Wide_ResNet50_2_Weights", paper=ZAGORUYKO_2016,
             tv=("wide_resnet50_2-95faca4d.pth", 0.78468), tv2=("wide_resnet50_2-9ba9bcbe.pth", 0.81602),
             timm=("wide_resnet50_2", "racm_in1k", 0.8228, 0.875))
_torchvision("wide_resnet101_2", wide_resnet101_2, 101, params=127_024_552, trainable_params=126_886_696, macs=22.7531,
             num_params=126_886_696, ops=22.753, weights_enum="Wide_ResNet101_2_Weights", paper=ZAGORUYKO_2016,
             tv=("wide_resnet101_2-32ee1156.pth", 0.78848), tv2=("wide_resnet101_2-d733dc28.pth", 0.8251))
register(ResNetSpec(
    id="se_resnet50", builder=se_resnet50, **_depth_fields(50),
    params=28_141_144, trainable_params=28_088_024, macs=3.8605,
    reference_params=Reference(28_088_024, "trainable", "timm legacy_seresnet50 (SENet's Caffe model as "
                                                        "Cadene ports it; timm.create_model, parameters counted)"),
    # Hu et al. 2018 Table 2 gives 3.87: it also counts the SE pooling and scaling (+0.011 G), which
    # count_macs leaves out, as it does BN and pooling everywhere.
    reference_macs=Reference(3.8605, "gmacs", "reference/architectures.md derived rebuild (same counter); "
                                               "Hu et al. 2018 Table 2: 3.87 with SE pooling and scaling"),
    preprocessing="torch", paper=HU_2018,
    torch_layouts=(TorchLayout("timm legacy SENet", legacy_senet_layout, head=("last_linear.",)),),
    # Cadene's port of SENet's Caffe weights, as timm's legacy_seresnet50.in1k pretrained_cfg publishes it
    # (a GitHub release .pth, not on the Hub): crop 0.875, bilinear, ImageNet mean/std on RGB.
    weights=checkpoint_weights(Checkpoint(
        tag="in1k", url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-cadene/"
                        "se_resnet50-ce0d4300.pth",
        file_hash=None, origin="timm", licence=TIMM_LICENCE, preprocessing=Preprocessing("torch", 224, 0.875, "bilinear"),
        top1=0.77636, source="Cadene/pretrained-models.pytorch README, Accuracy on validation set: SE-ResNet50, "
                             "Our porting, Acc@1 77.636 (the Caffe original: 77.63)"), default="in1k")))
register(ResNetSpec(
    id="se_resnet50_v1_5", builder=se_resnet50_v1_5, **_depth_fields(50),
    params=28_141_144, trainable_params=28_088_024, macs=4.0917,
    reference_params=Reference(28_088_024, "trainable", "timm seresnet50 (timm.create_model, parameters counted)"),
    reference_macs=None, preprocessing="torch", paper=HU_2018, torch_layouts=TORCH_LAYOUTS,
    weights=checkpoint_weights(
        timm_checkpoint("seresnet50", "ra2_in1k", 0.81284, crop_fraction=0.875),
        timm_checkpoint("seresnet50", "a1_in1k", 0.81102, crop_fraction=0.95), default="ra2_in1k")))
