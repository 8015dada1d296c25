"""Temperature scaling: the fit recovers a known temperature, ECE follows its definition and drops after
scaling an over-confident model, and `with_temperature` turns a real Keras classifier (a Dense softmax
head, also nested as finetune saves it) into softmax(logits / T) that survives saving."""

import keras
import numpy as np
import pytest
from PIL import Image

from tltoolkit.architectures import load_model
from tltoolkit.calibration import (expected_calibration_error, fit_temperature, logits_model, negative_log_likelihood,
                                   reliability_diagram, softmax, temperature_of, with_temperature)
from tltoolkit.errors import TltoolkitError
from tltoolkit.heads import attach_head


def sampled(n, temperature, classes=5, seed=0):
    """Logits and labels drawn from softmax(logits / temperature): `temperature` is the calibrated one."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    probabilities = softmax(logits, temperature)
    labels = (probabilities.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


def test_fit_recovers_the_temperature_labels_were_drawn_with():
    logits, labels = sampled(20000, 2.5)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.05)
    assert negative_log_likelihood(logits, labels, t) < min(negative_log_likelihood(logits, labels, t * f)
                                                            for f in (0.9, 1.1))


def test_fit_stays_in_range_when_every_label_is_the_top_class():
    logits = np.random.default_rng(1).normal(0, 1, (50, 3))
    t = fit_temperature(logits, logits.argmax(1))  # NLL falls as T -> 0: the edge of the range
    assert t == pytest.approx(0.05, rel=1e-3)


def test_ece_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    # bin (0.8667, 0.9333]: accuracy 0.5, confidence 0.9; bin (0.5333, 0.6]: accuracy 1, confidence 0.6
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert expected_calibration_error(probabilities, labels, bins=1) == pytest.approx(abs(0.75 - 0.75))


def test_scaling_an_overconfident_model_lowers_ece():
    logits, labels = sampled(6000, 1.0, seed=2)
    overconfident = 3.0 * logits  # the same ranking, three times too sharp
    t = fit_temperature(overconfident[:3000], labels[:3000])
    before = expected_calibration_error(softmax(overconfident[3000:]), labels[3000:])
    after = expected_calibration_error(softmax(overconfident[3000:], t), labels[3000:])
    assert t == pytest.approx(3.0, rel=0.1)
    assert after < 0.03 < before


def test_bad_labels_are_one_line_errors():
    with pytest.raises(TltoolkitError, match="class ids 0..2"):
        fit_temperature(np.zeros((2, 3)), [0, 3])
    with pytest.raises(TltoolkitError, match="non-empty"):
        expected_calibration_error(np.zeros((0, 3)), [])


def test_reliability_diagram_is_a_png(tmp_path):
    logits, labels = sampled(500, 1.0)
    path = tmp_path / "reliability.png"
    ece = reliability_diagram({"before": softmax(3 * logits), "after": softmax(logits)}, labels, path)
    assert ece == pytest.approx(expected_calibration_error(softmax(logits), labels))
    assert Image.open(path).size[0] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["reliability.png"]  # no temporary left


def finetune_like(num_classes=3):
    """uint8 pixels -> float -> [base -> head] as finetune saves it: the classifier is a nested model,
    also called by a second (training) model, as in training.phases.full_model."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    base = keras.Model(inputs, x, name="tiny_base")
    classifier = attach_head(base, num_classes, dropout=0.0)
    pixels = keras.Input((12, 12, 3), dtype="uint8", name="pixels")
    to_float = keras.layers.Rescaling(1 / 255, name="to_float")(pixels)
    keras.Model(pixels, classifier(keras.layers.RandomFlip()(to_float)), name="training")
    return keras.Model(pixels, classifier(to_float), name="model")


def images(n=6):
    return np.random.default_rng(3).integers(0, 256, (n, 12, 12, 3)).astype("uint8")


@pytest.mark.parametrize("make", [finetune_like, lambda: keras.Sequential(
    [keras.Input((12, 12, 3)), keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])])
def test_with_temperature_is_softmax_of_logits_over_t(make, tmp_path):
    model = make()
    x = images()
    logits = np.asarray(logits_model(model)(x))
    np.testing.assert_allclose(softmax(logits), np.asarray(model(x)), atol=1e-6)  # the logits are the model's
    calibrated = with_temperature(model, 2.7)
    expected = softmax(logits, 2.7)
    np.testing.assert_allclose(np.asarray(calibrated(x)), expected, atol=1e-6)
    assert (np.asarray(calibrated(x)).argmax(1) == np.asarray(model(x)).argmax(1)).all()
    assert temperature_of(calibrated) == 2.7 and temperature_of(model) == 1.0
    calibrated.save(tmp_path / "calibrated.keras")
    loaded = load_model(tmp_path / "calibrated.keras")  # safe mode: the layer is registered
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, atol=1e-6)
    # fitting again replaces the temperature rather than stacking a second one
    np.testing.assert_allclose(np.asarray(with_temperature(loaded, 0.5)(x)), softmax(logits, 0.5), atol=1e-5)


def test_a_model_without_a_softmax_classifier_is_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid", name="multilabel")(inputs))
    with pytest.raises(TltoolkitError, match="ends in Dense 'multilabel', not a Dense softmax classifier"):
        with_temperature(model, 2.0)
    with pytest.raises(TltoolkitError, match="positive"):
        with_temperature(finetune_like(), 0.0)
