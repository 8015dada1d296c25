"""Evaluating a classifier or an ensemble on labelled images: accuracy, top-k, per-class precision,
recall and F1, confusion matrices, the most confused pairs and the worst predictions, the expected
calibration error with a reliability diagram, written as a report folder (`Evaluation.write`)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tltoolkit.calibration import expected_calibration_error, reliability_diagram, softmax, temperature_of
from tltoolkit.data import scan
from tltoolkit.data.files import atomic_path, atomic_write_bytes, staging_folder
from tltoolkit.errors import TltoolkitError
from tltoolkit.inference.classifier import as_classifiers, names_shown
from tltoolkit.inference.predict import classifier_outputs, image_table, outputs, rejection_threshold
from tltoolkit.inference.tta import check_tta
from tltoolkit.rejection import (DEFAULT_COVERAGE, DEFAULT_SCORE, accepted, auroc, false_positive_rate, rejection_of,
                                 threshold_for_coverage)
from tltoolkit.reports import confusion_figure, confusion_matrix, contact_sheet, save_figure


EXPLAINED_WORST = 8
EXPLAINED_PER_CLASS = 2
EXPLAINED_CLASSES = 12


@dataclasses.dataclass
class Rejection:
    """The rejection scores of the evaluated (known) images and of out-of-distribution ones (`--ood`)."""

    score: str  # the score's kind
    target_coverage: float
    threshold: float | None  # the model's (or the one for --coverage); None: an ensemble, or none stored
    known: np.ndarray
    unknown: np.ndarray | None

    def summary(self) -> dict:
        """Without a threshold and OOD images: {}. Else the share of known images accepted at the
        threshold (its coverage, held out), and with OOD images the AUROC of telling them apart and the
        false-positive rate (OOD images accepted) at the threshold and at the threshold that keeps the
        target coverage of these known images (the literature's FPR at 95% TPR)."""
        found = {}
        if self.threshold is not None:
            found |= {"threshold": self.threshold, "coverage": float(np.mean(accepted(self.known, self.threshold)))}
        if self.unknown is not None:
            found |= {"ood_images": int(len(self.unknown)), "auroc": auroc(self.known, self.unknown),
                      "fpr_at_target_coverage": false_positive_rate(
                          self.unknown, threshold_for_coverage(self.known, self.target_coverage))}
            if self.threshold is not None:
                found["fpr_at_threshold"] = false_positive_rate(self.unknown, self.threshold)
        return {"score": self.score, "target_coverage": self.target_coverage, **found} if found else {}


@dataclasses.dataclass
class Evaluation:
    """What `evaluate` measured; `write(folder)` saves the tables and figures."""

    class_names: list[str]
    predictions: pd.DataFrame  # path, label, predicted, probability, true_probability, correct
    probabilities: np.ndarray  # [images, classes] of the final model (ensemble and TTA as asked)
    comparison: pd.DataFrame  # model, tta, accuracy, top-k accuracy: single vs TTA vs ensemble
    unknown: pd.DataFrame  # class, images: dataset classes the model does not know (excluded)
    quarantined: int  # files of the data the scan could not use
    top_k: int
    tta: str
    temperature: float = 1.0  # the one model's stored temperature (1.0: none, or an ensemble)
    rejection: Rejection | None = None
    explanations: dict = dataclasses.field(default_factory=dict)  # file name -> (title, rows, Grad-CAM overlays)

    @property
    def uncalibrated(self) -> np.ndarray | None:
        """The probabilities the model gave before its temperature (softmax(T log p) undoes softmax(z / T)),
        for one model without TTA; None otherwise (an average of calibrated views has no such inverse)."""
        if self.temperature == 1.0 or self.tta != "none":
            return None
        return softmax(self.temperature * np.log(np.clip(self.probabilities, 1e-30, None)))

    def calibration_errors(self) -> dict:
        """Expected calibration error (15 bins) of the probabilities, and at temperature 1 where known."""
        errors = {"expected_calibration_error": expected_calibration_error(self.probabilities, self.label_ids)}
        if self.uncalibrated is not None:
            errors["expected_calibration_error_t1"] = expected_calibration_error(self.uncalibrated, self.label_ids)
        return errors

    @property
    def accuracy(self) -> float:
        return float(self.predictions["correct"].mean())

    @property
    def top_k_accuracy(self) -> float:
        return top_k_accuracy(self.probabilities, self.label_ids, self.top_k)

    @property
    def label_ids(self) -> np.ndarray:
        return self.predictions["label_id"].to_numpy()

    def confusion(self, normalize: bool = False) -> np.ndarray:
        """`[true, predicted]` counts; normalised: each true class's row sums to 1 (0 without images)."""
        return confusion_matrix(self.label_ids, self.predictions["predicted_id"], len(self.class_names), normalize)

    def per_class(self) -> pd.DataFrame:
        """Precision, recall, F1 and support per class, then the macro and support-weighted means (the
        layout of scikit-learn's classification report). A class never predicted has precision 0."""
        counts = self.confusion()
        tp, predicted, support = np.diag(counts), counts.sum(axis=0), counts.sum(axis=1)
        precision = np.divide(tp, predicted, out=np.zeros(len(tp)), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros(len(tp)), where=support > 0)
        both = precision + recall
        f1 = np.divide(2 * precision * recall, both, out=np.zeros(len(tp)), where=both > 0)
        frame = pd.DataFrame({"class": self.class_names, "precision": precision, "recall": recall, "f1": f1,
                              "support": support})
        weights = support / max(1, support.sum())
        means = [("macro avg", [precision.mean(), recall.mean(), f1.mean()]),
                 ("weighted avg", [precision @ weights, recall @ weights, f1 @ weights])]
        rows = pd.DataFrame([{"class": name, "precision": p, "recall": r, "f1": f, "support": support.sum()}
                             for name, (p, r, f) in means])
        return pd.concat([frame, rows], ignore_index=True)

    def confused_pairs(self, limit: int = 10) -> pd.DataFrame:
        """The most frequent mistakes: true class, predicted class, count and the share of the true
        class's images."""
        counts = self.confusion()
        np.fill_diagonal(counts, 0)
        true, predicted = np.nonzero(counts)
        frame = pd.DataFrame({"true": np.asarray(self.class_names, dtype=object)[true],
                              "predicted": np.asarray(self.class_names, dtype=object)[predicted],
                              "count": counts[true, predicted]})
        support = self.confusion().sum(axis=1)
        frame["share"] = frame["count"] / support[true]
        return frame.sort_values(["count", "true", "predicted"], ascending=[False, True, True]).head(limit).reset_index(drop=True)

    def worst(self, count: int = 16) -> pd.DataFrame:
        """The images whose true class got the lowest probability."""
        return self.predictions.sort_values("true_probability", kind="stable").head(count)

    def confusion_figure(self, normalize: bool = False):
        title = (f"Confusion matrix{' (normalised by true class)' if normalize else ''}\n"
                 f"accuracy {self.accuracy:.1%} on {len(self.predictions)} images")
        return confusion_figure(self.confusion(normalize), self.class_names, title, normalize)

    def summary(self) -> dict:
        summary = {"images": len(self.predictions), "accuracy": self.accuracy, f"top_{self.top_k}_accuracy":
                   self.top_k_accuracy, "tta": self.tta, "classes": len(self.class_names),
                   "unknown_class_images": int(self.unknown["images"].sum()), "quarantined_files": self.quarantined,
                   "temperature": self.temperature, **self.calibration_errors()}
        rejection = self.rejection.summary() if self.rejection is not None else {}
        if rejection:
            summary["rejection"] = rejection
        return summary

    def write(self, folder, force: bool = False) -> dict[str, Path]:
        """Writes the report files into `folder` as one set: each into a staging folder first, then all
        renamed into place, `summary.json` last (a folder holds an evaluation when it has one), so a full
        disk leaves the folder as it was. Replaces an existing evaluation only with `force`."""
        folder = Path(folder).expanduser()
        names = ("per_class.csv", "predictions.csv", "comparison.csv", "confused_pairs.csv", "confusion_matrix.png",
                 "confusion_matrix_normalized.png", "worst_predictions.png", "reliability.png", *self.explanations,
                 "summary.json")
        files = {name: folder / name for name in names}
        if files["summary.json"].exists() and not force:
            raise TltoolkitError(f"{folder} already holds an evaluation (summary.json...); pass --force "
                                 f"to replace it or choose another --out")
        with staging_folder(folder, "evaluation") as staging:
            self._write_into(staging)
            for name in names:
                os.replace(staging / name, files[name])
        return files

    def _write_into(self, folder: Path) -> None:
        atomic_write_bytes(folder / "summary.json", (json.dumps(self.summary(), indent=2) + "\n").encode())
        for name, frame in (("per_class.csv", self.per_class()), ("predictions.csv", self.predictions),
                            ("comparison.csv", self.comparison), ("confused_pairs.csv", self.confused_pairs())):
            with atomic_path(folder / name) as temporary:
                frame.to_csv(temporary, index=False)
        for name, figure in (("confusion_matrix.png", self.confusion_figure(normalize=False)),
                             ("confusion_matrix_normalized.png", self.confusion_figure(normalize=True)),
                             ("worst_predictions.png", contact_sheet(self.worst(), "Worst predictions"))):
            save_figure(figure, folder / name)
        series = {"as evaluated": self.probabilities}
        if self.uncalibrated is not None:
            series = {"temperature 1": self.uncalibrated, f"temperature {self.temperature:.3g}": self.probabilities}
        reliability_diagram(series, self.label_ids, folder / "reliability.png")
        for name, (title, rows, images) in self.explanations.items():
            save_figure(contact_sheet(rows, title, images=images), folder / name)


def top_k_accuracy(probs: np.ndarray, label_ids: np.ndarray, k: int) -> float:
    """The share of images whose true class is among the `k` most probable (ties count against)."""
    true = probs[np.arange(len(label_ids)), label_ids]
    higher = (probs > true[:, None]).sum(axis=1)
    return float((higher < k).mean())


def evaluation_table(data, class_names, split: str = "all", val_split: float = 0.2):
    """The usable images of `data` whose class the model knows, with `label_id` in the model's ids, a
    table of the classes it does not know (class, images), which are left out, and how many files the
    scan quarantined."""
    index = {name: i for i, name in enumerate(class_names)}
    result = scan(data, val_split=val_split, class_index=index, check=False)
    table = result.usable(None if split == "all" else split)
    if table.empty:
        raise TltoolkitError(f"no usable labelled images in {data}" + ("" if split == "all" else f" ({split} split)")
                             + f"; check it with `tltoolkit scan --data {data}`")
    known = table["label"].isin(index)
    unknown = table.loc[~known].groupby("label").size().rename("images").reset_index().rename(columns={"label": "class"})
    if not known.any():
        raise TltoolkitError(f"none of the classes of {data} ({names_shown(sorted(table['label'].unique()))}) is known to "
                             f"the model ({names_shown(class_names)}); evaluate on data with the model's classes")
    return table.loc[known].reset_index(drop=True), unknown, len(result.quarantined)


def evaluate(model_or_runs, data, tta: str = "none", top_k: int = 5, batch_size: int = 32, split: str = "all",
             val_split: float = 0.2, progress: bool = False, ood=None, coverage: float | None = None) -> Evaluation:
    """Evaluates one classifier or an ensemble on the labelled images of `data` (class folders, a
    manifest or tfds:NAME). The comparison table has each model without and with `tta`, and with
    several models the ensemble's; the rest of the report is for the last row: all models, with `tta`.
    `ood`: a folder of images of none of the classes, scored to measure the rejection (`Rejection`)
    at `coverage` (default: the model's, else 0.95)."""
    classifiers = as_classifiers(model_or_runs)
    check_tta(tta)
    threshold = rejection_threshold(classifiers, coverage)
    stored = rejection_of(classifiers[0].model) if len(classifiers) == 1 else None
    target = coverage or (stored or {}).get("coverage") or DEFAULT_COVERAGE
    names = classifiers[0].class_names
    table, unknown, quarantined = evaluation_table(data, names, split, val_split)
    ood_table = None
    if ood is not None:
        ood_table = image_table([ood])
        ood_table = ood_table[ood_table["error"] == ""]
        if ood_table.empty:
            raise TltoolkitError(f"--ood {ood} has no readable images; pass a folder of images of other classes")
    labels = table["label_id"].to_numpy()
    k = max(1, min(top_k, len(names)))
    modes = ["none"] + ([tta] if tta != "none" else [])
    runs = {(c.source, mode): classifier_outputs(c, table, mode, batch_size, progress)
            for c in classifiers for mode in modes}
    rows, final = [], None
    for mode in modes:
        for c in classifiers:
            rows.append((c.source, mode, runs[c.source, mode][0]))
        if len(classifiers) > 1:
            rows.append((f"ensemble of {len(classifiers)}", mode,
                         np.mean([runs[c.source, mode][0] for c in classifiers], axis=0)))
        final = rows[-1][2]
    known_scores = np.mean([runs[c.source, modes[-1]][1] for c in classifiers], axis=0)
    rejection = Rejection((stored or {}).get("score", DEFAULT_SCORE), target, threshold, known_scores,
                          None if ood_table is None else outputs(classifiers, ood_table, tta, batch_size, progress)[1])
    comparison = pd.DataFrame([{"model": name, "tta": mode, "accuracy": float((p.argmax(1) == labels).mean()),
                                f"top_{k}_accuracy": top_k_accuracy(p, labels, k)} for name, mode, p in rows])
    predicted = final.argmax(axis=1)
    name_array = np.asarray(names, dtype=object)
    predictions = pd.DataFrame({
        "path": table["path"].astype(str), "decoder": table["decoder"], "label": table["label"], "label_id": labels,
        "predicted": name_array[predicted], "predicted_id": predicted, "probability": final.max(axis=1),
        "true_probability": final[np.arange(len(labels)), labels], "correct": predicted == labels,
        "score": known_scores})
    temperature = temperature_of(classifiers[0].model) if len(classifiers) == 1 else 1.0
    explanations = explanation_panels(classifiers[0], predictions, batch_size) if len(classifiers) == 1 else {}
    return Evaluation(names, predictions, final, comparison, unknown, quarantined, k, tta, temperature, rejection,
                      explanations)


def explanation_panels(classifier, predictions: pd.DataFrame, batch_size: int = 32) -> dict:
    """Grad-CAM overlays (at the last spatial layer, for the predicted class) of the worst predictions
    and of the most confident `EXPLAINED_PER_CLASS` images of each class, the classes of lowest recall
    first (at most `EXPLAINED_CLASSES`): {file name: (title, rows, overlays)}; {} for a model without
    a spatial layer."""
    from tltoolkit.explain import last_spatial_layer, overlays

    try:
        layer = last_spatial_layer(classifier.model)
    except TltoolkitError:
        return {}
    worst = predictions.sort_values("true_probability", kind="stable").head(EXPLAINED_WORST)
    recall = predictions.groupby("label", sort=True)["correct"].mean().sort_values(kind="stable")
    per_class = pd.concat([predictions[predictions["label"] == name].sort_values(
        "true_probability", ascending=False, kind="stable").head(EXPLAINED_PER_CLASS)
        for name in recall.index[:EXPLAINED_CLASSES]])
    return {name: (f"{title}: Grad-CAM at {layer}, for the predicted class", rows, overlays(classifier, rows, layer, batch_size))
            for name, title, rows in (("explanations_worst.png", "Worst predictions", worst),
                                      ("explanations_per_class.png", "Most confident per class", per_class))}
