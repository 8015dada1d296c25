"""Inception family specifics: aux heads, stage cuts, Inception-v4 shapes (keras.applications parity: test_keras_parity.py).

Generic checks (parameter and MAC counts, stage names resolving, forward shapes) are in test_registry.py.
"""

import keras
import numpy as np
import pytest

from tltoolkit._keras_internals import inbound_nodes, producer
from tltoolkit.architectures import ArchitectureError, build, get_spec
from tltoolkit.architectures.layers import ResidualScale

SMALL = (75, 75, 3)  # keras.applications' minimum for both


def _batch(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype("float32")


def _inbound(layer):
    return {producer(t).name for node in inbound_nodes(layer) for t in node.input_tensors}


# The single layer each stage reads from the stages before it: where a feature cache can cut.
STAGE_INPUTS = {
    "googlenet": ["input", "pool1", "pool2", "inception3a", "pool3", "inception4a", "inception4b",
                  "inception4c", "inception4d", "pool4", "inception5a"],
    "inception_v3": ["input", "max_pooling2d_1"] + [f"mixed{i}" for i in range(10)],
    "inception_v4": ["input", "mixed_5a", "mixed_5e", "mixed_6a", "mixed_6h", "mixed_7a"],
    "inception_resnet_v2": ["input", "max_pooling2d_1", "mixed_5b", "block35_10_ac", "mixed_6a",
                            "block17_20_ac", "mixed_7a", "custom_scale_layer_39"],
}


@pytest.mark.parametrize("arch", sorted(STAGE_INPUTS))
def test_every_stage_boundary_is_a_single_tensor_cut(arch):
    """Layers from a stage's first layer on read the earlier layers only through one tensor, so
    freezing `layers[:first]` freezes exactly the earlier stages and caching that tensor suffices."""
    spec = get_spec(arch)
    model = build(arch, include_top=False, input_shape=(spec.min_size, spec.min_size, 3))
    index = {layer.name: i for i, layer in enumerate(model.layers)}
    cuts = []
    for _, first in spec.stages:
        start = index[first]
        crossing = set().union(*(_inbound(layer) for layer in model.layers[start:]))
        cuts.append(sorted(name for name in crossing if index[name] < start))
    assert cuts == [[name] for name in STAGE_INPUTS[arch]]
    assert model.layers[-1].name == spec.base_output


def test_googlenet_matches_torchvision_map_sizes():
    model = build("googlenet", include_top=False)
    sizes = {name: model.get_layer(name).output.shape[1:] for name in
             ("conv1_relu", "pool1", "pool2", "inception3b", "pool3", "inception4e", "pool4", "inception5b")}
    assert sizes == {"conv1_relu": (112, 112, 64), "pool1": (56, 56, 64), "pool2": (28, 28, 192),
                     "inception3b": (28, 28, 480), "pool3": (14, 14, 480), "inception4e": (14, 14, 832),
                     "pool4": (7, 7, 832), "inception5b": (7, 7, 1024)}
    # torchvision's "5x5" branch is a 3x3 conv
    assert model.get_layer("inception3a_branch3_1_conv").kernel_size == (3, 3)


def test_googlenet_aux_logits():
    plain = build("googlenet", input_shape=(64, 64, 3))
    model = build("googlenet", input_shape=(64, 64, 3), aux_logits=True)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == 13_004_888  # torchvision's 6,624,904 plus its two InceptionAux heads
    assert model.count_params() - plain.count_params() == 13_004_888 - 6_624_904 + 2 * 128 * 2
    outputs = model(_batch((64, 64, 3)))
    assert [tuple(o.shape) for o in outputs] == [(2, 1000)] * 3
    assert model.output_names == ["predictions", "aux1_predictions", "aux2_predictions"]

    with pytest.raises(ArchitectureError, match="include_top"):
        build("googlenet", include_top=False, aux_logits=True)


def test_inception_v3_aux_logits():
    model = build("inception_v3", aux_logits=True, num_classes=10)
    assert [tuple(t.shape) for t in model.outputs] == [(None, 10), (None, 10)]
    assert model.output_names == ["predictions", "aux_predictions"]
    default = build("inception_v3", aux_logits=True)
    trainable = sum(int(np.prod(v.shape)) for v in default.trainable_weights)
    gammas = sum(layer.weights[0].shape[0] for layer in default.layers
                 if isinstance(layer, keras.layers.BatchNormalization))
    # torchvision's count (27,161,264, AuxLogits included) has BN gammas; keras' BNs have none
    assert trainable + gammas == 27_161_264
    assert default.count_params() == 27_179_376

    with pytest.raises(ArchitectureError, match="at least 299"):
        build("inception_v3", aux_logits=True, input_shape=SMALL)
    with pytest.raises(ArchitectureError, match="include_top"):
        build("inception_v3", include_top=False, aux_logits=True)


def test_inception_v4_shapes_at_minimum_size():
    model = build("inception_v4", include_top=False, input_shape=SMALL)
    widths = {name: model.get_layer(name).output.shape[-1] for name in
              ("mixed_5a", "mixed_5e", "mixed_6a", "mixed_6h", "mixed_7a", "mixed_7d")}
    assert widths == {"mixed_5a": 384, "mixed_5e": 384, "mixed_6a": 1024, "mixed_6h": 1024,
                      "mixed_7a": 1536, "mixed_7d": 1536}  # paper, Figure 9
    assert tuple(model(_batch(SMALL)).shape) == (2, 1, 1, 1536)

    top = build("inception_v4", input_shape=SMALL, num_classes=10)
    assert [layer.name for layer in top.layers[-3:]] == ["avg_pool", "top_dropout", "predictions"]
    assert top.get_layer("top_dropout").rate == 0.2
    assert tuple(top(_batch(SMALL)).shape) == (2, 10)


def test_residual_scale_round_trips_through_keras_serialization():
    layer = ResidualScale(0.17, name="custom_scale_layer")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ResidualScale) and restored.scale == 0.17
    a, b = np.ones((1, 2, 2, 3), "float32"), np.full((1, 2, 2, 3), 2.0, "float32")
    np.testing.assert_allclose(np.asarray(restored([a, b])), 1.34)
