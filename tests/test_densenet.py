"""DenseNet specifics (keras.applications parity: test_keras_parity.py): named stem, growth rate.

Parameter/MAC counts, stages and output shapes of every registered spec are checked in
test_registry.py.
"""

import re

import keras
import pytest
from keras import layers

from tltoolkit.architectures import ArchitectureError, build
from tltoolkit.architectures.densenet import BLOCKS

SMALL = (32, 32, 3)
AUTO_NAME = re.compile(r"^(zero_padding2d|conv2d|batch_normalization|activation|concatenate|"
                       r"max_pooling2d|average_pooling2d|dense)(_\d+)?$")


def test_every_layer_is_named():
    """keras.applications' two auto-named stem paddings are named here; nothing else differs."""
    keras.backend.clear_session()
    theirs = keras.applications.DenseNet121(weights=None, include_top=False, input_shape=SMALL)
    keras.backend.clear_session()
    ours = build("densenet121", include_top=False, input_shape=SMALL)
    assert not [layer.name for layer in ours.layers[1:] if AUTO_NAME.match(layer.name)]
    renamed = {i: (a.name, b.name) for i, (a, b) in enumerate(zip(ours.layers, theirs.layers))
               if a.name != b.name}
    assert renamed == {0: ("input", theirs.layers[0].name), 1: ("conv1_pad", "zero_padding2d"),
                       5: ("pool1_pad", "zero_padding2d_1")}


def test_growth_rate_sets_layer_widths():
    k = 12
    model = build("densenet121", include_top=False, input_shape=SMALL, growth_rate=k)
    assert model.get_layer("conv1_conv").filters == 2 * k
    assert model.get_layer("conv2_block1_1_conv").filters == 4 * k
    assert model.get_layer("conv5_block16_2_conv").filters == k
    channels = 2 * k
    for i, num_layers in enumerate(BLOCKS["densenet121"]):
        channels += num_layers * k
        if i < 3:
            channels //= 2
    assert model.output.shape[-1] == channels == 384


def test_default_growth_rate_is_the_papers():
    default = build("densenet121", include_top=False, input_shape=SMALL)
    explicit = build("densenet121", include_top=False, input_shape=SMALL, growth_rate=32)
    assert default.count_params() == explicit.count_params() == 7_037_504
    assert not any(isinstance(layer, layers.Dropout) for layer in default.layers)


@pytest.mark.parametrize("options", [{"growth_rate": 0}, {"growth_rate": 12.5}, {"growth_rate": True},
                                     {"pooling": "sum"}])
def test_bad_options_raise(options):
    with pytest.raises(ArchitectureError):
        build("densenet121", include_top=False, input_shape=SMALL, **options)
