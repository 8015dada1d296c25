"""Rejecting inputs unlike the training data: a score per image, a threshold chosen on validation for a
target in-distribution coverage, AUROC and the false-positive rate on an out-of-distribution set.

Both scores are "known-ness" (higher = more like the training classes), computed on logits / T with
the model's temperature T:
- `msp`: the maximum softmax probability (Hendrycks & Gimpel 2017);
- `energy`: T * logsumexp(logits / T), the negated energy score -E(x) of Liu et al. 2020
  (*Energy-based Out-of-distribution Detection*), so that both scores are accepted above the threshold.

    fit = fit_rejection(val_logits, val_labels, coverage=0.95)   # temperature, threshold, validation quantiles
    kept = with_rejection(model, **settings(fit), scored=False)   # what model.keras stores: one output
    served = scored_model(kept)                                   # [probabilities, score]: what exports return
    threshold_of(kept, coverage=0.9)                              # another coverage, from the stored quantiles
    auroc(score(test_logits, ...), score(ood_logits, ...))
"""

from __future__ import annotations

import keras
import numpy as np

from tltoolkit.calibration import (TEMPERATURE_LAYER, Temperature, expected_calibration_error, find_layer,
                                   fit_temperature, logsumexp, replace_softmax, softmax, temperature_of)
from tltoolkit.errors import TltoolkitError

SCORES = ("msp", "energy")
DEFAULT_SCORE = "msp"  # mean AUROC 0.802 vs 0.772 for energy over 3 seeds: benchmarks/trust.py (digits 5-9 vs 0-4)
DEFAULT_COVERAGE = 0.95
SCORE_LAYER = "scored_temperature"
FLOAT32_MARGIN = 1e-6  # relative: a few float32 roundings
QUANTILES = 1001  # validation scores kept with a model: a threshold for any coverage to 0.1%


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
    ceil(coverage * N)-th highest score, less `FLOAT32_MARGIN` of it (a model computes the score in
    float32, which may round an image's score just below the float64 value chosen from)."""
    scores = np.sort(np.asarray(scores, "float64"))[::-1]
    if not len(scores):
        raise TltoolkitError("no validation images to choose the rejection threshold on; use a validation split")
    k = int(np.ceil(check_coverage(coverage) * len(scores) - 1e-9))
    chosen = float(scores[max(k, 1) - 1])
    return chosen - FLOAT32_MARGIN * max(1.0, abs(chosen))


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
class Rejection(Temperature):
    """softmax(logits / temperature), as `Temperature`, carrying in its config how to reject: the score
    kind, the threshold, the coverage it was chosen for and `quantiles`, the sorted validation scores
    (`score_summary`), from which a threshold for another coverage is derived (`threshold_of`)."""

    def __init__(self, temperature: float = 1.0, score: str = DEFAULT_SCORE, threshold: float | None = None,
                 coverage: float | None = None, quantiles=None, **kwargs):
        super().__init__(temperature, **kwargs)
        self.score = check_score(score)
        self.threshold = None if threshold is None else float(threshold)
        self.coverage = None if coverage is None else check_coverage(coverage)
        self.quantiles = None if quantiles is None else [float(q) for q in quantiles]

    def get_config(self):
        return {**super().get_config(), "score": self.score, "threshold": self.threshold, "coverage": self.coverage,
                "quantiles": self.quantiles}


@keras.saving.register_keras_serializable(package="tltoolkit")
class ScoredTemperature(Rejection):
    """logits -> [softmax(logits / temperature), score]: the calibrated probabilities and the rejection
    score, shape [B] (what exports return). The threshold only travels in the config: an application
    rejects images whose score is below it."""

    def call(self, logits):
        z = keras.ops.cast(logits, "float32") / self.temperature
        probabilities = keras.ops.softmax(z, axis=-1)
        if self.score == "msp":
            return [probabilities, keras.ops.max(probabilities, axis=-1)]
        return [probabilities, self.temperature * keras.ops.logsumexp(z, axis=-1)]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape), tuple(input_shape[:-1])]


def with_rejection(model, temperature: float = 1.0, score: str = DEFAULT_SCORE, threshold: float | None = None,
                   coverage: float | None = None, quantiles=None, scored: bool = True):
    """An equivalent of `model` with these rejection settings: returning [softmax(logits / temperature),
    score] (`scored`), or only the probabilities with the settings in its config (what model.keras
    keeps, so that it stays a one-output classifier). A model already carrying a temperature or a score
    gets these instead."""
    layer = (ScoredTemperature if scored else Rejection)(temperature, score, threshold, coverage, quantiles,
                                                         name=SCORE_LAYER if scored else TEMPERATURE_LAYER)
    return replace_softmax(model, layer)


def rejection_of(model) -> dict | None:
    """What a model carries: {temperature, score, threshold, coverage, quantiles}, or None without
    rejection settings."""
    layer = find_layer(model, Rejection)
    if layer is None:
        return None
    return {"temperature": layer.temperature, "score": layer.score, "threshold": layer.threshold,
            "coverage": layer.coverage, "quantiles": layer.quantiles}


def scored_model(model):
    """`model` returning [probabilities, score]: with its stored rejection settings, else the maximum
    softmax probability at its temperature. A one-line error for a model that does not end in a Dense
    softmax classifier."""
    stored = rejection_of(model)
    if stored is not None:
        return with_rejection(model, **stored)
    return with_rejection(model, temperature_of(model), DEFAULT_SCORE)


def threshold_of(model, coverage: float | None = None) -> float | None:
    """The score threshold to reject below: the stored one, or (`coverage`) the one keeping that share of
    the stored validation scores. None without stored settings and `coverage`; a one-line error when a
    coverage is asked of a model without stored validation scores."""
    stored = rejection_of(model)
    if coverage is None:
        return stored["threshold"] if stored else None
    check_coverage(coverage)
    if stored is None or not stored["quantiles"]:
        raise TltoolkitError(f"{model.name} carries no validation scores to choose a threshold for --coverage "
                             f"{coverage:g} from; calibrate it on labelled images first: tltoolkit calibrate "
                             f"--model RUN --data DIR")
    return threshold_for_coverage(stored["quantiles"], coverage)


# -- fitting both on labelled images ----------------------------------------------------------------------

def score_summary(scores: np.ndarray, limit: int = QUANTILES) -> list[float]:
    """The sorted scores; more than `limit` of them: `limit` evenly spaced quantiles (a threshold for
    any coverage to within 1 / (limit - 1), in a config of bounded size)."""
    scores = np.sort(np.asarray(scores, "float64"))
    if len(scores) > limit:
        scores = np.quantile(scores, np.linspace(0.0, 1.0, limit))
    return [float(s) for s in scores]


def fit_rejection(logits: np.ndarray, labels: np.ndarray, coverage: float = DEFAULT_COVERAGE,
                  kind: str = DEFAULT_SCORE) -> dict:
    """On labelled logits (a validation or held-out split): the temperature (`fit_temperature`), then
    the score at it and the threshold keeping `coverage` of these images, with the expected calibration
    error before (temperature 1) and after. `with_rejection(model, **settings(fit), scored=False)`
    stores it in a model."""
    check_coverage(coverage)
    temperature = fit_temperature(logits, labels)
    quantiles = score_summary(score(logits, check_score(kind), temperature))
    return {"temperature": temperature, "score": kind, "threshold": threshold_for_coverage(quantiles, coverage),
            "coverage": coverage, "quantiles": quantiles, "images": int(len(labels)),
            "ece_before": expected_calibration_error(softmax(logits), labels),
            "ece_after": expected_calibration_error(softmax(logits, temperature), labels)}


def settings(fit: dict) -> dict:
    """The arguments of `with_rejection` in a `fit_rejection` result."""
    return {key: fit[key] for key in ("temperature", "score", "threshold", "coverage", "quantiles")}
