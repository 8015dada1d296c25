"""Our builders against keras.applications, one registry-driven table (keras.applications' own tests
iterate over a `MODEL_LIST` the same way): every registered architecture that names a
keras.applications model is tested the moment it is registered.

For each: the same layers (by name, where keras names them all), the same weighted layers in the same
order, keras' weights transplanted one to one giving the same feature map and outputs, and a legacy
`.h5` file (the format of the published ImageNet files) loading topologically.
"""

import keras
import numpy as np
import pytest

from keras_parity import TOLERANCE, random_batch, randomize_batch_norm, weighted_layer_names, write_legacy_h5
from tltoolkit.architectures import all_specs, build, get_spec

# Every row builds a full-size network (keras' and ours): the slow set.
pytestmark = pytest.mark.slow

MODEL_LIST = [spec.id for spec in all_specs() if spec.keras_application]
SIZES = {"resnet50": 64}  # the others at the smallest input both accept
FAMILY_SIZES = {"inception": 75}
# Families whose stem ZeroPadding2D layers keras leaves unnamed (we name them): same layers, other names.
RENAMED_FAMILIES = {"densenet", "resnet_v2"}
# The legacy-file rows: each family's first keras model with and without the top, and VGG19's top.
LEGACY_ROWS = sorted({(next(s.id for s in all_specs(family) if s.keras_application), top)
                      for family in {get_spec(arch).family for arch in MODEL_LIST} for top in (True, False)}
                     | {("vgg19", True)})


def input_shape(arch):
    size = SIZES.get(arch, FAMILY_SIZES.get(get_spec(arch).family, 32))
    return (size, size, 3)


def keras_model(arch, include_top):
    keras.backend.clear_session()  # keras' unnamed layers get their fresh-session names
    application = getattr(keras.applications, get_spec(arch).keras_application)
    return application(weights=None, include_top=include_top, input_shape=input_shape(arch))


def outputs(model, layer_name, x):
    """The base's feature map and the model's output: softmax outputs are tiny, so both are compared."""
    probe = keras.Model(model.input, [model.get_layer(layer_name).output, model.outputs[0]])
    return [keras.ops.convert_to_numpy(y) for y in probe(x, training=False)]


def assert_same_outputs(ours, theirs, arch):
    x = random_batch(theirs)
    base = get_spec(arch).base_output
    for mine, expected in zip(outputs(ours, base, x), outputs(theirs, base, x), strict=True):
        assert mine.shape == expected.shape
        np.testing.assert_allclose(mine, expected, rtol=TOLERANCE, atol=TOLERANCE)


def test_the_table_covers_every_keras_application():
    assert len(MODEL_LIST) == 13 and {"vgg16", "resnet50", "resnet50v2", "densenet121", "inception_v3",
                                      "inception_resnet_v2"} <= set(MODEL_LIST)


@pytest.mark.parametrize("include_top", [True, False], ids=["top", "notop"])
@pytest.mark.parametrize("arch", MODEL_LIST)
def test_same_model_as_keras_applications(arch, include_top):
    theirs = keras_model(arch, include_top)
    # Built after keras' model in the same session: our names are explicit, not counter-made.
    ours = build(arch, include_top=include_top, input_shape=input_shape(arch))

    assert len(ours.layers) == len(theirs.layers)
    if get_spec(arch).family not in RENAMED_FAMILIES:
        assert [layer.name for layer in ours.layers[1:]] == [layer.name for layer in theirs.layers[1:]]
    assert weighted_layer_names(ours) == weighted_layer_names(theirs)
    randomize_batch_norm(theirs)  # so a misplaced BN shows in the outputs
    ours.set_weights(theirs.get_weights())  # raises on any shape difference, in topological order
    assert_same_outputs(ours, theirs, arch)


@pytest.mark.parametrize("arch,include_top", LEGACY_ROWS)
def test_legacy_h5_weights_load(arch, include_top, tmp_path):
    """keras.applications' files are legacy `.h5`, loaded topologically. Keras 2 wrote them with its
    counters starting at `conv2d_1`: the file here is written with names shifted the same way (a layer
    made first takes `conv2d`), so where keras leaves layers unnamed (Inception) the load cannot be by name."""
    keras.backend.clear_session()
    keras.layers.Conv2D(1, 1)
    theirs = getattr(keras.applications, get_spec(arch).keras_application)(
        weights=None, include_top=include_top, input_shape=input_shape(arch))
    randomize_batch_norm(theirs)
    path = tmp_path / f"{arch}_weights_tf_dim_ordering_tf_kernels.h5"
    write_legacy_h5(theirs, path)
    ours = build(arch, include_top=include_top, input_shape=input_shape(arch))
    ours.load_weights(str(path))

    if get_spec(arch).family == "inception":
        assert (weighted_layer_names(theirs)[0], weighted_layer_names(ours)[0]) == ("conv2d_1", "conv2d")
    else:  # every weight landed on the layer of the same name
        assert weighted_layer_names(ours) == weighted_layer_names(theirs)
    for mine, expected in zip(ours.weights, theirs.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(expected))
    assert_same_outputs(ours, theirs, arch)
