"""GoogLeNet (Szegedy et al. 2014) in torchvision's layout.

BN after every conv, a 3x3 conv where the paper has the 5x5, a 2x2 `pool4`: torchvision's GoogLeNet,
whose parameter count it reproduces and whose ImageNet checkpoint it takes.
"""

from __future__ import annotations

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.registry import (
    Reference,
    TorchLayout,
    checkpoint_weights,
    register,
    torchvision_checkpoint,
)

SZEGEDY_2014 = "Szegedy et al. 2014, Going Deeper with Convolutions, arXiv:1409.4842"

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


def googlenet(spec, include_top=True, num_classes=1000, input_shape=None, pooling=None, aux_logits=False):
    """GoogLeNet (Szegedy et al. 2014, "Going Deeper with Convolutions", arXiv:1409.4842).

    torchvision's layout: BN after every conv, the "5x5" branch as a 3x3 conv, and its ceil_mode
    max pools (the output size rounds up), so any input size gives torchvision's feature maps.
    Stages: conv1 (conv1 + pool1), conv2 (conv2, conv3, pool2), then one stage per inception block;
    pool3 and pool4 close the stages inception3b and inception4e.

    aux_logits: add the two auxiliary classifiers (after inception4a and inception4d); the model
      then has three outputs [main, aux1, aux2], for training. Needs include_top. Their layers sit
      between the base's layers in model.layers, so stage ranges include them.
    """
    common.check_pooling(spec, pooling)
    common.check_aux_logits(spec, aux_logits, include_top)
    inputs = common.model_input(spec, input_shape)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = googlenet_conv(x, 64, 7, "conv1", strides=2, padding="valid")
    x = common.max_pool(x, caffe=True, name="pool1")
    x = googlenet_conv(x, 64, 1, "conv2")
    x = googlenet_conv(x, 192, 3, "conv3")
    x = common.max_pool(x, caffe=True, name="pool2")
    aux = []
    for name, widths in GOOGLENET_BLOCKS:
        x = googlenet_block(x, widths, name)
        if aux_logits and name in GOOGLENET_AUX:
            aux.append(googlenet_aux(x, num_classes, GOOGLENET_AUX[name]))
        if name in GOOGLENET_POOLS:
            pool_name, size = GOOGLENET_POOLS[name]
            x = common.max_pool(x, caffe=True, name=pool_name, size=size)
    x = common.pooled_head(x, include_top, num_classes, pooling, dropout=0.2)
    return keras.Model(inputs, [x, *aux] if aux else x, name=spec.id)


# PyTorch checkpoints (checkpoints.py): our layer names -> torchvision's GoogLeNet keys.

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
            layout[layer.name] = common.basic_conv_keys(f"{module}.conv" if aux else module.replace("_", "."), kind)
    return layout


register(common.InceptionSpec(
    id="googlenet",
    builder=googlenet,
    stages=(("conv1", "conv1_pad"), ("conv2", "conv2_conv"))
    + tuple((name, name + GOOGLENET_FIRST) for name, _ in GOOGLENET_BLOCKS),
    base_output=GOOGLENET_BLOCKS[-1][0],
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
