"""Rejection: the scores, the coverage threshold, AUROC against scikit-learn's, and the score carried by a
real Keras classifier through .keras (safe mode), TFLite and ONNX."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.test_calibration import finetune_like, images
from tltoolkit.architectures import load_model
from tltoolkit.calibration import logits_model, softmax
from tltoolkit.errors import TltoolkitError
from tltoolkit.rejection import (auroc, check_coverage, false_positive_rate, rejection_of, score,
                                 threshold_for_coverage, with_rejection)

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
    assert threshold_for_coverage(scores, 1.0) == scores.min()


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
    assert rejection_of(loaded) == {"temperature": 1.6, "score": kind, "threshold": 0.3, "coverage": 0.95}
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
