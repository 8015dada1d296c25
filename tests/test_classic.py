"""LeNet-5, AlexNet, ZFNet and NiN specifics: the papers' layouts, options and custom layers.

Parameter/MAC counts, stages and output shapes of every registered spec (at default options) are
checked in test_registry.py.
"""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltoolkit.architectures import ArchitectureError, build, get_spec, load_model
from tltoolkit.architectures.classic import C3_TABLE
from tltoolkit.architectures.common import max_pool
from tltoolkit.architectures.layers import (
    AdaptiveAveragePooling,
    ChannelGather,
    EuclideanRBF,
    LocalResponseNormalization,
    ResidualScale,
    StochasticDepth,
    SubsampleZeroPad,
    lecun_tanh,
)
from tltoolkit.architectures.profile import count_macs, layer_macs
from tltoolkit.architectures.stages import spec_stage_ranges, trainable_count


def params_of(model, name):
    return model.get_layer(name).count_params()


def output_sizes(model, names):
    return [model.get_layer(name).output.shape[1] for name in names]


def assert_round_trip(model, tmp_path, x):
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    return loaded


# LeNet-5 -------------------------------------------------------------------------------------

def test_lenet5_1998_counts_are_the_papers():
    model = build("lenet5")
    # §II-B: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 trainable parameters.
    assert params_of(model, "block1_conv") == 156
    assert params_of(model, "block1_subsample") == 12
    assert params_of(model, "block2_conv") == 1516
    assert params_of(model, "block2_subsample") == 32
    assert params_of(model, "block3_conv") == 48_120
    assert params_of(model, "fc1") == 10_164
    assert trainable_count(model) == 60_000
    assert model.get_layer("predictions").non_trainable_weights[0].shape == (84, 10)
    assert output_sizes(model, ["block1_conv", "block1_pool", "block2_conv", "block2_pool", "block3_conv"]) == [
        28, 14, 10, 5, 1]
    assert layer_macs(model.get_layer("block2_conv")) == 10 * 10 * 25 * sum(len(c) for c in C3_TABLE)


def test_lenet5_c3_follows_the_connection_table():
    c3 = build("lenet5").get_layer("block2_conv")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 14, 14, 6)).astype("float32")
    base = c3(x).numpy()
    for channel in range(6):
        poked = x.copy()
        poked[..., channel] += 1.0
        changed = np.abs(c3(poked).numpy() - base).max(axis=(0, 1, 2)) > 1e-6
        expected = [channel in inputs for inputs in C3_TABLE]
        assert changed.tolist() == expected, channel


def test_lenet5_output_is_softmax_of_negative_rbf_penalties():
    model = build("lenet5", num_classes=4)
    features = keras.Model(model.input, model.get_layer("fc1").output)
    x = np.random.default_rng(1).uniform(0, 1, (3, 32, 32, 1)).astype("float32")
    f = features(x).numpy()
    prototypes = model.get_layer("predictions").get_weights()[0]
    assert set(np.unique(prototypes)) <= {-1.0, 1.0}
    penalties = ((f[:, :, None] - prototypes[None]) ** 2).sum(axis=1)
    expected = np.exp(-penalties - (-penalties).max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_lecun_tanh_maps_one_to_one():
    # The paper picks A = 1.7159 and S = 2/3 so that f(1) = 1 and f(-1) = -1.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(lecun_tanh(np.array([1.0, -1.0]))), [1, -1], atol=1e-4)


def test_lenet5_modern_variant():
    model = build("lenet5", variant="modern")
    assert model.count_params() == trainable_count(model) == 61_706
    assert isinstance(model.get_layer("block2_conv"), keras.layers.Conv2D)
    assert isinstance(model.get_layer("predictions"), keras.layers.Dense)
    assert round(count_macs(model) / 1e9, 4) == 0.0004
    assert [r.name for r in spec_stage_ranges(model, get_spec("lenet5"))] == ["block1", "block2", "block3", "head"]
    with pytest.raises(ArchitectureError, match="variant"):
        build("lenet5", variant="1989")


@pytest.mark.parametrize("variant", ["1998", "modern"])
def test_lenet5_trains_and_round_trips(variant, tmp_path):
    keras.utils.set_random_seed(0)
    model = build("lenet5", variant=variant)
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 1)).astype("float32")
    y = np.arange(8) % 10
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert_round_trip(model, tmp_path, x)


# AlexNet, ZFNet ------------------------------------------------------------------------------

def test_alexnet_two_tower_is_the_papers_grouped_layout():
    model = build("alexnet", two_tower=True)
    assert model.input.shape[1:] == (224, 224, 3)
    assert model.count_params() == 60_965_224
    assert round(count_macs(model) / 1e9, 4) == 0.7244
    # Towers: conv2, conv4 and conv5 see only their own GPU's half of the maps (Fig. 2).
    kernels = {name: model.get_layer(name).kernel.shape for name in
               ("block1_conv", "block2_conv", "block3_conv", "block4_conv", "block5_conv")}
    assert kernels == {"block1_conv": (11, 11, 3, 96), "block2_conv": (5, 5, 48, 256),
                       "block3_conv": (3, 3, 256, 384), "block4_conv": (3, 3, 192, 384),
                       "block5_conv": (3, 3, 192, 256)}
    norms = [layer.name for layer in model.layers if isinstance(layer, LocalResponseNormalization)]
    assert norms == ["block1_norm", "block2_norm"]
    assert output_sizes(model, ["block1_conv", "block1_pool", "block2_pool", "block5_pool"]) == [55, 27, 13, 6]
    stages = spec_stage_ranges(model, get_spec("alexnet"))
    assert [r.name for r in stages] == ["block1", "block2", "block3", "block4", "block5", "head"]


def test_alexnet_options_are_checked():
    with pytest.raises(ArchitectureError, match="at least 63"):
        build("alexnet", two_tower=True, input_shape=(60, 60, 3))
    with pytest.raises(ArchitectureError, match="two_tower"):
        build("alexnet", two_tower="yes")
    with pytest.raises(ArchitectureError, match="at least 63"):
        build("alexnet", input_shape=(62, 62, 3))


def test_alexnet_default_is_torchvisions_layout():
    model = build("alexnet", include_top=False)
    assert output_sizes(model, ["block1_conv", "block1_pool", "block2_pool", "block5_pool"]) == [55, 27, 13, 6]
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in model.layers)
    # Dropout on the inputs of fc1 and fc2, as torchvision's classifier.
    top = [layer.name for layer in build("alexnet", input_shape=(63, 63, 3)).layers[-7:]]
    assert top == ["fc_pool", "flatten", "fc1_dropout", "fc1", "fc2_dropout", "fc2", "predictions"]


def test_local_response_normalization_is_the_papers():
    x = np.random.default_rng(2).normal(0, 10, (2, 5, 5, 12)).astype("float32")
    actual = LocalResponseNormalization()(x).numpy()
    expected = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    # §3.3: b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta, k=2, n=5.
    squares = np.stack([(x[..., max(0, i - 2):i + 3] ** 2).sum(-1) for i in range(12)], axis=-1)
    np.testing.assert_allclose(actual, x / (2 + 1e-4 * squares) ** 0.75, rtol=1e-5)


def torch_adaptive_avg_pool(x, out):
    """torch.nn.AdaptiveAvgPool2d's definition, spelled out."""
    h, w = x.shape[1:3]
    result = np.zeros((x.shape[0], out, out, x.shape[3]), x.dtype)
    for i in range(out):
        for j in range(out):
            rows = slice(i * h // out, -(-(i + 1) * h // out))
            cols = slice(j * w // out, -(-(j + 1) * w // out))
            result[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    return result


@pytest.mark.parametrize("size", [1, 2, 4, 6, 7, 13])
def test_adaptive_average_pooling_is_torchs(size):
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype("float32")
    actual = AdaptiveAveragePooling(6)(x).numpy()
    np.testing.assert_allclose(actual, torch_adaptive_avg_pool(x, 6), rtol=1e-5, atol=1e-6)
    if size == 6:
        np.testing.assert_allclose(actual, x, rtol=1e-6)


def test_caffe_pooling_rounds_up():
    for height, width in [(54, 54), (27, 27), (13, 14), (110, 110)]:
        x = keras.Input((height, width, 4))
        pooled = max_pool(x, caffe=True, name="pool")
        assert tuple(pooled.shape[1:3]) == (-(-(height - 3) // 2) + 1, -(-(width - 3) // 2) + 1)
        assert tuple(max_pool(x, caffe=False, name="pool").shape[1:3]) == ((height - 3) // 2 + 1, (width - 3) // 2 + 1)


def test_zfnet_reproduces_figure_3():
    model = build("zfnet", include_top=False)
    names = ["block1_conv", "block1_pool", "block2_conv", "block2_pool", "block3_conv", "block4_conv",
             "block5_conv", "block5_pool"]
    assert output_sizes(model, names) == [110, 55, 26, 13, 13, 13, 13, 6]
    assert [model.get_layer(n).output.shape[-1] for n in names[::2]] == [96, 256, 384, 256]
    # Contrast normalization follows the pooling of the first two layers.
    order = [layer.name for layer in model.layers]
    assert order.index("block1_norm") == order.index("block1_pool") + 1
    assert order.index("block2_norm") == order.index("block2_pool") + 1


def test_alexnet_two_tower_round_trips(tmp_path):
    model = build("alexnet", two_tower=True, include_top=False, pooling="avg", input_shape=(63, 63, 3))
    x = np.random.default_rng(3).uniform(0, 1, (2, 63, 63, 3)).astype("float32")
    assert_round_trip(model, tmp_path, x)


def test_custom_layers_round_trip(tmp_path):
    inputs = keras.Input((5, 5, 6))
    x = ChannelGather([5, 0, 0, 3], name="gather")(inputs)
    x = LocalResponseNormalization(name="norm")(x)
    x = AdaptiveAveragePooling(3, name="fc_pool")(x)
    model = keras.Model(inputs, x)
    loaded = assert_round_trip(model, tmp_path, np.random.default_rng(4).normal(size=(2, 5, 5, 6)).astype("float32"))
    assert loaded.get_layer("gather").indices == (5, 0, 0, 3)


# Where each custom layer lived before tltoolkit/architectures/layers.py: a saved model names that module.
FORMER_MODULES = {"ChannelGather": "classic", "LocalResponseNormalization": "classic",
                  "AdaptiveAveragePooling": "classic", "EuclideanRBF": "classic", "StochasticDepth": "common",
                  "SubsampleZeroPad": "resnet_cifar", "ResidualScale": "inception"}


def test_models_saved_before_the_layers_moved_still_load(tmp_path):
    """A `.keras` file records each layer's module as well as its registered name `tltoolkit>NAME`;
    files saved when the layers lived in the family modules (one of them gone) load in safe mode."""
    inputs = keras.Input((8, 8, 6))
    x = ChannelGather([5, 0, 0, 3], name="gather")(inputs)
    x = LocalResponseNormalization(name="norm")(x)
    x = AdaptiveAveragePooling(4, name="fc_pool")(x)
    x = StochasticDepth(0.2, name="drop")([x, x])
    x = SubsampleZeroPad(8, 2, name="shortcut")(x)
    x = ResidualScale(0.17, name="scale")([x, x])
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(3, activation=lecun_tanh)(x)
    x = EuclideanRBF(4, name="rbf")(x)
    model = keras.Model(inputs, x)
    saved = tmp_path / "new.keras"
    model.save(saved)
    with zipfile.ZipFile(saved) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    renamed = 0
    for layer in config["config"]["layers"]:
        if layer["class_name"] in FORMER_MODULES:
            assert layer["module"] == "tltoolkit.architectures.layers"
            layer["module"] = f"tltoolkit.architectures.{FORMER_MODULES[layer['class_name']]}"
            renamed += 1
    assert renamed == len(FORMER_MODULES)
    files["config.json"] = json.dumps(config).encode()
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(old, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    loaded = load_model(old)
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 6)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert loaded.get_layer("scale").scale == 0.17 and loaded.get_layer("drop").rate == 0.2


# Network in Network --------------------------------------------------------------------------

def test_nin_is_the_caffe_model():
    model = build("nin", num_classes=7)
    assert output_sizes(model, ["block1_conv", "block1_pool", "block2_pool", "block3_pool", "block4_mlp1"]) == [
        54, 27, 13, 6, 6]
    assert [layer.name for layer in model.layers[-3:]] == ["conv_preds", "avg_pool", "predictions"]
    assert model.get_layer("conv_preds").kernel.shape == (1, 1, 1024, 7)
    assert model.count_params() == 7_595_176 - 1_025_000 + (1024 * 7 + 7)
    assert isinstance(model.get_layer("block3_dropout"), keras.layers.Dropout)


def test_nin_without_top_ends_at_the_last_shared_mlpconv():
    model = build("nin", include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert model.output.shape[-1] == 1024
    assert model.layers[-2].name == get_spec("nin").base_output
