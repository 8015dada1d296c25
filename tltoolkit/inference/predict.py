"""Probabilities and top-k labels of image files, folders or tables, by one classifier or an ensemble."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from tltoolkit.data import IMAGE_EXTENSIONS
from tltoolkit.data.probe import probe_file
from tltoolkit.errors import TltoolkitError
from tltoolkit.inference.classifier import Classifier, as_classifiers
from tltoolkit.inference.tta import averaged_forward, check_tta, load_size
from tltoolkit.pipeline import image_dataset
from tltoolkit.rejection import threshold_of

UNKNOWN = "unknown"  # the answer for an image scored below the model's rejection threshold


def unknown_answer(class_names) -> str:
    """The label of a rejected image: "unknown", or "<unknown>" when a class is itself named unknown
    (a rejected image must never read as that class)."""
    return f"<{UNKNOWN}>" if UNKNOWN in class_names else UNKNOWN


def probabilities(model_or_runs, table: pd.DataFrame, tta: str = "none", batch_size: int = 32,
                  progress: bool = False) -> np.ndarray:
    """`[len(table), classes]` probabilities of the images of `table` (columns `path`, optional
    `decoder`), in table order; several classifiers: the mean of their probabilities."""
    return outputs(model_or_runs, table, tta, batch_size, progress)[0]


def outputs(model_or_runs, table: pd.DataFrame, tta: str = "none", batch_size: int = 32,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, classes], rejection scores [N]) of the images of `table`; several classifiers:
    the means of theirs."""
    classifiers = as_classifiers(model_or_runs)
    per_model = [classifier_outputs(c, table, check_tta(tta), batch_size, progress) for c in classifiers]
    return tuple(np.mean(parts, axis=0) if len(parts) > 1 else parts[0] for parts in zip(*per_model))


def classifier_outputs(classifier: Classifier, table, tta, batch_size, progress) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, rejection scores) of one classifier, each averaged over the TTA views."""
    if batch_size < 1:
        raise TltoolkitError(f"batch size must be at least 1, got {batch_size}")
    dataset = image_dataset(table, load_size(classifier.image_size, tta), batch_size=batch_size,
                            resize=classifier.resize, deterministic=True, with_labels=False)
    forward = averaged_forward(classifier, tta)
    probs, scores = [], []
    with tqdm(total=len(table), unit="img", desc=f"{classifier.name} ({tta})", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for images in dataset:
            p, s = forward(images)
            probs.append(p.numpy())
            scores.append(s.numpy())
            bar.update(len(probs[-1]))
    return np.concatenate(probs), np.concatenate(scores)


def rejection_threshold(classifiers: list[Classifier], coverage: float | None = None) -> float | None:
    """The score below which one classifier answers "unknown": its stored threshold, or the one for
    `coverage` from its stored validation scores. None for an ensemble (each model's threshold is
    its own; --coverage refused) or a model without rejection settings."""
    if len(classifiers) > 1:
        if coverage is not None:
            raise TltoolkitError("--coverage applies to one model; an ensemble's averaged score has no threshold "
                                 "of its own")
        return None
    return threshold_of(classifiers[0].model, coverage)


def image_table(inputs, progress: bool = False) -> pd.DataFrame:
    """Image files and folders (searched recursively for image files) as a table with `path`,
    `decoder`, `format`, `width`, `height` and `error` (why a file cannot be read; "" when it can), in
    the order given. Every file
    is checked first (as `scan` does), so one bad file cannot stop a batch."""
    paths = []
    for item in inputs:
        item = Path(item).expanduser()
        if item.is_dir():
            found = sorted(str(p) for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            if not found:
                raise TltoolkitError(f"no image files in folder {item}")
            paths += found
        else:
            paths.append(str(item))
    if not paths:
        raise TltoolkitError("no images given; pass image files or folders")
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        probes = list(tqdm(pool.map(probe_file, paths), total=len(paths), unit="file", desc="check",
                           disable=not progress, file=sys.stderr, dynamic_ncols=True))
    errors = ["" if p["status"] != "quarantined" else f"{p['reason']}: {p['detail']}".rstrip(": ") for p in probes]
    # format, width and height let the pipeline plan each file's decoder (e.g. reduced-scale JPEG decoding).
    facts = pd.DataFrame(probes, columns=["decoder", "format", "width", "height"]).assign(
        decoder=lambda t: t["decoder"].replace("", "tf"))
    return pd.concat([pd.DataFrame({"path": paths}), facts, pd.DataFrame({"error": errors})], axis=1)


def predict(model_or_runs, images_or_table, top_k: int = 5, tta: str = "none", batch_size: int = 32,
            progress: bool = False, coverage: float | None = None) -> pd.DataFrame:
    """Labels with probabilities for image files, folders or a table with a `path` column.

    One row per image, in input order: `path`, `label` and `probability` (the top class), then
    `label_2`, `probability_2`, ... up to `top_k`, `score` (the rejection score: higher is more like
    the training classes) and `error` (why a file could not be read; its other columns are empty).
    A model with a rejection threshold (`rejection_threshold`; `coverage` derives another) answers
    `label` "unknown" below it ("<unknown>" if a class has that name: `unknown_answer`), and a
    `closest` column names the top class of those images. Several
    models: their averaged probabilities and scores (an ensemble), never "unknown"."""
    classifiers = as_classifiers(model_or_runs)
    names = classifiers[0].class_names
    if top_k < 1:
        raise TltoolkitError(f"top-k must be at least 1, got {top_k}")
    threshold = rejection_threshold(classifiers, coverage)
    top_k = min(top_k, len(names))
    if isinstance(images_or_table, pd.DataFrame):
        table = images_or_table.reset_index(drop=True).copy()
        if "error" not in table.columns:
            table["error"] = ""
    else:
        inputs = [images_or_table] if isinstance(images_or_table, (str, os.PathLike)) else images_or_table
        table = image_table(inputs, progress)
    good = table["error"] == ""
    result = pd.DataFrame({"path": table["path"].astype(str)})
    ranked = np.zeros((len(table), top_k), int)
    top = np.full((len(table), top_k), np.nan, np.float32)
    scores = np.full(len(table), np.nan, np.float32)
    if good.any():
        probs, scores[good.to_numpy()] = outputs(classifiers, table[good], tta, batch_size, progress)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        ranked[good.to_numpy()] = order
        top[good.to_numpy()] = np.take_along_axis(probs, order, axis=1)
    for rank in range(top_k):
        suffix = "" if rank == 0 else f"_{rank + 1}"
        labels = np.asarray(names, dtype=object)[ranked[:, rank]]
        result[f"label{suffix}"] = np.where(good, labels, "")
        result[f"probability{suffix}"] = top[:, rank]
    result["score"] = scores
    if threshold is not None:
        unknown = good.to_numpy() & (scores < threshold)
        result["closest"] = np.where(unknown, result["label"], "")
        result.loc[unknown, "label"] = unknown_answer(names)
    result["error"] = table["error"].to_numpy()
    return result
