"""VGG specifics (keras.applications parity: test_keras_parity.py): depth per config, BN and dropout options.

Parameter/MAC counts, stages and output shapes of every registered spec are checked in
test_registry.py.
"""

import keras
import pytest
from keras import layers

from keras_parity import weighted_layer_names
from tltoolkit.architectures import ArchitectureError, build, get_spec
from tltoolkit.architectures.stages import spec_stage_ranges
from tltoolkit.architectures.vgg import DEPTHS, WIDTHS

SMALL = (32, 32, 3)


@pytest.mark.parametrize("arch", sorted(DEPTHS))
def test_depth_counts_weighted_layers(arch):
    model = build(arch, input_shape=SMALL)
    names = weighted_layer_names(model)
    assert len(names) == int(arch[3:])  # VGG-n has n weighted layers
    expected_convs = [f"block{b}_conv{i}" for b, convs in enumerate(DEPTHS[arch], 1) for i in range(1, convs + 1)]
    assert names == expected_convs + ["fc1", "fc2", "predictions"]


def test_batch_norm_adds_one_bn_per_conv():
    plain = build("vgg16", include_top=False, input_shape=SMALL)
    bn = build("vgg16", include_top=False, input_shape=SMALL, batch_norm=True)
    conv_channels = sum(convs * width for convs, width in zip(DEPTHS["vgg16"], WIDTHS))
    # gamma, beta (trainable) and the moving mean and variance per channel
    assert bn.count_params() - plain.count_params() == 4 * conv_channels
    trainable = lambda m: sum(int(w.numpy().size) for w in m.trainable_weights)  # noqa: E731
    assert trainable(bn) - trainable(plain) == 2 * conv_channels

    convs = [layer for layer in bn.layers if isinstance(layer, layers.Conv2D)]
    bns = [layer for layer in bn.layers if isinstance(layer, layers.BatchNormalization)]
    assert [layer.name for layer in bns] == [f"{conv.name}_bn" for conv in convs]
    assert all(conv.use_bias for conv in convs)
    assert all(conv.activation is keras.activations.linear for conv in convs)
    # The stage boundaries still resolve, and each stage still starts at its first conv.
    ranges = spec_stage_ranges(bn, get_spec("vgg16"))
    assert [bn.layers[r.start].name for r in ranges[:-1]] == [f"block{b}_conv1" for b in range(1, 6)]


def test_no_batch_norm_by_default():
    model = build("vgg11", include_top=False, input_shape=SMALL)
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in model.layers)


def test_dropout_only_when_asked():
    plain = build("vgg11", input_shape=SMALL)
    assert not any(isinstance(layer, layers.Dropout) for layer in plain.layers)

    dropped = build("vgg11", input_shape=SMALL, dropout=0.5)
    names = [layer.name for layer in dropped.layers]
    assert names[-5:] == ["fc1", "fc1_dropout", "fc2", "fc2_dropout", "predictions"]
    assert [dropped.get_layer(n).rate for n in ("fc1_dropout", "fc2_dropout")] == [0.5, 0.5]
    assert dropped.count_params() == plain.count_params()

    headless = build("vgg11", include_top=False, input_shape=SMALL, dropout=0.5)
    assert not any(isinstance(layer, layers.Dropout) for layer in headless.layers)


@pytest.mark.parametrize("options", [
    {"dropout": 1.0}, {"dropout": -0.1}, {"dropout": "0.5"}, {"batch_norm": "yes"}, {"pooling": "sum"},
])
def test_bad_options_raise(options):
    with pytest.raises(ArchitectureError):
        build("vgg11", include_top=False, input_shape=SMALL, **options)
