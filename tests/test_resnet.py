"""ResNet v1 family: keras.applications weights files (parity: test_keras_parity.py), lineage conventions and the family's options.

Generic checks (counts, MACs, stages, forward shapes) are in test_registry.py.
"""

import keras
import numpy as np
import pytest
from keras import layers

from tltoolkit.architectures import ArchitectureError, build, get_spec
from tltoolkit.architectures import resnet

KERAS_APPS = {"resnet50": keras.applications.ResNet50, "resnet101": keras.applications.ResNet101,
              "resnet152": keras.applications.ResNet152}


def weighted_names(model):
    return [layer.name for layer in model.layers if layer.weights]


def trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def batch(size, n=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def run(model, x, training=False):
    return keras.ops.convert_to_numpy(model(x, training=training))  # eager: faster than predict's tracing


@pytest.mark.parametrize("arch", sorted(KERAS_APPS))
def test_weights_files_are_keras_applications(arch):
    from keras.src.applications import resnet as keras_resnet

    spec = get_spec(arch)
    assert spec.keras_application == KERAS_APPS[arch].__name__
    files = spec.weights["imagenet"]
    assert (files.file_hash, files.notop_hash) == keras_resnet.WEIGHTS_HASHES[arch]
    assert files.url == f"{keras_resnet.BASE_WEIGHTS_PATH}{arch}_weights_tf_dim_ordering_tf_kernels.h5"
    assert files.notop_url == f"{keras_resnet.BASE_WEIGHTS_PATH}{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def conv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]


def test_lineage_conventions():
    keras_style = build("resnet50", input_shape=(32, 32, 3))
    assert all(c.use_bias for c in conv_layers(keras_style))
    assert {b.epsilon for b in keras_style.layers if isinstance(b, layers.BatchNormalization)} == {1.001e-5}
    assert keras_style.get_layer("conv3_block1_1_conv").strides == (2, 2)

    torchvision_style = build("resnext50_32x4d", input_shape=(32, 32, 3))
    assert not any(c.use_bias for c in conv_layers(torchvision_style))
    assert {b.epsilon for b in torchvision_style.layers if isinstance(b, layers.BatchNormalization)} == {1e-5}
    assert torchvision_style.get_layer("conv3_block1_1_conv").strides == (1, 1)
    strided = torchvision_style.get_layer("conv3_block1_2_conv")
    assert strided.strides == (2, 2) and strided.padding == "valid"  # after an explicit symmetric pad
    assert torchvision_style.get_layer("conv3_block1_2_pad").padding == ((1, 1), (1, 1))

    se_style = build("se_resnet50", input_shape=(32, 32, 3))
    assert se_style.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert not any(c.use_bias for c in conv_layers(se_style) if "_se_" not in c.name)


def test_basic_blocks_have_no_third_conv_and_identity_first_shortcut():
    model = build("resnet18", input_shape=(32, 32, 3))
    names = {layer.name for layer in model.layers}
    assert "conv2_block1_0_conv" not in names  # 64 -> 64 at stride 1: identity, as torchvision
    assert {"conv3_block1_0_conv", "conv3_block1_1_pad", "conv5_block2_2_bn"} <= names
    assert not any(name.endswith("_3_conv") for name in names)


@pytest.mark.parametrize("arch,depth", [("resnet18", 18), ("resnet50", 50), ("resnext50_32x4d", 50),
                                        ("se_resnet50", 50)])
def test_stages_are_contiguous(arch, depth):
    # Each stage starts right after the previous stage's output, so index-based freezing is exact.
    model = build(arch, input_shape=(32, 32, 3))
    names = [layer.name for layer in model.layers]
    _, blocks = resnet.DEPTHS[depth]
    ends = ["input", "pool1_pool"] + [f"{s}_block{n}_out" for s, n in zip(resnet.STAGES, blocks)]
    assert [names[names.index(first) - 1] for _, first in get_spec(arch).stages] == ends[:-1]
    assert get_spec(arch).base_output == ends[-1]


def expected_trainable(depth, groups=1, width_per_group=64, bias=False, se_ratio=0.0, num_classes=1000):
    """Trainable parameters of a ResNet v1, counted from the papers' formulas (BN: gamma and beta)."""
    kind, blocks_per_stage = resnet.DEPTHS[depth]

    def conv(cin, cout, k, g=1):
        return k * k * cin // g * cout + (cout if bias else 0) + 2 * cout

    def se(c):
        r = max(1, int(c * se_ratio))
        return (c * r + r + r * c + c) if se_ratio else 0

    total = conv(3, 64, 7)
    cin = 64
    for i, (planes, blocks) in enumerate(zip(resnet.STAGE_FILTERS, blocks_per_stage)):
        for b in range(blocks):
            stride = 2 if b == 0 and i > 0 else 1
            if kind == "basic":
                cout = planes
                total += conv(cin, planes, 3) + conv(planes, planes, 3)
            else:
                cout, width = 4 * planes, int(planes * width_per_group / 64) * groups
                total += conv(cin, width, 1) + conv(width, width, 3, groups) + conv(width, cout, 1)
            if stride != 1 or cin != cout:
                total += conv(cin, cout, 1)
            total += se(cout)
            cin = cout
    return total + cin * num_classes + num_classes


@pytest.mark.parametrize("arch,depth,options,bias", [
    ("resnet50", 50, {"groups": 32, "width_per_group": 4}, True),
    ("resnext50_32x4d", 50, {"groups": 8}, False),  # overrides the variant's 32, keeps its width 4
    ("wide_resnet50_2", 50, {"width_per_group": 96}, False),
    ("resnet18", 18, {}, False),
])
def test_groups_and_width_follow_the_formula(arch, depth, options, bias):
    model = build(arch, num_classes=10, input_shape=(32, 32, 3), **options)
    defaults = {"resnext50_32x4d": {"groups": 32, "width_per_group": 4},
                "wide_resnet50_2": {"width_per_group": 128}}.get(arch, {})
    assert trainable(model) == expected_trainable(depth, bias=bias, num_classes=10, **{**defaults, **options})
    assert model.get_layer("conv2_block1_2_conv").groups == {**defaults, **options}.get("groups", 1)


def test_wide_resnet_at_base_width_is_torchvision_resnet50():
    model = build("wide_resnet50_2", width_per_group=64, input_shape=(32, 32, 3))
    assert trainable(model) == 25_557_032  # torchvision ResNet50_Weights num_params


def test_grouped_bottleneck_trains_on_cpu():
    # Keras 3 runs grouped convolutions on CPU through XLA; check gradients flow, on one small block.
    inputs = keras.Input((8, 8, 64))
    x = resnet.bottleneck_block(inputs, 64, stride=2, groups=32, width_per_group=4,
                                convention=resnet.TORCHVISION, name="conv3_block1")
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    assert model.get_layer("conv3_block1_2_conv").kernel.shape == (3, 3, 4, 128)
    model.compile(optimizer="sgd", loss="mse")
    before = model.get_layer("conv3_block1_2_conv").get_weights()[0].copy()
    model.fit(np.random.default_rng(0).normal(size=(4, 8, 8, 64)), np.ones((4, 256)), epochs=1, verbose=0)
    assert not np.array_equal(before, model.get_layer("conv3_block1_2_conv").get_weights()[0])


@pytest.mark.parametrize("arch,depth,bias", [("resnet50", 50, True), ("resnet18", 18, False)])
def test_se_adds_exactly_the_squeeze_excite_parameters(arch, depth, bias):
    plain = build(arch, input_shape=(32, 32, 3))
    se = build(arch, input_shape=(32, 32, 3), se_ratio=1 / 16)
    assert trainable(plain) == expected_trainable(depth, bias=bias)
    assert trainable(se) == expected_trainable(depth, bias=bias, se_ratio=1 / 16)
    # Every SE weight is trainable: the totals differ by exactly as much.
    assert se.count_params() - plain.count_params() == trainable(se) - trainable(plain)


def test_se_resnet50_is_resnet50_plus_se_blocks():
    model = build("se_resnet50", input_shape=(32, 32, 3))
    assert model.get_layer("conv4_block6_se_reduce").filters == 1024 // 16
    assert model.get_layer("conv4_block6_se_expand").filters == 1024
    assert model.get_layer("conv2_block1_se_squeeze").keepdims
    assert isinstance(model.get_layer("conv5_block3_se_excite"), layers.Multiply)
    without = build("se_resnet50", se_ratio=0, input_shape=(32, 32, 3))
    # No conv biases and the stride on the 1x1: ResNet-50 with torchvision's parameter count.
    assert trainable(without) == 25_557_032
    assert not any("_se_" in layer.name for layer in without.layers)


def test_drop_path_keeps_layers_and_weights_and_rises_linearly():
    keras.utils.set_random_seed(1)
    plain = build("resnet50", input_shape=(32, 32, 3))
    dropping = build("resnet50", input_shape=(32, 32, 3), drop_path_rate=0.5)
    assert [layer.name for layer in dropping.layers] == [layer.name for layer in plain.layers]
    assert weighted_names(dropping) == weighted_names(plain)
    dropping.set_weights(plain.get_weights())
    rates = [dropping.get_layer(f"{s}_block{b}_add").rate
             for s, n in zip(resnet.STAGES, (3, 4, 6, 3)) for b in range(1, n + 1)]
    np.testing.assert_allclose(rates, [0.5 * (i + 1) / 16 for i in range(16)])
    assert type(plain.get_layer("conv5_block3_add")) is layers.Add

    x = batch(32)
    np.testing.assert_array_equal(run(dropping, x), run(dropping, x))  # inference is deterministic
    trained = [run(dropping, x, training=True) for _ in range(4)]
    assert any(not np.array_equal(trained[0], t) for t in trained[1:])


def test_drop_path_inference_is_the_plain_network():
    """Inverted stochastic depth: switching it on does not change what pretrained weights compute."""
    plain = build("resnet18", include_top=False, pooling="avg", input_shape=(32, 32, 3))
    dropping = build("resnet18", include_top=False, pooling="avg", input_shape=(32, 32, 3), drop_path_rate=0.5)
    dropping.set_weights(plain.get_weights())
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(dropping(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,options,message", [
    ("resnet18", {"groups": 32}, "basic blocks"),
    ("resnet34", {"width_per_group": 128}, "basic blocks"),
    ("resnet50", {"groups": 0}, "positive integer"),
    ("resnet50", {"width_per_group": 2.5}, "positive integer"),
    ("resnet50", {"se_ratio": 16}, "se_ratio"),
    ("resnet50", {"drop_path_rate": 1.0}, "drop_path_rate"),
    ("resnet50", {"pooling": "mean", "include_top": False}, "pooling"),
    ("resnet50", {"dropout": 0.5}, "unknown option"),
])
def test_bad_arguments_raise_one_line_errors(arch, options, message):
    with pytest.raises(ArchitectureError, match=message) as info:
        build(arch, input_shape=(32, 32, 3), **options)
    assert "\n" not in str(info.value)
