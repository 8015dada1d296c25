"""ResNet v2 specifics (keras.applications parity: test_keras_parity.py): named strided shortcuts,
stochastic depth.

Parameter/MAC counts, stages and output shapes of every registered spec are checked in
test_registry.py.
"""

import keras
import numpy as np
import pytest
from keras import layers

from keras_parity import random_batch, weighted_layer_names, write_legacy_h5
from tltoolkit.architectures import ArchitectureError, build
from tltoolkit.architectures.common import drop_path_rates
from tltoolkit.architectures.layers import StochasticDepth
from tltoolkit.architectures.resnet_v2 import BLOCKS

SMALL = (32, 32, 3)


def test_strided_shortcuts_are_named_and_in_keras_positions():
    keras.backend.clear_session()
    theirs = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=SMALL)
    ours = build("resnet50v2", include_top=False, input_shape=SMALL)
    renamed = {i: (a.name, b.name) for i, (a, b) in enumerate(zip(ours.layers[1:], theirs.layers[1:]), 1)
               if a.name != b.name}
    assert sorted(ours_name for ours_name, _ in renamed.values()) == [
        "conv2_block3_0_pool", "conv3_block4_0_pool", "conv4_block6_0_pool"]
    for i, (_, theirs_name) in renamed.items():
        assert theirs_name.startswith("max_pooling2d")  # auto-named in keras.applications
        assert isinstance(ours.layers[i], layers.MaxPooling2D) and ours.layers[i].strides == (2, 2)


def test_drop_path_rates_rise_linearly_to_the_rate():
    rates = drop_path_rates(0.2, 16)
    assert rates[-1] == pytest.approx(0.2)
    np.testing.assert_allclose(np.diff(rates), 0.2 / 16)
    assert drop_path_rates(0.0, 4) == [0.0] * 4


def test_stochastic_depth_keeps_keras_weights(tmp_path):
    theirs = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=SMALL)
    model = build("resnet50v2", include_top=False, pooling="avg", input_shape=SMALL, drop_path_rate=0.5)

    merges = [layer for layer in model.layers if isinstance(layer, StochasticDepth)]
    names = [f"{stage}_block{b}_out" for stage, n in zip(("conv2", "conv3", "conv4", "conv5"), BLOCKS["resnet50v2"])
             for b in range(1, n + 1)]
    assert sorted(layer.name for layer in merges) == sorted(names)
    assert [model.get_layer(n).rate for n in names] == pytest.approx(drop_path_rates(0.5, len(names)))
    assert not any(isinstance(layer, layers.Add) for layer in model.layers)

    # The ImageNet files still load: same weighted layers in the same order.
    assert weighted_layer_names(model) == weighted_layer_names(theirs)
    path = tmp_path / "resnet50v2_notop.h5"
    write_legacy_h5(theirs, path)
    model.load_weights(str(path))
    for a, b in zip(model.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, b)

    # Training drops residual branches at random; inference is deterministic.
    x = random_batch(model, batch=2)
    inference = [keras.ops.convert_to_numpy(model(x, training=False)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    training = [keras.ops.convert_to_numpy(model(x, training=True)) for _ in range(6)]
    assert any(not np.allclose(training[0], t) for t in training[1:])


def test_no_stochastic_depth_by_default():
    model = build("resnet50v2", include_top=False, input_shape=SMALL)
    merges = [layer for layer in model.layers if layer.name.endswith("_out")]
    assert len(merges) == sum(BLOCKS["resnet50v2"])
    assert all(type(layer) is layers.Add for layer in merges)


@pytest.mark.parametrize("options", [{"drop_path_rate": 1.0}, {"drop_path_rate": -0.1},
                                     {"drop_path_rate": True}, {"pooling": "sum"}])
def test_bad_options_raise(options):
    with pytest.raises(ArchitectureError):
        build("resnet50v2", include_top=False, input_shape=SMALL, **options)
