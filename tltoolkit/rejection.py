"""Rejecting inputs unlike the training data: a score per image, a threshold chosen on validation for a
target in-distribution coverage, AUROC and the false-positive rate on an out-of-distribution set.

Both scores are "known-ness" (higher = more like the training classes), computed on logits / T with
the model's temperature T:
- `msp`: the maximum softmax probability (Hendrycks & Gimpel 2017);
- `energy`: T * logsumexp(logits / T), the negated energy score -E(x) of Liu et al. 2020
  (*Energy-based Out-of-distribution Detection*), so that both scores are accepted above the threshold.

    threshold = threshold_for_coverage(score(val_logits, "msp", t), coverage=0.95)
    scored = with_rejection(model, t, "msp", threshold)       # outputs [probabilities, score]
    auroc(score(test_logits, ...), score(ood_logits, ...))
"""

from __future__ import annotations

import keras
import numpy as np

from tltoolkit.calibration import Temperature, find_layer, logsumexp, replace_softmax
from tltoolkit.errors import TltoolkitError

SCORES = ("msp", "energy")
DEFAULT_SCORE = "msp"  # mean AUROC 0.802 vs 0.772 for energy over 3 seeds: benchmarks/trust.py (digits 5-9 vs 0-4)
SCORE_LAYER = "scored_temperature"


def check_score(kind: str) -> str:
    if kind not in SCORES:
        raise TltoolkitError(f"unknown rejection score {kind!r}; use one of {', '.join(SCORES)}")
    return kind


def check_coverage(coverage: float) -> float:
    if not 0 < coverage <= 1:
        raise TltoolkitError(f"--coverage must be in (0, 1], got {coverage}; e.g. 0.95 keeps 95% of known images")
    return float(coverage)


def score(logits: np.ndarray, kind: str = DEFAULT_SCORE, temperature: float = 1.0) -> np.ndarray:
    """Per image, higher = more like the training classes (see the module docstring)."""
    z = np.asarray(logits, "float64") / temperature
    log_norm = logsumexp(z)
    if check_score(kind) == "msp":
        return np.exp(z.max(axis=-1) - log_norm)  # the top class' softmax probability
    return temperature * log_norm


def threshold_for_coverage(scores: np.ndarray, coverage: float) -> float:
    """The largest threshold that accepts (score >= threshold) at least `coverage` of `scores`: the
    ceil(coverage * N)-th highest validation score."""
    scores = np.sort(np.asarray(scores, "float64"))[::-1]
    if not len(scores):
        raise TltoolkitError("no validation images to choose the rejection threshold on; use a validation split")
    k = int(np.ceil(check_coverage(coverage) * len(scores) - 1e-9))
    return float(scores[max(k, 1) - 1])


def accepted(scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.asarray(scores) >= threshold


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of telling `known` (in-distribution, positive) from `unknown` scores:
    the Mann-Whitney U statistic over N_known * N_unknown, ties counted half (average ranks)."""
    known, unknown = np.asarray(known, "float64"), np.asarray(unknown, "float64")
    if not len(known) or not len(unknown):
        raise TltoolkitError(f"AUROC needs known and unknown images, got {len(known)} and {len(unknown)}")
    values = np.concatenate([known, unknown])
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # average rank (1-based) of each run of tied values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_ranks = (starts + 1 + ends) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(run_ranks, ends - starts)
    u = ranks[:len(known)].sum() - len(known) * (len(known) + 1) / 2.0
    return float(u / (len(known) * len(unknown)))


def false_positive_rate(unknown: np.ndarray, threshold: float) -> float:
    """The share of out-of-distribution images accepted as known at `threshold`."""
    return float(np.mean(accepted(unknown, threshold)))


# -- the score inside the model ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tltoolkit")
class ScoredTemperature(Temperature):
    """logits -> [softmax(logits / temperature), score]: the calibrated probabilities and the rejection
    score (`score`), shape [B]. `threshold` (and the `coverage` it was chosen for) only travel in the
    config: an application rejects images whose score is below it."""

    def __init__(self, temperature: float = 1.0, score: str = DEFAULT_SCORE, threshold: float | None = None,
                 coverage: float | None = None, **kwargs):
        super().__init__(temperature, **kwargs)
        self.score = check_score(score)
        self.threshold = None if threshold is None else float(threshold)
        self.coverage = None if coverage is None else check_coverage(coverage)

    def call(self, logits):
        z = keras.ops.cast(logits, "float32") / self.temperature
        probabilities = keras.ops.softmax(z, axis=-1)
        if self.score == "msp":
            return [probabilities, keras.ops.max(probabilities, axis=-1)]
        return [probabilities, self.temperature * keras.ops.logsumexp(z, axis=-1)]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape), tuple(input_shape[:-1])]

    def get_config(self):
        return {**super().get_config(), "score": self.score, "threshold": self.threshold, "coverage": self.coverage}


def with_rejection(model, temperature: float = 1.0, kind: str = DEFAULT_SCORE, threshold: float | None = None,
                   coverage: float | None = None):
    """An equivalent of `model` returning [softmax(logits / temperature), score] (a model already
    carrying a temperature or a score gets these instead)."""
    return replace_softmax(model, ScoredTemperature(temperature, kind, threshold, coverage, name=SCORE_LAYER))


def rejection_of(model) -> dict | None:
    """What a model carries: {temperature, score, threshold, coverage}, or None without a score."""
    layer = find_layer(model, ScoredTemperature)
    if layer is None:
        return None
    return {"temperature": layer.temperature, "score": layer.score, "threshold": layer.threshold,
            "coverage": layer.coverage}
