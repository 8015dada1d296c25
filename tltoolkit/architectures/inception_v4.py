"""Inception-v4 (Szegedy et al. 2016): TF-slim's model as timm ports it.

timm's parameter count, TF-slim's scope names in lower case (`mixed_5b`, ...); timm's ImageNet
checkpoint (TF-slim's weights) loads into it.
"""

from __future__ import annotations

import collections

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.registry import Reference, TorchLayout, checkpoint_weights, register, timm_checkpoint

def v4_conv(x, filters, kernel_size, strides=1, padding="same", *, name):
    """timm's conv: no bias, BN (eps 1e-3), ReLU.

    The BN has a scale, as in timm (whose 42.7M parameters count it); TF-slim's has none, and its
    checkpoints load with the scales at one.
    """
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


Conv = collections.namedtuple("Conv", "filters kernel_size strides padding", defaults=(1, "same"))


def v4_branches(x, branches, name):
    """TF-slim's Branch_0, Branch_1, ... concatenated in order. A branch is a tuple of Convs, maybe
    after a 3x3 "avg" pool (stride 1), or "max": a 3x3 stride-2 max pool alone."""
    outputs = []
    for b, branch in enumerate(branches):
        if branch == "max":
            outputs.append(layers.MaxPooling2D(3, strides=2, name=f"{name}_branch{b}_pool")(x))
            continue
        y = x
        if branch[0] == "avg":
            y = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_branch{b}_pool")(y)
            branch = branch[1:]
        for i, conv in enumerate(branch):
            y = v4_conv(y, *conv, name=f"{name}_branch{b}_{i}")
        outputs.append(y)
    return layers.Concatenate(name=name)(outputs)


def v4_block_c(x, name):
    """Inception-C (Figure 6): two branches split into parallel 1x3 and 3x1 convs."""
    branch0 = v4_conv(x, 256, 1, name=f"{name}_branch0_0")
    branch1 = v4_conv(x, 384, 1, name=f"{name}_branch1_0")
    branch1a = v4_conv(branch1, 256, (1, 3), name=f"{name}_branch1_1a")
    branch1b = v4_conv(branch1, 256, (3, 1), name=f"{name}_branch1_1b")
    branch2 = v4_conv(x, 384, 1, name=f"{name}_branch2_0")
    branch2 = v4_conv(branch2, 448, (3, 1), name=f"{name}_branch2_1")
    branch2 = v4_conv(branch2, 512, (1, 3), name=f"{name}_branch2_2")
    branch2a = v4_conv(branch2, 256, (1, 3), name=f"{name}_branch2_3a")
    branch2b = v4_conv(branch2, 256, (3, 1), name=f"{name}_branch2_3b")
    branch3 = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_branch3_pool")(x)
    branch3 = v4_conv(branch3, 256, 1, name=f"{name}_branch3_1")
    return layers.Concatenate(name=name)([branch0, branch1a, branch1b, branch2a, branch2b, branch3])


V4_STEM = (  # Figure 3; TF-slim's Conv2d_1a..Mixed_5a
    ("mixed_3a", ("max", (Conv(96, 3, 2, "valid"),))),
    ("mixed_4a", ((Conv(64, 1), Conv(96, 3, 1, "valid")),
                  (Conv(64, 1), Conv(64, (1, 7)), Conv(64, (7, 1)), Conv(96, 3, 1, "valid")))),
    ("mixed_5a", ((Conv(192, 3, 2, "valid"),), "max")),
)
V4_BLOCK_A = ((Conv(96, 1),), (Conv(64, 1), Conv(96, 3)), (Conv(64, 1), Conv(96, 3), Conv(96, 3)),
              ("avg", Conv(96, 1)))
V4_REDUCTION_A = ((Conv(384, 3, 2, "valid"),), (Conv(192, 1), Conv(224, 3), Conv(256, 3, 2, "valid")), "max")
V4_BLOCK_B = ((Conv(384, 1),), (Conv(192, 1), Conv(224, (1, 7)), Conv(256, (7, 1))),
              (Conv(192, 1), Conv(192, (7, 1)), Conv(224, (1, 7)), Conv(224, (7, 1)), Conv(256, (1, 7))),
              ("avg", Conv(128, 1)))
V4_REDUCTION_B = ((Conv(192, 1), Conv(192, 3, 2, "valid")),
                  (Conv(256, 1), Conv(256, (1, 7)), Conv(320, (7, 1)), Conv(320, 3, 2, "valid")), "max")

# Stages: (stage, its blocks as (TF-slim block name, branches or v4_block_c)). The stage's first
# layer is its first block's first conv of the longest branch, where Keras puts it in model.layers.
INCEPTION_V4_STAGES = (
    ("inception_a", tuple((f"mixed_5{c}", V4_BLOCK_A) for c in "bcde"), "mixed_5b_branch2_0_conv"),
    ("reduction_a", (("mixed_6a", V4_REDUCTION_A),), "mixed_6a_branch1_0_conv"),
    ("inception_b", tuple((f"mixed_6{c}", V4_BLOCK_B) for c in "bcdefgh"), "mixed_6b_branch2_0_conv"),
    ("reduction_b", (("mixed_7a", V4_REDUCTION_B),), "mixed_7a_branch1_0_conv"),
    ("inception_c", tuple((f"mixed_7{c}", v4_block_c) for c in "bcd"), "mixed_7b_branch2_0_conv"),
)


def inception_v4(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None):
    """Inception-v4 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
    Connections on Learning", arXiv:1602.07261): stem, 4x Inception-A, Reduction-A, 7x Inception-B,
    Reduction-B, 3x Inception-C, dropout 0.2, classifier; TF-slim's model as timm ports it."""
    common.check_pooling(spec, pooling)
    inputs = common.model_input(spec, input_shape)
    x = v4_conv(inputs, 32, 3, strides=2, padding="valid", name="stem_conv1")
    x = v4_conv(x, 32, 3, padding="valid", name="stem_conv2")
    x = v4_conv(x, 64, 3, name="stem_conv3")
    for name, branches in V4_STEM:
        x = v4_branches(x, branches, name)
    for _, blocks, _ in INCEPTION_V4_STAGES:
        for name, block in blocks:
            x = block(x, name) if callable(block) else v4_branches(x, block, name)
    x = common.pooled_head(x, include_top, num_classes, pooling, dropout=0.2)
    return keras.Model(inputs, x, name=spec.id)


# PyTorch checkpoints (checkpoints.py): our layer names -> timm's Inception-v4 keys.

V4_C_PARTS = ("1_0", "1_1a", "1_1b", "2_0", "2_1", "2_2", "2_3a", "2_3b")  # timm's names for them too


def v4_torch_modules() -> dict[str, str]:
    """Our conv-BN names (`mixed_6b_branch1_2`) -> timm's modules (`features.11.branch1.2`):
    `features` holds the stem convs and then the blocks in order; a branch of one conv is the conv
    itself, a pooled branch is (pool, conv), and a block with one conv branch calls it `conv`."""
    modules = {f"stem_conv{i}": f"features.{i - 1}" for i in (1, 2, 3)}
    blocks = [*V4_STEM, *(block for _, stage_blocks, _ in INCEPTION_V4_STAGES for block in stage_blocks)]
    for index, (name, branches) in enumerate(blocks, start=len(modules)):
        module = f"features.{index}"
        if callable(branches):  # Inception-C
            modules.update({f"{name}_branch{part}": f"{module}.branch{part}" for part in V4_C_PARTS})
            modules.update({f"{name}_branch0_0": f"{module}.branch0", f"{name}_branch3_1": f"{module}.branch3.1"})
            continue
        convs = [(b, branch) for b, branch in enumerate(branches) if branch != "max"]
        for b, branch in convs:
            if branch[0] == "avg":
                modules[f"{name}_branch{b}_0"] = f"{module}.branch{b}.1"
            elif len(convs) == 1:
                modules[f"{name}_branch{b}_0"] = f"{module}.conv"
            elif len(branch) == 1:
                modules[f"{name}_branch{b}_0"] = f"{module}.branch{b}"
            else:
                modules.update({f"{name}_branch{b}_{i}": f"{module}.branch{b}.{i}" for i in range(len(branch))})
    return modules


def inception_v4_torch_layout(model) -> dict[str, list[str]]:
    modules = v4_torch_modules()
    layout = {}
    for layer in model.layers:
        if layer.name == "predictions":
            layout[layer.name] = ["last_linear.weight", "last_linear.bias"]
        elif layer.weights:
            module, kind = layer.name.rsplit("_", 1)
            if module in modules:
                layout[layer.name] = common.basic_conv_keys(modules[module], kind)
    return layout


register(common.InceptionSpec(
    id="inception_v4",
    builder=inception_v4,
    stages=(("stem", "stem_conv1_conv"),) + tuple((name, first) for name, _, first in INCEPTION_V4_STAGES),
    base_output="mixed_7d",
    params=42_742_984,
    trainable_params=42_679_816,
    macs=12.2540,
    # timm's count of its own network (BN statistics are buffers there); its model card rounds it to 42.7M.
    reference_params=Reference(42_679_816, "trainable", "timm 1.0.31 inception_v4 (create_model) num parameters"),
    reference_macs=Reference(12.3, "gmacs", "timm inception_v4.tf_in1k model card"),
    paper=common.SZEGEDY_2016,
    # TF-slim's weights as timm ports them; its pretrained_cfg: Inception preprocessing (x/127.5 - 1) at 299,
    # crop 0.875, bicubic.
    weights=checkpoint_weights(timm_checkpoint("inception_v4", "tf_in1k", 0.80156, crop_fraction=0.875, test_size=299,
                                               mode="tf", input_size=299), default="tf_in1k"),
    torch_layouts=(TorchLayout("timm", inception_v4_torch_layout, head=("last_linear.",)),),
))
