import keras
import numpy as np
import pytest

from tltoolkit.architectures import build
from tltoolkit.errors import TltoolkitError
from tltoolkit.heads import (attach_head, class_weights, copy_head_weights, dense_layers, grow_predictions,
                             head_layers, head_model, set_standardisation, transfer_head)


@pytest.fixture(scope="module")
def base():
    keras.utils.set_random_seed(1)
    return build("resnet20_cifar", include_top=False, input_shape=(32, 32, 3))


def test_head_on_cached_features_predicts_like_the_full_model(base):
    images = np.random.default_rng(0).uniform(-1, 1, (6, 32, 32, 3)).astype("float32")
    full = attach_head(base, 4, hidden=(16,), dropout=0.3, pooling="avg", l2=1e-4)
    features = keras.layers.GlobalAveragePooling2D()(base(images, training=False)).numpy()
    head = head_model(features.shape[1:], 4, hidden=(16,), dropout=0.3, pooling="avg", l2=1e-4)
    for i, layer in enumerate(dense_layers(head)):
        layer.set_weights([np.random.default_rng(i).normal(size=w.shape) for w in layer.get_weights()])
    rng = np.random.default_rng(9)
    set_standardisation(head, rng.normal(size=features.shape[1]), rng.uniform(0.5, 2, features.shape[1]))
    copy_head_weights(head, full)
    np.testing.assert_allclose(full(images, training=False).numpy(), head(features, training=False).numpy(),
                               atol=1e-5)
    assert full.layers[-1].name == "predictions" and full.output.shape[-1] == 4
    assert [layer.name for layer in head_layers(full)] == ["head_normalization", "head_dense1", "predictions"]
    assert len(full.losses) == 2  # L2 on both Dense kernels


def test_head_on_a_keras_application_and_a_saved_model(tmp_path):
    app = build("keras:MobileNetV3Small", include_top=False, input_shape=(32, 32, 3), pooling=None,
                include_preprocessing=False)
    model = attach_head(app, 3, pooling="max")
    assert model.output.shape == (None, 3)
    path = tmp_path / "saved.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # safe mode: only core layers
    regrown = attach_head(keras.Model(reloaded.input, reloaded.get_layer("head_max_pool").output), 5)
    assert regrown.output.shape == (None, 5)


def test_growing_keeps_the_old_classes_weights(base):
    old = attach_head(base, 3)
    new = attach_head(base, 5)
    fresh_kernel, fresh_bias = (w.copy() for w in new.get_layer("predictions").get_weights())
    assert transfer_head(old, new) == 2
    kernel, bias = new.get_layer("predictions").get_weights()
    old_kernel, old_bias = old.get_layer("predictions").get_weights()
    np.testing.assert_array_equal(kernel[:, :3], old_kernel)
    np.testing.assert_array_equal(bias[:3], old_bias)
    np.testing.assert_array_equal(kernel[:, 3:], fresh_kernel[:, 3:])
    np.testing.assert_array_equal(bias[3:], fresh_bias[3:])
    with pytest.raises(TltoolkitError, match="only new classes"):
        grow_predictions(np.zeros((4, 3)), np.zeros(3), np.zeros((4, 2)), np.zeros(2))


def test_balanced_class_weights_match_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 10 + [1] * 30 + [2] * 5)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    got = class_weights(np.bincount(labels))
    np.testing.assert_allclose([got[i] for i in range(3)], expected)
    assert class_weights({0: 4, 1: 0})[1] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=1), "at least 2 classes"), (dict(pooling="mean"), "unknown pooling"),
    (dict(dropout=1.0), "dropout"), (dict(hidden=(0,)), "positive")])
def test_bad_head_options_are_one_line_errors(kwargs, message):
    with pytest.raises(TltoolkitError, match=message):
        head_model((8,), **{"num_classes": 3, **kwargs})
