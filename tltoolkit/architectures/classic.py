"""The classic small CNNs of the lineage: LeNet-5, AlexNet, ZFNet and Network in Network.

None has published Keras weights. Layer names follow VGG's keras.applications layout (`blockN_conv`,
`blockN_pool`, `fc1`, `fc2`, `predictions`), so the stages are `block1...`. Where the papers give
the layout only as Caffe prototxt (two-tower AlexNet, ZFNet, NiN), max pooling rounds up like
Caffe's, so the feature maps have the sizes the papers print.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import keras
from keras import layers

from tltoolkit.architectures import common
from tltoolkit.architectures.layers import (
    AdaptiveAveragePooling,
    ChannelGather,
    EuclideanRBF,
    LocalResponseNormalization,
    lecun_tanh,
)
from tltoolkit.architectures.registry import (
    ArchitectureError,
    ArchSpec,
    Reference,
    TorchLayout,
    checkpoint_weights,
    register,
    torchvision_checkpoint,
)

LENET_PAPER = ("LeCun, Bottou, Bengio & Haffner 1998, Gradient-Based Learning Applied to Document "
               "Recognition, Proc. IEEE 86(11):2278-2324")
ALEXNET_PAPER = ("Krizhevsky, Sutskever & Hinton 2012, ImageNet Classification with Deep Convolutional "
                 "Neural Networks, NIPS 2012")
ZFNET_PAPER = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks, arXiv:1311.2901"
NIN_PAPER = "Lin, Chen & Yan 2013, Network In Network, arXiv:1312.4400"


# ---------------------------------------------------------------------------------------------
# LeNet-5

# C3's connection table (LeCun et al. 1998, Table I): the S2 maps each C3 map reads.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)
LENET_VARIANTS = ("1998", "modern")


def partially_connected_conv(x, table, kernel_size: int, activation, name: str):
    """A convolution whose output map i reads only the input channels `table[i]`.

    Consecutive maps reading equally many channels become one grouped convolution over the
    gathered channels, so weights and MACs are exactly the table's. The pieces sit in one nested
    model named `name`: C3 stays a single layer (`block2_conv` in either LeNet variant, so the
    stages do not depend on the variant), and `count_macs` still sees its convolutions.
    """
    inputs = keras.Input(shape=x.shape[1:], name=f"{name}_input")
    maps = []
    for run, (_, group) in enumerate(itertools.groupby(table, len), start=1):
        group = list(group)
        gathered = ChannelGather([c for channels in group for c in channels], name=f"{name}_gather{run}")(inputs)
        maps.append(layers.Conv2D(len(group), kernel_size, groups=len(group), activation=activation,
                                  name=f"{name}_conv{run}")(gathered))
    outputs = layers.Concatenate(name=f"{name}_concat")(maps) if len(maps) > 1 else maps[0]
    return keras.Model(inputs, outputs, name=name)(x)


def lenet5(spec: ArchSpec, include_top: bool = True, num_classes: int = 10, input_shape=None, pooling=None,
           variant: str = "1998") -> keras.Model:
    """LeNet-5 (LeCun et al. 1998, Proc. IEEE 86(11), §II-B) on 32x32 grey images.

    variant:
      "1998" (default): the paper's network. C1 and C3 convolutions, S2 and S4 subsampling (2x2
        average times a trainable coefficient plus a bias per map: `blockN_pool` then a 1x1
        depthwise `blockN_subsample`), C3 partially connected by Table I, C5 a 5x5 convolution to
        120 maps, F6 84 units (`fc1`), the scaled tanh everywhere, and Euclidean RBF output units
        with fixed +-1 prototypes (`predictions`). 60,000 trainable parameters, as the paper
        counts, plus the 840 fixed prototypes.
      "modern": the usual re-implementation: ReLU, 2x2 max pooling without parameters, C3 fully
        connected and a softmax Dense output (61,706 parameters).

    Without the top the model ends at C5 (`block3_conv`, 1x1x120 at 32x32); with it, F6 (`fc1`)
    is the feature layer.
    """
    common.check_pooling(spec, pooling)
    if variant not in LENET_VARIANTS:
        raise ArchitectureError(f"lenet5: variant must be one of {', '.join(LENET_VARIANTS)}; received {variant!r}")
    paper = variant == "1998"
    activation = lecun_tanh if paper else "relu"
    inputs = common.model_input(spec, input_shape)
    x = layers.Conv2D(6, 5, activation=activation, name="block1_conv")(inputs)
    x = _lenet_pool(x, paper, "block1")
    if paper:
        x = partially_connected_conv(x, C3_TABLE, 5, activation, name="block2_conv")
    else:
        x = layers.Conv2D(16, 5, activation=activation, name="block2_conv")(x)
    x = _lenet_pool(x, paper, "block2")
    x = layers.Conv2D(120, 5, activation=activation, name="block3_conv")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(84, activation=activation, name="fc1")(x)
        if paper:
            x = EuclideanRBF(num_classes, name="predictions")(x)
        else:
            x = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    else:
        x = common.pooled_head(x, False, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


def _lenet_pool(x, paper: bool, name: str):
    if not paper:
        return layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = layers.AveragePooling2D(2, name=f"{name}_pool")(x)
    return layers.DepthwiseConv2D(1, activation=lecun_tanh, name=f"{name}_subsample")(x)


# ---------------------------------------------------------------------------------------------
# AlexNet and ZFNet: five convolutions, three max pools, three fully connected layers


class ConvBlock(NamedTuple):
    filters: int
    kernel_size: int
    strides: int = 1
    padding: int | None = None  # zeros on each side; None: kernel_size // 2 ("same" at stride 1)
    groups: int = 1
    pool: bool = False
    norm: str | None = None  # LRN "before" or "after" the pool


class AlexNetLayout(NamedTuple):
    blocks: tuple[ConvBlock, ...]
    default_size: int
    min_size: int
    caffe_pooling: bool  # round pooled sizes up, as Caffe does
    dropout_after_fc: bool  # Caffe drops fc outputs; torchvision drops fc inputs


ALEXNET_LAYOUTS = {
    # torchvision's one-tower AlexNet (the "one weird trick" widths, arXiv:1404.5997).
    "alexnet": AlexNetLayout((
        ConvBlock(64, 11, 4, padding=2, pool=True),
        ConvBlock(192, 5, pool=True),
        ConvBlock(384, 3),
        ConvBlock(256, 3),
        ConvBlock(256, 3, pool=True),
    ), default_size=224, min_size=63, caffe_pooling=False, dropout_after_fc=False),
    # The paper's two GPU towers as groups=2 (Fig. 2). The paper's 224 input only yields its 55x55
    # first maps with 2 pixels of padding (Caffe's bvlc_alexnet uses 227 unpadded: the same maps),
    # which also keeps `block1_pad` as the first layer, so both layouts share their stages.
    "alexnet_two_tower": AlexNetLayout((
        ConvBlock(96, 11, 4, padding=2, pool=True, norm="before"),
        ConvBlock(256, 5, groups=2, pool=True, norm="before"),
        ConvBlock(384, 3),
        ConvBlock(384, 3, groups=2),
        ConvBlock(256, 3, groups=2, pool=True),
    ), default_size=224, min_size=63, caffe_pooling=True, dropout_after_fc=True),
    # Zeiler & Fergus 2013, Fig. 3: 110, 55, 26, 13, 13, 13, 6.
    "zfnet": AlexNetLayout((
        ConvBlock(96, 7, 2, padding=1, pool=True, norm="after"),
        ConvBlock(256, 5, 2, padding=0, pool=True, norm="after"),
        ConvBlock(384, 3),
        ConvBlock(384, 3),
        ConvBlock(256, 3, pool=True),
    ), default_size=224, min_size=51, caffe_pooling=True, dropout_after_fc=True),
}
FC_UNITS = 4096
FC_GRID = 6  # the fc layers read a 6x6 map, whatever the input size


def conv_block(x, block: ConvBlock, caffe_pooling: bool, name: str):
    padding = block.kernel_size // 2 if block.padding is None else block.padding
    if block.strides == 1 and 2 * padding == block.kernel_size - 1:
        mode = "same"
    else:
        mode = "valid"
        if padding:
            x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = layers.Conv2D(block.filters, block.kernel_size, strides=block.strides, padding=mode,
                      groups=block.groups, activation="relu", name=f"{name}_conv")(x)
    if block.norm == "before":
        x = LocalResponseNormalization(name=f"{name}_norm")(x)
    if block.pool:
        x = common.max_pool(x, caffe_pooling, name=f"{name}_pool")
    if block.norm == "after":
        x = LocalResponseNormalization(name=f"{name}_norm")(x)
    return x


def fc_classifier(x, num_classes: int, dropout_after_fc: bool):
    # torchvision's AdaptiveAvgPool2d((6, 6)): the identity at the default size; elsewhere it
    # keeps fc1 at 9216 inputs.
    x = AdaptiveAveragePooling(FC_GRID, name="fc_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for fc in ("fc1", "fc2"):
        if not dropout_after_fc:
            x = layers.Dropout(0.5, name=f"{fc}_dropout")(x)
        x = layers.Dense(FC_UNITS, activation="relu", name=fc)(x)
        if dropout_after_fc:
            x = layers.Dropout(0.5, name=f"{fc}_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)


def alexnet_family(spec: ArchSpec, layout: AlexNetLayout, include_top: bool, num_classes: int,
                   input_shape, pooling) -> keras.Model:
    common.check_pooling(spec, pooling)
    if input_shape is None:
        input_shape = (layout.default_size, layout.default_size, spec.channels)
    if any(d is not None and d < layout.min_size for d in tuple(input_shape)[:2]):
        raise ArchitectureError(
            f"{spec.id}: this layout needs inputs of at least {layout.min_size}x{layout.min_size}; "
            f"received {tuple(input_shape)}")
    inputs = common.model_input(spec, input_shape)
    x = inputs
    for i, block in enumerate(layout.blocks, start=1):
        x = conv_block(x, block, layout.caffe_pooling, name=f"block{i}")
    if include_top:
        x = fc_classifier(x, num_classes, layout.dropout_after_fc)
    else:
        x = common.pooled_head(x, False, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


def alexnet(spec: ArchSpec, include_top: bool = True, num_classes: int = 1000, input_shape=None, pooling=None,
            two_tower: bool = False) -> keras.Model:
    """AlexNet (Krizhevsky et al. 2012, NIPS).

    Default: torchvision's one-tower layout at 224 (64/192/384/256/256 filters, no response
    normalization, dropout 0.5 on the inputs of fc1 and fc2; 61,100,840 parameters). Inputs other
    than 224 reach fc1 through an adaptive average pool to 6x6 (`fc_pool`), as torchvision's do;
    the minimum is 63x63.

    two_tower=True: the paper's network, at the paper's 224x224 with 2 pixels of padding (the
    same 55x55 maps as Caffe's bvlc_alexnet at 227 unpadded): 96/256/384/384/256 filters, conv2,
    conv4 and conv5 grouped in two towers (`groups=2`), local response normalization (k=2, n=5,
    alpha=1e-4, beta=0.75) after the first two convolutions, Caffe's rounded-up pooling, dropout
    on the outputs of fc1 and fc2 (60,965,224 parameters, 0.7244 GMACs). Same stages as the default.
    """
    common.check_bool(spec, "two_tower", two_tower)
    layout = ALEXNET_LAYOUTS["alexnet_two_tower" if two_tower else "alexnet"]
    return alexnet_family(spec, layout, include_top, num_classes, input_shape, pooling)


def zfnet(spec: ArchSpec, include_top: bool = True, num_classes: int = 1000, input_shape=None, pooling=None) -> keras.Model:
    """ZFNet (Zeiler & Fergus 2013, arXiv:1311.2901, Fig. 3) at 224x224.

    Conv 7x7/2 (96) and 5x5/2 (256), each followed by 3x3/2 max pooling and contrast normalization
    across feature maps (here AlexNet's response normalization with its constants; the paper gives
    none), then three 3x3 convolutions (384, 384, 256), a last pool and AlexNet's classifier
    (dropout 0.5 after fc1 and fc2). Padding reproduces the figure's map sizes 110, 55, 26, 13, 6.
    Other input sizes (at least 51) reach fc1 through an adaptive average pool to 6x6.
    """
    return alexnet_family(spec, ALEXNET_LAYOUTS["zfnet"], include_top, num_classes, input_shape, pooling)


# torchvision's AlexNet keys: `features` and `classifier` are Sequentials (ReLU, pool and dropout
# take indices too); our default layout only, the two-tower one has other shapes. The whole
# classifier is the head: the base (what a new head or no top keeps) ends at block5_pool.
ALEXNET_TORCH_MODULES = {
    **{f"block{i}_conv": f"features.{index}" for i, index in enumerate((0, 3, 6, 8, 10), start=1)},
    "fc1": "classifier.1", "fc2": "classifier.4", "predictions": "classifier.6",
}


def alexnet_torch_layout(model) -> dict[str, list[str]]:
    return {layer.name: [f"{ALEXNET_TORCH_MODULES[layer.name]}.weight", f"{ALEXNET_TORCH_MODULES[layer.name]}.bias"]
            for layer in model.layers if layer.name in ALEXNET_TORCH_MODULES}


# ---------------------------------------------------------------------------------------------
# Network in Network

# (filters, kernel, strides) of each mlpconv block's first convolution; two 1x1 convolutions follow.
NIN_BLOCKS = ((96, 11, 4), (256, 5, 1), (384, 3, 1), (1024, 3, 1))
NIN_DROPOUT = 0.5  # after block3's pool, as in the Caffe model


def mlpconv_block(x, filters: int, kernel_size: int, strides: int, name: str, mlp_filters=None):
    """A convolution and two 1x1 convolutions (the "micro network"), all with ReLU."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="valid" if strides > 1 else "same",
                      activation="relu", name=f"{name}_conv")(x)
    for i, units in enumerate(mlp_filters or (filters, filters), start=1):
        x = layers.Conv2D(units, 1, activation="relu", name=f"{name}_mlp{i}")(x)
    return x


def nin(spec: ArchSpec, include_top: bool = True, num_classes: int = 1000, input_shape=None, pooling=None) -> keras.Model:
    """Network in Network (Lin et al. 2013, arXiv:1312.4400): the ImageNet model of the Caffe
    model zoo (gist mavenlin/d802a5849de39225bcc6) at 224x224.

    Four mlpconv blocks (11x11/4 96, 5x5 256, 3x3 384, 3x3 1024, each followed by two 1x1
    convolutions), 3x3/2 max pooling rounded up as in Caffe (maps 54, 27, 13, 6) and dropout 0.5
    after block3. The classifier is the paper's global average pooling: the last 1x1 convolution
    has one channel per class (`conv_preds`, with ReLU as in the Caffe model), then `avg_pool` and
    a softmax (`predictions`). So the top is that convolution and the pooling, and without the
    top the model ends at the 1024-channel `block4_mlp1`, which is also the feature layer
    (`penultimate`) of the full model.
    """
    common.check_pooling(spec, pooling)
    inputs = common.model_input(spec, input_shape)
    x = inputs
    last = len(NIN_BLOCKS)
    for i, (filters, kernel_size, strides) in enumerate(NIN_BLOCKS, start=1):
        x = mlpconv_block(x, filters, kernel_size, strides, name=f"block{i}",
                          mlp_filters=(filters,) if i == last else None)
        if i < last:
            x = common.max_pool(x, caffe=True, name=f"block{i}_pool")
        if i == last - 1:
            x = layers.Dropout(NIN_DROPOUT, name=f"block{i}_dropout")(x)
    if include_top:
        x = layers.Conv2D(num_classes, 1, activation="relu", name="conv_preds")(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Activation("softmax", name="predictions")(x)
    else:
        x = common.pooled_head(x, False, num_classes, pooling)
    return keras.Model(inputs, x, name=spec.id)


# ---------------------------------------------------------------------------------------------

def _blocks(n: int, first_layers: dict | None = None):
    first_layers = first_layers or {}
    return tuple((f"block{b}", first_layers.get(b, f"block{b}_conv")) for b in range(1, n + 1))


# The family's defaults: a registration says only what differs.
ClassicSpec = functools.partial(ArchSpec, family="classic", default_size=224, preprocessing="torch")

register(ClassicSpec(
    id="lenet5",
    builder=lenet5,
    stages=_blocks(3),
    base_output="block3_conv",
    penultimate="fc1",
    default_size=32,
    min_size=32,
    preprocessing="scale",
    params=60_840,
    trainable_params=60_000,
    macs=0.0003,
    reference_params=Reference(60_000, "trainable", "LeCun et al. 1998, Proc. IEEE 86(11), §II-B"),
    channels=1,
    num_classes=10,
    paper=LENET_PAPER,
    options=("variant",),
))
register(ClassicSpec(
    id="alexnet",
    builder=alexnet,
    stages=_blocks(5, {1: "block1_pad"}),
    base_output="block5_pool",
    penultimate="fc2",
    min_size=63,
    params=61_100_840,
    trainable_params=61_100_840,
    macs=0.7142,
    reference_params=Reference(61_100_840, "trainable", "torchvision alexnet.py AlexNet_Weights"),
    reference_macs=Reference(0.714, "gmacs", "torchvision alexnet.py AlexNet_Weights"),
    paper=ALEXNET_PAPER,
    options=("two_tower",),
    weights=checkpoint_weights(torchvision_checkpoint("tv_in1k", "alexnet-owt-7be5be79.pth", "AlexNet_Weights",
                                                      0.56522), default="tv_in1k"),
    torch_layouts=(TorchLayout("torchvision", alexnet_torch_layout, head=("classifier.",)),),
))
register(ClassicSpec(
    id="zfnet",
    builder=zfnet,
    stages=_blocks(5, {1: "block1_pad"}),
    base_output="block5_pool",
    penultimate="fc2",
    min_size=51,
    params=62_357_608,
    trainable_params=62_357_608,
    macs=1.1680,
    # The paper gives no parameter count: this is the count its Fig. 3 implies.
    reference_params=Reference(62_357_608, "derived", "derived from Zeiler & Fergus 2013, Fig. 3"),
    paper=ZFNET_PAPER,
))
register(ClassicSpec(
    id="nin",
    builder=nin,
    stages=_blocks(4),
    base_output="block4_mlp1",
    penultimate="block4_mlp1",
    min_size=59,
    params=7_595_176,
    trainable_params=7_595_176,
    macs=1.1002,
    # The paper gives no ImageNet parameter count (only the 29 MB model): this is the count of the
    # Caffe model it links.
    reference_params=Reference(7_595_176, "derived", "derived from the Caffe model zoo prototxt, "
                                                   "gist mavenlin/d802a5849de39225bcc6"),
    paper=NIN_PAPER,
))
