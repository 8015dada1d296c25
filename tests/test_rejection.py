"""Rejection: the scores, the coverage threshold, AUROC against scikit-learn's, and the score carried by a
real Keras classifier through .keras (safe mode), TFLite and ONNX."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.test_calibration import finetune_like, images
from tltoolkit.architectures import load_model
from tltoolkit.calibration import logits_model, softmax
from tltoolkit.errors import TltoolkitError
from tltoolkit.rejection import (DEFAULT_COVERAGE, DEFAULT_SCORE, auroc, check_coverage, false_positive_rate,
                                 fit_rejection, rejection_of, score, score_summary, scored_model, settings,
                                 threshold_for_coverage, threshold_of, with_rejection)

pytestmark = [pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")]


def test_scores():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.4, 0.3]])
    np.testing.assert_allclose(score(logits, "msp", 2.0), softmax(logits, 2.0).max(1))
    np.testing.assert_allclose(score(logits, "energy", 2.0), 2.0 * np.log(np.exp(logits / 2.0).sum(1)))
    assert score(logits, "energy")[0] > score(logits, "energy")[1]  # the confident row is "more known"
    with pytest.raises(TltoolkitError, match="unknown rejection score 'entropy'; use one of msp, energy"):
        score(logits, "entropy")


def test_threshold_keeps_the_coverage():
    scores = np.random.default_rng(0).normal(size=200)
    for coverage in (0.5, 0.95, 0.999, 1.0):
        threshold = threshold_for_coverage(scores, coverage)
        kept = np.mean(scores >= threshold)
        assert coverage <= kept < coverage + 1 / 200 + 1e-9
    assert threshold_for_coverage(scores, 1.0) == pytest.approx(scores.min(), abs=1e-5)


@pytest.mark.parametrize("coverage", [0, -0.1, 1.5])
def test_coverage_outside_zero_one_is_a_one_line_error(coverage):
    with pytest.raises(TltoolkitError, match=r"--coverage must be in \(0, 1\]") as error:
        threshold_for_coverage(np.ones(4), coverage)
    assert "\n" not in str(error.value)
    assert check_coverage(1) == 1.0


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    known, unknown = rng.integers(0, 6, 300).astype(float) + 0.7, rng.integers(0, 6, 200).astype(float)
    known[:50] = 3.0  # ties across the two sets
    labels = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    assert auroc(known, unknown) == pytest.approx(roc_auc_score(labels, np.r_[known, unknown]), abs=1e-12)
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5
    assert false_positive_rate(np.array([0.1, 0.5, 0.9, 1.0]), 0.9) == 0.5


@pytest.mark.parametrize("kind", ["msp", "energy"])
def test_scored_model_outputs_probabilities_and_score(kind, tmp_path):
    model = finetune_like()
    x = images()
    logits = np.asarray(logits_model(model)(x))
    scored = with_rejection(model, 1.6, kind, threshold=0.3, coverage=0.95)
    probabilities, scores = (np.asarray(o) for o in scored(x))
    np.testing.assert_allclose(probabilities, softmax(logits, 1.6), atol=1e-6)
    np.testing.assert_allclose(scores, score(logits, kind, 1.6), atol=1e-5)
    scored.save(tmp_path / "scored.keras")
    loaded = load_model(tmp_path / "scored.keras")
    assert rejection_of(loaded) == {"temperature": 1.6, "score": kind, "threshold": 0.3, "coverage": 0.95,
                                    "quantiles": None}
    assert rejection_of(model) is None
    np.testing.assert_allclose(np.asarray(loaded(x)[1]), scores, atol=1e-6)
    # a second fit replaces the layer (a scored model has two outputs from one layer)
    again = with_rejection(loaded, 1.0, "msp")
    np.testing.assert_allclose(np.asarray(again(x)[1]), softmax(logits).max(1), atol=1e-6)


def test_scored_model_converts_to_tflite_and_onnx(tmp_path):
    """The exporters tltoolkit.export uses, on a scored model: both outputs survive conversion."""
    import onnxruntime

    from tltoolkit.export import _interpreter, _write_onnx, _write_tflite

    scored = with_rejection(finetune_like(), 1.6, "energy", threshold=0.3)
    x = images(1)
    expected = [np.asarray(o) for o in scored(x)]
    _write_tflite(scored, tmp_path / "m.tflite", None, None, None)
    interpreter = _interpreter(model_path=str(tmp_path / "m.tflite"))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    outputs = sorted((interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()), key=np.ndim)
    np.testing.assert_allclose(outputs[1], expected[0], atol=1e-5)
    np.testing.assert_allclose(outputs[0], expected[1], atol=1e-5)

    _write_onnx(scored, tmp_path / "m.onnx", None, None, None)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(outputs[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(outputs[1], expected[1], atol=1e-5)


def test_fitted_rejection_is_stored_in_a_one_output_model_and_derives_other_coverages(tmp_path):
    """What finetune and `calibrate` store: the temperature, the threshold for the coverage and the
    validation scores, in a model that still returns only probabilities; its scored twin returns the
    score, and another coverage's threshold comes from the stored scores."""
    model = finetune_like()
    x = images(40)
    logits = np.asarray(logits_model(model)(x))
    labels = np.random.default_rng(4).integers(0, 3, 40)
    fit = fit_rejection(logits, labels, coverage=0.9, kind="msp")
    assert fit["temperature"] > 0 and fit["images"] == 40 and len(fit["quantiles"]) == 40
    val_scores = score(logits, "msp", fit["temperature"])
    assert fit["threshold"] == pytest.approx(np.sort(val_scores)[::-1][35], abs=1e-5)  # the 36th highest of 40
    kept = with_rejection(model, **settings(fit), scored=False)
    kept.save(tmp_path / "kept.keras")
    loaded = load_model(tmp_path / "kept.keras")
    assert len(loaded.outputs) == 1
    np.testing.assert_allclose(np.asarray(loaded(x)), softmax(logits, fit["temperature"]), atol=1e-6)
    assert rejection_of(loaded) == settings(fit)
    assert threshold_of(loaded) == fit["threshold"]
    assert threshold_of(loaded, 0.5) == pytest.approx(np.sort(val_scores)[::-1][19], abs=1e-5)  # 20th highest of 40
    probabilities, scores = (np.asarray(o) for o in scored_model(loaded)(x))
    np.testing.assert_allclose(scores, val_scores, atol=1e-6)
    # a model without stored scores: the maximum softmax probability, and no threshold to derive
    np.testing.assert_allclose(np.asarray(scored_model(model)(x)[1]), softmax(logits).max(1), atol=1e-6)
    assert threshold_of(model) is None
    with pytest.raises(TltoolkitError, match="carries no validation scores .* tltoolkit calibrate") as error:
        threshold_of(model, 0.9)
    assert "\n" not in str(error.value)


def test_many_validation_scores_are_kept_as_quantiles():
    scores = np.random.default_rng(5).normal(size=50_000)
    summary = score_summary(scores)
    assert len(summary) == 1001 and summary == sorted(summary)
    kept = np.mean(scores >= threshold_for_coverage(summary, 0.95))
    assert abs(kept - 0.95) < 0.002


def test_finetune_defaults_are_the_measured_ones():
    from tltoolkit.training.config import DEFAULTS

    assert (DEFAULTS["coverage"], DEFAULTS["rejection_score"]) == (DEFAULT_COVERAGE, DEFAULT_SCORE)
