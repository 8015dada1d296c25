"""DenseNet-BC (Huang et al. 2017) for ImageNet, laid out as keras.applications does.

Layer names (Keras 3 underscores), weight shapes and their order are those of keras.applications
DenseNet121/169/201, so its ImageNet `.h5` files load unchanged. The stem's two ZeroPadding2D layers,
auto-named in keras.applications, are named here (`conv1_pad`, `pool1_pad`): they carry no weights.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.registry import (
    ArchitectureError,
    ArchSpec,
    Preprocessing,
    Reference,
    TorchLayout,
    checkpoint_weights,
    keras_imagenet_weights,
    register,
    timm_checkpoint,
    torchvision_checkpoint,
)

PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks, arXiv:1608.06993"
# Dense layers per dense block (conv2..conv5), the paper's Table 1.
BLOCKS = {
    "densenet121": (6, 12, 24, 16),
    "densenet169": (6, 12, 32, 32),
    "densenet201": (6, 12, 48, 32),
}
DENSE_BLOCK_NAMES = ("conv2", "conv3", "conv4", "conv5")
TRANSITION_NAMES = ("pool2", "pool3", "pool4")  # after conv2, conv3, conv4
COMPRESSION = 0.5  # the "C" of DenseNet-BC
BN_EPSILON = 1.001e-5


def _stages() -> tuple[tuple[str, str], ...]:
    stages = [("conv1", "conv1_pad")]
    for i, block in enumerate(DENSE_BLOCK_NAMES):
        stages.append((block, f"{block}_block1_0_bn"))
        if i < len(TRANSITION_NAMES):
            stages.append((TRANSITION_NAMES[i], f"{TRANSITION_NAMES[i]}_bn"))
    stages.append(("post", "bn"))
    return tuple(stages)


STAGES = _stages()



def _bn(name: str):
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)


def dense_layer(x, growth_rate: int, name: str):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k), concatenated to its input."""
    y = _bn(f"{name}_0_bn")(x)
    y = layers.Activation("relu", name=f"{name}_0_relu")(y)
    y = layers.Conv2D(4 * growth_rate, 1, use_bias=False, name=f"{name}_1_conv")(y)
    y = _bn(f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def dense_block(x, num_layers: int, growth_rate: int, name: str):
    for i in range(1, num_layers + 1):
        x = dense_layer(x, growth_rate, name=f"{name}_block{i}")
    return x


def transition(x, name: str):
    """BN-ReLU-Conv1x1 halving the channels, then 2x2 average pooling."""
    x = _bn(f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.Conv2D(int(x.shape[-1] * COMPRESSION), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def densenet(spec: ArchSpec, include_top: bool = True, num_classes: int = 1000, input_shape=None,
             pooling=None, growth_rate: int = 32) -> keras.Model:
    """DenseNet-BC with dense blocks `BLOCKS[spec.id]` (Huang et al. 2017, arXiv:1608.06993).

    Options:
      growth_rate: k, the channels each dense layer adds (the paper's ImageNet models use 32); the
        stem has 2k filters and each bottleneck 4k, as in the paper.
    """
    common.check_pooling(spec, pooling)
    if isinstance(growth_rate, bool) or not isinstance(growth_rate, int) or growth_rate < 1:
        raise ArchitectureError(f"{spec.id}: growth_rate must be a positive integer; received {growth_rate!r}")
    inputs = common.model_input(spec, input_shape)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(2 * growth_rate, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = _bn("conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for i, (block, num_layers) in enumerate(zip(DENSE_BLOCK_NAMES, BLOCKS[spec.id])):
        x = dense_block(x, num_layers, growth_rate, name=block)
        if i < len(TRANSITION_NAMES):
            x = transition(x, name=TRANSITION_NAMES[i])
    x = _bn("bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = common.pooled_head(x, include_top, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


LAYER_PARTS = {"0_bn": "norm1", "1_conv": "conv1", "1_bn": "norm2", "2_conv": "conv2"}


def torch_layout(model, legacy: bool = False) -> dict[str, list[str]]:
    """Our layer names -> timm's / torchvision's DenseNet keys (`features.denseblock1.denselayer1.norm1.weight`).
    `legacy`: torchvision's pre-2018 files name a dense layer's parts `norm.1`, `conv.1`, ... (torchvision
    renames them on load)."""
    layout = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        name = layer.name
        if name in ("conv1_conv", "conv1_bn", "bn"):
            prefix = {"conv1_conv": "features.conv0", "conv1_bn": "features.norm0", "bn": "features.norm5"}[name]
        elif name == "predictions":
            prefix = "classifier"
        elif name.startswith("pool"):  # pool2_bn: the transition after dense block 1
            prefix = f"features.transition{int(name[4]) - 1}.{'norm' if name.endswith('_bn') else 'conv'}"
        else:  # conv3_block2_1_conv
            block, dense_layer, part = name.split("_", 2)
            part = LAYER_PARTS[part]
            if legacy:
                part = f"{part[:-1]}.{part[-1]}"
            prefix = f"features.denseblock{int(block[4]) - 1}.denselayer{int(dense_layer[5:])}.{part}"
        suffixes = common.BN_KEYS if name.endswith("bn") else ("weight", "bias")
        layout[name] = [f"{prefix}.{suffix}" for suffix in suffixes[:len(layer.weights)]]
    return layout


TORCH_LAYOUTS = (TorchLayout("timm/torchvision", torch_layout, head=("classifier.",)),
                 TorchLayout("torchvision (legacy names)", functools.partial(torch_layout, legacy=True),
                             head=("classifier.",)))


# The family's defaults: a registration says only what differs.
DenseNetSpec = functools.partial(ArchSpec, family="densenet", builder=densenet, stages=STAGES, base_output="relu",
                                 penultimate="avg_pool", default_size=224, min_size=32, preprocessing="torch",
                                 paper=PAPER, options=("growth_rate",), torch_layouts=TORCH_LAYOUTS)


def _weights(arch_id: str, file_hash: str, notop_hash: str, top1: float, checkpoints: tuple) -> dict:
    """keras.applications' ImageNet file (the default `imagenet`), then the torch checkpoints."""
    return {**keras_imagenet_weights("densenet", arch_id, file_hash, notop_hash, top1,
                                     preprocessing=Preprocessing("torch", 224)),
            **checkpoint_weights(*checkpoints)}


def _tv(arch_id: str, fname: str, top1: float):
    return torchvision_checkpoint("tv_in1k", fname, f"DenseNet{arch_id[8:]}_Weights", top1)


register(DenseNetSpec(
    id="densenet121", params=8_062_504, trainable_params=7_978_856, macs=2.8342,
    reference_params=Reference(8_062_504, "total", "keras.applications DenseNet121 (keras.io/api/applications)"),
    reference_macs=Reference(2.834, "gmacs", "torchvision densenet.py DenseNet121_Weights"),
    weights=_weights("densenet121", "9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738", 0.750,
                     (_tv("densenet121", "densenet121-a639ec97.pth", 0.74434),
                      timm_checkpoint("densenet121", "ra_in1k", 0.765, crop_fraction=0.875))),
    keras_application="DenseNet121",
))
register(DenseNetSpec(
    id="densenet169", params=14_307_880, trainable_params=14_149_480, macs=3.3598,
    reference_params=Reference(14_307_880, "total", "keras.applications DenseNet169 (keras.io/api/applications)"),
    reference_macs=Reference(3.36, "gmacs", "torchvision densenet.py DenseNet169_Weights"),
    weights=_weights("densenet169", "d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b", 0.762,
                     (_tv("densenet169", "densenet169-b2777c0a.pth", 0.756),)),
    keras_application="DenseNet169",
))
register(DenseNetSpec(
    id="densenet201", params=20_242_984, trainable_params=20_013_928, macs=4.2914,
    reference_params=Reference(20_242_984, "total", "keras.applications DenseNet201 (keras.io/api/applications)"),
    reference_macs=Reference(4.291, "gmacs", "torchvision densenet.py DenseNet201_Weights"),
    weights=_weights("densenet201", "1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1", 0.773,
                     (_tv("densenet201", "densenet201-c1103571.pth", 0.76896),)),
    keras_application="DenseNet201",
))
