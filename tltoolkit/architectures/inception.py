"""The Inception family: GoogLeNet, Inception v3, Inception-v4 and Inception-ResNet-v2.

`inception_v3` and `inception_resnet_v2` are keras.applications' InceptionV3 and InceptionResNetV2
layer for layer: same weight shapes, same topological order of weighted layers (so the official
legacy `.h5` files load), and the same layer names. keras.applications leaves most of their layers
unnamed, so their names come from Keras' per-session counters (`conv2d_8`, `activation_93`); ours
carry exactly the names Keras gives them in a fresh session, but set explicitly, so they do not
depend on what else the session has built.

`googlenet` follows torchvision's layout (BN after every conv, a 3x3 conv where the paper has the
5x5, a 2x2 `pool4`), whose parameter count it reproduces; `inception_v4` is TF-slim's model as timm
ports it (timm's parameter count), with TF-slim's scope names in lower case (`mixed_5b`, ...).
"""

from __future__ import annotations

import collections

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.classic import max_pool
from tltoolkit.architectures.registry import (
    ArchitectureError,
    ArchSpec,
    Reference,
    TorchLayout,
    checkpoint_weights,
    keras_imagenet_weights,
    get_spec,
    register,
    timm_checkpoint,
    torchvision_checkpoint,
)

SZEGEDY_2014 = "Szegedy et al. 2014, Going Deeper with Convolutions, arXiv:1409.4842"
SZEGEDY_2015 = ("Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision, "
                "arXiv:1512.00567")
SZEGEDY_2016 = ("Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact of Residual "
                "Connections on Learning, arXiv:1602.07261")


def _begin(arch_id: str, include_top: bool, pooling, aux_logits: bool = False):
    spec = get_spec(arch_id)
    common.check_pooling(spec, pooling)
    if aux_logits and not include_top:
        raise ArchitectureError(
            f"{arch_id}: aux_logits=True needs include_top=True; received include_top=False")
    return spec


class KerasNames:
    """Hands out the names Keras gives unnamed layers in a fresh session: `conv2d`, `conv2d_1`, ...

    One instance per model build, so the names do not depend on the session's global counters.
    """

    def __init__(self):
        self._used = collections.Counter()

    def __call__(self, prefix: str, name: str | None = None) -> str:
        if name is not None:  # keras.applications named this layer itself
            return name
        n = self._used[prefix]
        self._used[prefix] += 1
        return prefix if n == 0 else f"{prefix}_{n}"


# ---------------------------------------------------------------------------------------------
# GoogLeNet (torchvision layout)

# Widths per block as in Table 1 of the paper: 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj.
GOOGLENET_BLOCKS = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)
# Max pools closing a stage (as pool1/pool2 close conv1/conv2): torchvision's pool4 is 2x2.
GOOGLENET_POOLS = {"inception3b": ("pool3", 3), "inception4e": ("pool4", 2)}
GOOGLENET_AUX = {"inception4a": "aux1", "inception4d": "aux2"}
# The first of a block's layers in model.layers (Keras orders layers by depth: the longest branch first).
GOOGLENET_FIRST = "_branch2_0_conv"


def googlenet_conv(x, filters, kernel_size, name, strides=1, padding="same"):
    """torchvision's BasicConv2d: conv without bias, BN (eps 1e-3), ReLU."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def googlenet_block(x, widths, name):
    c1, c3_reduce, c3, c5_reduce, c5, pool_proj = widths
    branch1 = googlenet_conv(x, c1, 1, f"{name}_branch1")
    branch2 = googlenet_conv(x, c3_reduce, 1, f"{name}_branch2_0")
    branch2 = googlenet_conv(branch2, c3, 3, f"{name}_branch2_1")
    branch3 = googlenet_conv(x, c5_reduce, 1, f"{name}_branch3_0")
    # torchvision's known deviation from the paper: 3x3 here, not 5x5; its parameter count has it.
    branch3 = googlenet_conv(branch3, c5, 3, f"{name}_branch3_1")
    branch4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_branch4_pool")(x)
    branch4 = googlenet_conv(branch4, pool_proj, 1, f"{name}_branch4_1")
    return layers.Concatenate(name=name)([branch1, branch2, branch3, branch4])


def googlenet_aux(x, num_classes, name):
    """torchvision's InceptionAux: adaptive 4x4 average pool, 1x1 conv, fc 1024, dropout 0.7, fc."""
    x = layers.AdaptiveAveragePooling2D(4, name=f"{name}_pool")(x)
    x = googlenet_conv(x, 128, 1, name)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name=f"{name}_predictions")(x)


def googlenet(include_top=True, num_classes=1000, input_shape=None, pooling=None, aux_logits=False):
    """GoogLeNet (Szegedy et al. 2014, "Going Deeper with Convolutions", arXiv:1409.4842).

    torchvision's layout: BN after every conv, the "5x5" branch as a 3x3 conv, and its ceil_mode
    max pools (the output size rounds up), so any input size gives torchvision's feature maps.
    Stages: conv1 (conv1 + pool1), conv2 (conv2, conv3, pool2), then one stage per inception block;
    pool3 and pool4 close the stages inception3b and inception4e.

    aux_logits: add the two auxiliary classifiers (after inception4a and inception4d); the model
      then has three outputs [main, aux1, aux2], for training. Needs include_top. Their layers sit
      between the base's layers in model.layers, so stage ranges include them.
    """
    spec = _begin("googlenet", include_top, pooling, aux_logits)
    inputs = common.model_input(spec, input_shape)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = googlenet_conv(x, 64, 7, "conv1", strides=2, padding="valid")
    x = max_pool(x, caffe=True, name="pool1")
    x = googlenet_conv(x, 64, 1, "conv2")
    x = googlenet_conv(x, 192, 3, "conv3")
    x = max_pool(x, caffe=True, name="pool2")
    aux = []
    for name, widths in GOOGLENET_BLOCKS:
        x = googlenet_block(x, widths, name)
        if aux_logits and name in GOOGLENET_AUX:
            aux.append(googlenet_aux(x, num_classes, GOOGLENET_AUX[name]))
        if name in GOOGLENET_POOLS:
            pool_name, size = GOOGLENET_POOLS[name]
            x = max_pool(x, caffe=True, name=pool_name, size=size)
    x = common.pooled_head(x, include_top, num_classes, pooling, dropout=0.2)
    return keras.Model(inputs, [x, *aux] if aux else x, name=spec.id)


# ---------------------------------------------------------------------------------------------
# Inception v3 (keras.applications.InceptionV3)

def v3_conv(x, filters, kernel_size, names: KerasNames, strides=1, padding="same"):
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


def inception_v3(include_top=True, num_classes=1000, input_shape=None, pooling=None, aux_logits=False):
    """Inception v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer
    Vision", arXiv:1512.00567), layer for layer keras.applications.InceptionV3.

    aux_logits: add the paper's auxiliary classifier on the 17x17 grid (after mixed7); the model
      then has two outputs [main, aux], for training. Needs include_top and an input of at least
      299x299. keras.applications has no aux head, so its ImageNet weights load only without it.
    """
    spec = _begin("inception_v3", include_top, pooling, aux_logits)
    inputs = common.model_input(spec, input_shape)
    if aux_logits and any(d is not None and d < V3_AUX_MIN_SIZE for d in inputs.shape[1:3]):
        raise ArchitectureError(f"inception_v3: aux_logits needs an input of at least {V3_AUX_MIN_SIZE}x"
                                f"{V3_AUX_MIN_SIZE}; received {tuple(inputs.shape[1:])}")
    names = KerasNames()
    x = v3_stem(inputs, names)
    aux = []
    for name, block, args, _ in INCEPTION_V3_BLOCKS:
        x = block(x, *args, name, names)
        if aux_logits and name == V3_AUX_AFTER:
            aux.append(v3_aux(x, num_classes))
    x = common.pooled_head(x, include_top, num_classes, pooling)
    return keras.Model(inputs, [x, *aux] if aux else x, name=spec.id)


# ---------------------------------------------------------------------------------------------
# Inception-v4 (TF-slim / timm)

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


def inception_v4(include_top=True, num_classes=1000, input_shape=None, pooling=None):
    """Inception-v4 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
    Connections on Learning", arXiv:1602.07261): stem, 4x Inception-A, Reduction-A, 7x Inception-B,
    Reduction-B, 3x Inception-C, dropout 0.2, classifier; TF-slim's model as timm ports it."""
    spec = _begin("inception_v4", include_top, pooling)
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


# ---------------------------------------------------------------------------------------------
# Inception-ResNet-v2 (keras.applications.InceptionResNetV2)

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


def irv2_conv(x, filters, kernel_size, names: KerasNames, strides=1, padding="same", name=None,
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


def inception_resnet_v2(include_top=True, num_classes=1000, input_shape=None, pooling=None):
    """Inception-ResNet-v2 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of
    Residual Connections on Learning", arXiv:1602.07261), layer for layer
    keras.applications.InceptionResNetV2."""
    spec = _begin("inception_resnet_v2", include_top, pooling)
    inputs = common.model_input(spec, input_shape)
    names = KerasNames()
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


# ---------------------------------------------------------------------------------------------
# PyTorch checkpoints (checkpoints.py): our layer names -> torchvision's GoogLeNet and timm's
# Inception-v4 keys. Both write a conv-BN-ReLU as a BasicConv2d module with `conv` and `bn` inside.

def basic_conv_keys(module: str, kind: str) -> list[str]:
    """The tensors of a BasicConv2d for our `{name}_conv` (its kernel) or `{name}_bn` layer."""
    from tltoolkit.architectures.resnet import BN_KEYS  # here: importing resnet first would reorder the registry

    return [f"{module}.conv.weight"] if kind == "conv" else [f"{module}.bn.{key}" for key in BN_KEYS]


def googlenet_torch_layout(model) -> dict[str, list[str]]:
    """`inception4a_branch2_1_conv` -> `inception4a.branch2.1.conv.weight`, `aux1_fc` -> `aux1.fc1`,
    `predictions` -> `fc` (torchvision's GoogLeNet)."""
    layout = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name == "predictions":
            layout[layer.name] = ["fc.weight", "fc.bias"]
            continue
        module, kind = layer.name.rsplit("_", 1)
        if kind in ("fc", "predictions"):  # the aux heads' two Linear layers
            fc = f"{module}.fc1" if kind == "fc" else f"{module}.fc2"
            layout[layer.name] = [f"{fc}.weight", f"{fc}.bias"]
        else:
            aux = module in GOOGLENET_AUX.values()
            layout[layer.name] = basic_conv_keys(f"{module}.conv" if aux else module.replace("_", "."), kind)
    return layout


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
                layout[layer.name] = basic_conv_keys(modules[module], kind)
    return layout


# ---------------------------------------------------------------------------------------------
# Registry

register(ArchSpec(
    id="googlenet",
    family="inception",
    builder=googlenet,
    stages=(("conv1", "conv1_pad"), ("conv2", "conv2_conv"))
    + tuple((name, name + GOOGLENET_FIRST) for name, _ in GOOGLENET_BLOCKS),
    base_output=GOOGLENET_BLOCKS[-1][0],
    penultimate="avg_pool",
    default_size=224,
    min_size=32,
    # torchvision runs its GoogLeNet weights (ported from TensorFlow) with transform_input=True, which
    # turns ImageNet-normalised input into x/127.5 - 1: this mode, without the detour.
    preprocessing="tf",
    params=6_639_464,
    trainable_params=6_624_904,
    macs=1.4984,
    reference_params=Reference(6_624_904, "trainable",
                               "torchvision GoogLeNet_Weights.IMAGENET1K_V1 num_params"),
    reference_macs=Reference(1.498, "gmacs", "torchvision GoogLeNet_Weights.IMAGENET1K_V1 GFLOPS"),
    paper=SZEGEDY_2014,
    options=("aux_logits",),
    # torchvision's builder sets transform_input=True for these weights: tf mode (see preprocessing above).
    weights=checkpoint_weights(torchvision_checkpoint("tv_in1k", "googlenet-1378be20.pth", "GoogLeNet_Weights",
                                                      0.69778, mode="tf"), default="tv_in1k"),
    # torchvision's file also holds the aux heads: they load into aux_logits=True, else are skipped.
    torch_layouts=(TorchLayout("torchvision", googlenet_torch_layout, head=("fc.",), optional=("aux1.", "aux2.")),),
))

register(ArchSpec(
    id="inception_v3",
    family="inception",
    builder=inception_v3,
    stages=(("stem", "conv2d"),) + tuple((name, first) for name, _, _, first in INCEPTION_V3_BLOCKS),
    base_output="mixed10",
    penultimate="avg_pool",
    default_size=299,
    min_size=75,
    preprocessing="tf",
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

register(ArchSpec(
    id="inception_v4",
    family="inception",
    builder=inception_v4,
    stages=(("stem", "stem_conv1_conv"),) + tuple((name, first) for name, _, first in INCEPTION_V4_STAGES),
    base_output="mixed_7d",
    penultimate="avg_pool",
    default_size=299,
    min_size=75,
    preprocessing="tf",
    params=42_742_984,
    trainable_params=42_679_816,
    macs=12.2540,
    # timm's count of its own network (BN statistics are buffers there); its model card rounds it to 42.7M.
    reference_params=Reference(42_679_816, "trainable", "timm 1.0.31 inception_v4 (create_model) num parameters"),
    reference_macs=Reference(12.3, "gmacs", "timm inception_v4.tf_in1k model card"),
    paper=SZEGEDY_2016,
    # TF-slim's weights as timm ports them; its pretrained_cfg: Inception preprocessing (x/127.5 - 1) at 299,
    # crop 0.875, bicubic.
    weights=checkpoint_weights(timm_checkpoint("inception_v4", "tf_in1k", 0.80156, crop_fraction=0.875, test_size=299,
                                               mode="tf", input_size=299), default="tf_in1k"),
    torch_layouts=(TorchLayout("timm", inception_v4_torch_layout, head=("last_linear.",)),),
))

register(ArchSpec(
    id="inception_resnet_v2",
    family="inception",
    builder=inception_resnet_v2,
    stages=(("stem", "conv2d"),) + tuple((name, first) for name, _, first in INCEPTION_RESNET_V2_STAGES)
    + (("conv_7b", "conv_7b"),),
    base_output="conv_7b_ac",
    penultimate="avg_pool",
    default_size=299,
    min_size=75,
    preprocessing="tf",
    params=55_873_736,
    trainable_params=55_813_192,
    macs=13.1558,
    reference_params=Reference(55_873_736, "total", "keras.io/api/applications (InceptionResNetV2)"),
    reference_macs=Reference(13.2, "gmacs", "timm inception_resnet_v2.tf_in1k model card"),
    weights=keras_imagenet_weights("inception_resnet_v2", "inception_resnet_v2", "e693bd0210a403b3192acc6073ad2e96",
                                   "d19885ff4a710c122648d3b5c3b684e4", top1=0.803, ),
    keras_application="InceptionResNetV2",
    paper=SZEGEDY_2016,
))
