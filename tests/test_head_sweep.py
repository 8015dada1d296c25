"""Phase 1's solver (`tltoolkit.training.head`): the sweep, its selection and the Keras head it fills."""

import numpy as np
import pytest

from tltoolkit.errors import TltoolkitError
from tltoolkit.heads import dense_layers, head_model, set_standardisation
from tltoolkit.training import head
from tltoolkit.training.head import HeadSetting, fit_head, standardisation, sweep_settings


def blobs(n, d=12, classes=3, seed=0, spread=1.0):
    centres = np.random.default_rng(42).normal(0, 3, (classes, d)) + 50  # far from 0: standardisation matters
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    return (centres[labels] + rng.normal(0, spread * 3, (n, d))).astype("float32"), labels


def test_flags_fix_their_axis_of_the_sweep():
    assert [s.l2 for s in sweep_settings()] == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert {s.dropout for s in sweep_settings()} == {0.0}  # a linear head: L2 only
    assert {s.dropout for s in sweep_settings(hidden=(16,))} == {0.0, 0.5}
    assert sweep_settings(l2=0.5, dropout=0.2, learning_rate=3e-3) == [HeadSetting(0.5, 0.2, 3e-3)]


def test_a_dead_feature_does_not_blow_up_the_standardisation():
    features = np.ones((10, 3), "float32") * [0.0, 5.0, 1.0]
    features[:, 2] += np.arange(10)
    mean, variance = standardisation(features)
    np.testing.assert_allclose(mean, [0, 5, 5.5])
    np.testing.assert_allclose(variance, [2.75, 2.75, 8.25])  # ~0 variance -> the mean variance


def test_the_chosen_head_converges_and_the_keras_head_computes_it():
    x, y = blobs(300, spread=0.6)
    vx, vy = blobs(100, seed=1, spread=0.6)
    fit = fit_head(x, y, vx, vy, 3, sweep_settings(), seed=0)
    assert fit.scored_on == "validation" and fit.chosen.val_accuracy >= 0.95
    assert fit.chosen.val_loss == min(t.val_loss for t in fit.trials)
    assert "stopped improving on validation for 20 epochs" in fit.stopped
    assert [row["chosen"] for row in fit.table()].count("yes") == 1
    head = head_model((12,), 3, dropout=0.0, l2=fit.chosen.setting.l2)
    set_standardisation(head, fit.mean, fit.variance)
    for layer, (kernel, bias) in zip(dense_layers(head), fit.weights):
        layer.set_weights([kernel, bias])
    probabilities = head(vx, training=False).numpy()
    loss = -np.log(probabilities[np.arange(len(vy)), vy]).mean()
    assert loss == pytest.approx(fit.chosen.val_loss, rel=1e-4)  # the best epoch's weights, not the last


def test_a_hidden_head_sweeps_dropout_and_trains_too():
    x, y = blobs(300, spread=0.5)
    vx, vy = blobs(100, seed=1, spread=0.5)
    fit = fit_head(x, y, vx, vy, 3, sweep_settings(l2=1e-4, hidden=(8,)), hidden=(8,))
    assert len(fit.trials) == 2 and [w.shape for w, _ in fit.weights] == [(12, 8), (8, 3)]
    assert fit.chosen.val_accuracy >= 0.95


@pytest.mark.parametrize("cv_max, scored_on", [(2000, "5-fold cross-validation on the training images"),
                                              (100, "a held-out 20% of the training images")])
def test_without_validation_the_setting_is_cross_validated_or_held_out(monkeypatch, cv_max, scored_on):
    monkeypatch.setattr(head, "CV_MAX_IMAGES", cv_max)  # k-fold up to CV_MAX_IMAGES images, one holdout beyond
    x, y = blobs(200)
    fit = fit_head(x, y, None, None, 3, sweep_settings(), epochs=50)
    assert fit.scored_on.startswith(scored_on)
    logits = ((x - fit.mean) / np.sqrt(fit.variance)) @ fit.weights[0][0] + fit.weights[0][1]
    assert (logits.argmax(1) == y).mean() >= 0.95
    with pytest.raises(TltoolkitError, match="too few training images to choose"):
        fit_head(x[:3], np.array([0, 1, 2]), None, None, 3, sweep_settings())


def test_each_folds_heads_are_scored_only_on_images_they_did_not_train_on():
    # Random labels on 64-d noise: a weakly regularised head memorises what it trains on (training accuracy
    # ~1) but cannot beat chance on images it never saw. A fold scored on its own training images would
    # report the memorised accuracy.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 64)).astype("float32"), rng.integers(0, 2, 100)
    fit = fit_head(x, y, None, None, 2, [HeadSetting(1e-5, 0.0, 1e-2)], epochs=200, patience=200)
    assert fit.scored_on.startswith("5-fold") and fit.chosen.epochs == 200
    assert fit.chosen.val_accuracy < 0.7
    memorised = fit_head(x, y, x, y, 2, [HeadSetting(1e-5, 0.0, 1e-2)], epochs=200, patience=200)
    assert memorised.chosen.val_accuracy > 0.9  # scored on the images it trained on


def test_an_epoch_cap_that_stops_improvement_says_so():
    x, y = blobs(100)
    fit = fit_head(x, y, *blobs(50, seed=1), 3, sweep_settings(l2=1e-5), epochs=2)
    assert fit.stopped.startswith("reached the maximum of 2 epochs") and fit.trials[0].epochs == 2


def test_cross_validated_heads_train_until_their_own_objective_stops_falling():
    # No early stopping on the held-out folds: a strongly regularised head reaches its (near) minimum within
    # the budget and stops; a weakly regularised one on separable blobs keeps growing its weights for longer.
    x, y = blobs(200)
    fit = fit_head(x, y, None, None, 3, sweep_settings(), epochs=3000)
    by_l2 = {t.setting.l2: t for t in fit.trials}
    assert by_l2[0.1].epochs < 3000 and by_l2[0.1].epochs < by_l2[1e-5].epochs
    assert fit.chosen.setting.learning_rate == head.LEARNING_RATE["full batch"]
    assert fit.chosen.val_accuracy == max(t.val_accuracy for t in fit.trials)  # chosen by held-out accuracy


@pytest.mark.parametrize("cv_max, heads", [(2000, [(5, 5)]), (100, [(5, 1), (1, 4)])])
def test_out_of_fold_probabilities_come_from_heads_that_never_saw_the_image(monkeypatch, cv_max, heads):
    # Beyond CV_MAX_IMAGES the setting is chosen on the first fold, and only it trains on the other four.
    monkeypatch.setattr(head, "CV_MAX_IMAGES", cv_max)
    trained = []
    fold_heads = head._fold_heads
    monkeypatch.setattr(head, "_fold_heads", lambda x, y, classes, settings, held, *rest: trained.append(
        (len(settings), len(held))) or fold_heads(x, y, classes, settings, held, *rest))
    x, y = blobs(200, spread=0.6)
    probabilities, chosen = head.out_of_fold_probabilities(x, y, 3, sweep_settings())
    assert trained == heads and (probabilities.argmax(1) == y).mean() >= 0.95
    assert chosen.l2 in head.L2_GRID and np.allclose(probabilities.sum(1), 1)
    # Random labels on noise: heads that had trained on an image would have memorised it.
    rng = np.random.default_rng(0)
    noise, labels = rng.normal(size=(200, 64)).astype("float32"), rng.integers(0, 2, 200)
    probabilities, _ = head.out_of_fold_probabilities(noise, labels, 2, [HeadSetting(1e-5, 0.0, None)])
    assert (probabilities.argmax(1) == labels).mean() < 0.7
