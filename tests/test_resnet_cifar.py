"""CIFAR ResNet and WRN specifics: shortcut options, plain nets, stochastic depth, dropout, saving.

Parameter/MAC counts, stages and output shapes of every registered spec (at default options) are
checked in test_registry.py.
"""

import keras
import numpy as np
import pytest

from tltoolkit.architectures import ArchitectureError, build, get_spec
from tltoolkit.architectures.common import drop_path_rates
from tltoolkit.architectures.layers import StochasticDepth, SubsampleZeroPad
from tltoolkit.architectures.resnet_cifar import RESNETS
from tltoolkit.architectures.stages import spec_stage_ranges, trainable_count

BATCH = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype("float32")


def layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def assert_same_stages(model, arch):
    assert [r.name for r in spec_stage_ranges(model, get_spec(arch))][:-1] == list(get_spec(arch).stage_names)


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = np.random.default_rng(1).normal(size=(2, 7, 8, 16)).astype("float32")
    y = SubsampleZeroPad(32, 2)(x).numpy()
    assert y.shape == (2, 4, 4, 32)
    np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])
    assert not y[..., 16:].any()


@pytest.mark.parametrize("arch", sorted(RESNETS))
def test_depth_is_6n_plus_2_weighted_layers(arch):
    model = build(arch)
    depth, n = RESNETS[arch][0], (RESNETS[arch][0] - 2) // 6
    convs = layers_of(model, keras.layers.Conv2D)
    assert len(convs) + len(layers_of(model, keras.layers.Dense)) == depth
    assert len(layers_of(model, keras.layers.Add)) == 3 * n
    assert [layer.name for layer in layers_of(model, SubsampleZeroPad)] == ["conv3_block1_0_pad", "conv4_block1_0_pad"]
    assert [model.get_layer(f"conv{s}_block{n}_out").output.shape[1] for s in (2, 3, 4)] == [32, 16, 8]


def test_option_b_projects_where_the_shape_changes():
    a = build("resnet20_cifar")
    b = build("resnet20_cifar", shortcut="B")
    projections = [layer.name for layer in b.layers if layer.name.endswith("_0_conv")]
    assert projections == ["conv3_block1_0_conv", "conv4_block1_0_conv"]
    assert not layers_of(b, SubsampleZeroPad)
    # 1x1 convs 16->32 and 32->64 plus their BN (gamma, beta trainable; mean, variance not).
    assert trainable_count(b) - trainable_count(a) == 16 * 32 + 32 * 64 + 2 * (32 + 64)
    assert b.count_params() - a.count_params() == 16 * 32 + 32 * 64 + 4 * (32 + 64)
    assert_same_stages(b, "resnet20_cifar")


def test_plain_net_has_no_shortcuts_and_the_same_parameters():
    plain = build("resnet20_cifar", plain=True)
    assert not layers_of(plain, keras.layers.Add) and not layers_of(plain, SubsampleZeroPad)
    assert plain.count_params() == get_spec("resnet20_cifar").params
    assert trainable_count(plain) == get_spec("resnet20_cifar").trainable_params
    assert_same_stages(plain, "resnet20_cifar")


def test_options_are_checked():
    with pytest.raises(ArchitectureError, match="shortcut"):
        build("resnet20_cifar", shortcut="C")
    with pytest.raises(ArchitectureError, match="plain"):
        build("resnet20_cifar", plain=True, shortcut="B")
    with pytest.raises(ArchitectureError, match="drop_path_rate"):
        build("resnet20_cifar", drop_path_rate=1.0)
    with pytest.raises(ArchitectureError, match="dropout"):
        build("wrn28_10_cifar", dropout=-0.1)
    with pytest.raises(ArchitectureError, match="unknown option"):
        build("wrn28_10_cifar", plain=True)


def test_stochastic_depth_replaces_the_adds():
    model = build("resnet20_cifar", drop_path_rate=0.3)
    drops = layers_of(model, StochasticDepth)
    assert not layers_of(model, keras.layers.Add)
    assert [layer.name for layer in drops] == [f"conv{s}_block{b}_add" for s in (2, 3, 4) for b in (1, 2, 3)]
    np.testing.assert_allclose([layer.rate for layer in drops], drop_path_rates(0.3, 9))
    np.testing.assert_allclose(drop_path_rates(0.3, 9)[-1], 0.3)
    assert model.count_params() == get_spec("resnet20_cifar").params
    assert np.isfinite(model(BATCH, training=True).numpy()).all()


def test_wrn_blocks_dropout_and_shortcuts():
    model = build("wrn28_10_cifar", dropout=0.3, num_classes=100)
    dropouts = layers_of(model, keras.layers.Dropout)
    assert len(dropouts) == 12 and {layer.rate for layer in dropouts} == {0.3}
    assert [layer.name for layer in model.layers if layer.name.endswith("_0_conv")] == [
        "conv2_block1_0_conv", "conv3_block1_0_conv", "conv4_block1_0_conv"]
    assert [model.get_layer(f"conv{s}_block4_out").output.shape[-1] for s in (2, 3, 4)] == [160, 320, 640]
    assert model.count_params() == get_spec("wrn28_10_cifar").params + 640 * 90 + 90
    assert not layers_of(build("wrn28_10_cifar", include_top=False), keras.layers.Dropout)


def test_resnet20_trains_one_step():
    keras.utils.set_random_seed(0)
    model = build("resnet20_cifar")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                  jit_compile=False)
    history = model.fit(BATCH, np.arange(4), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("options", [{}, {"drop_path_rate": 0.2}], ids=["option_a", "stochastic_depth"])
def test_saves_and_loads_in_safe_mode(options, tmp_path):
    model = build("resnet20_cifar", **options)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(BATCH, verbose=0), model.predict(BATCH, verbose=0), rtol=1e-5, atol=1e-6)


def test_option_b_variants_are_the_option_b_nets():
    variant = build("resnet20_cifar_b")
    option_b = build("resnet20_cifar", shortcut="B")
    assert [w.shape for w in variant.weights] == [w.shape for w in option_b.weights]
    assert [layer.name for layer in variant.layers] == [layer.name for layer in option_b.layers]
    with pytest.raises(ArchitectureError, match="shortcut"):
        build("resnet20_cifar_b", shortcut="A")
