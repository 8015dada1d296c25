"""Refitting a trained classifier's temperature and rejection threshold on a held-out labelled folder
(`tltoolkit calibrate`): finetune fits both on its validation split; images that never took part in
training or model selection give an unbiased fit. The model file is replaced atomically."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tltoolkit.errors import TltoolkitError
from tltoolkit.inference.classifier import as_classifiers


@dataclasses.dataclass
class Calibration:
    model_file: str
    before: dict  # what the model carried: temperature, score, threshold, coverage (rejection_of or T alone)
    fit: dict  # rejection.fit_rejection's result on the held-out images
    ece_stored: float  # expected calibration error of the images at the temperature the model carried

    def summary(self) -> str:
        fit = self.fit
        return (f"calibrated {self.model_file} on {fit['images']} labelled images: temperature "
                f"{self.before['temperature']:.4g} -> {fit['temperature']:.4g}, expected calibration error "
                f"{fit['ece_before']:.4f} at temperature 1, {self.ece_stored:.4f} at the stored one, "
                f"{fit['ece_after']:.4f} refit (on these images); unknown below {fit['score']} score "
                f"{fit['threshold']:.4g}, which keeps {fit['coverage']:.0%} of them")


def calibrate(model_or_run, data, coverage: float | None = None, score: str | None = None, split: str = "all",
              val_split: float = 0.2, batch_size: int = 32, progress: bool = False) -> Calibration:
    """Fits the temperature and the threshold keeping `coverage` of the labelled images of `data` (default:
    the coverage and score kind the model carries, else 0.95 and msp) and writes them into the model
    file of the run (or the `.keras` file) atomically."""
    from tltoolkit.calibration import expected_calibration_error, logits_model, softmax, temperature_of
    from tltoolkit.data.files import atomic_path
    from tltoolkit.inference.evaluation import evaluation_table
    from tltoolkit.inference.predict import probabilities
    from tltoolkit.rejection import (DEFAULT_COVERAGE, DEFAULT_SCORE, check_coverage, check_score, fit_rejection,
                                     rejection_of, settings, with_rejection)

    classifiers = as_classifiers(model_or_run)
    if len(classifiers) != 1:
        raise TltoolkitError(f"calibrate fits one model at a time, got {len(classifiers)}")
    classifier = classifiers[0]
    stored = rejection_of(classifier.model) or {"temperature": temperature_of(classifier.model)}
    coverage = check_coverage(coverage or stored.get("coverage") or DEFAULT_COVERAGE)
    score = check_score(score or stored.get("score") or DEFAULT_SCORE)
    table, _, _ = evaluation_table(data, classifier.class_names, split, val_split)
    logits = probabilities(dataclasses.replace(classifier, model=logits_model(classifier.model)), table,
                           batch_size=batch_size, progress=progress)
    labels = table["label_id"].to_numpy()
    fit = fit_rejection(logits, labels, coverage, score)
    model_file = classifier.run_dir / "model.keras" if classifier.run_dir else classifier.source
    calibrated = with_rejection(classifier.model, **settings(fit), scored=False)
    with atomic_path(Path(model_file).resolve(), suffix=".keras") as temporary:  # in the run's current set
        calibrated.save(temporary)
    return Calibration(str(model_file), stored, fit,
                       expected_calibration_error(softmax(logits, stored["temperature"]), labels))
