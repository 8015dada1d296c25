"""`rank(data, bases)`: which frozen base suits a folder best, before fine-tuning any.

Per base, on its penultimate features from the feature cache (a second rank computes nothing):
- **k-NN accuracy**: cosine similarity on features centred on the training mean; k chosen by
  leave-one-out accuracy on the training split, scored on the validation split.
- **linear probe accuracy**: the phase-1 head sweep (`tltoolkit.training.head.fit_head`, its L2 chosen
  by cross-validation on the training split), scored on the validation split; bases are ordered by
  its pooled accuracy over every image it did not train on (cross-validated on training, held out on
  validation), then LogME.
- **LogME** (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
  ICML 2021): the log marginal evidence per image of a Bayesian linear regression from the features
  to each class's one-hot column, its prior and noise precisions maximised by MacKay's fixed point,
  averaged over classes; no training, higher is better.
Without validation images both accuracies are the training split's (leave-one-out, cross-validated).
Each score carries its time, and the extraction cost is the base's forward time per image, measured.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from tltoolkit.data.files import atomic_path
from tltoolkit.errors import TltoolkitError
from tltoolkit.features.folder import folder_features, parse_base
from tltoolkit.features.scores import knn_accuracy, logme

OUTPUTS = ("rank.csv", "rank.md", "rank.png")
COST_IMAGES = 32  # images timed through each base for its extraction cost


def probe_accuracy(train_x, train_y, val_x, val_y, num_classes: int, seed: int = 0) -> tuple[float, float]:
    """(validation accuracy, cross-validated training accuracy) of the phase-1 linear head, its L2 chosen by
    cross-validation on the training images; the first is the second without validation images."""
    from tltoolkit.training.head import fit_head, sweep_settings

    fit = fit_head(train_x, train_y, None, None, num_classes, sweep_settings(), seed=seed)
    cv = fit.chosen.val_accuracy
    if val_x is None or not len(val_x):
        return cv, cv
    (kernel, bias), = fit.weights
    x = (np.asarray(val_x, "float32").reshape(len(val_x), -1) - fit.mean) / np.sqrt(fit.variance)
    return float(np.mean((x @ kernel + bias).argmax(axis=1) == np.asarray(val_y))), cv


def extraction_cost(extractor, table: pd.DataFrame, seed: int = 0) -> float:
    """Milliseconds per image of the base's forward pass, on a batch of the folder's own images (the
    second call: the first traces)."""
    from tltoolkit.features.extractor import sample_images

    spec = extractor.spec
    images, _ = sample_images(table, COST_IMAGES, spec.image_size, spec.resize, seed)
    extractor(images)
    tic = time.perf_counter()
    extractor(images)
    return 1000 * (time.perf_counter() - tic) / len(images)


def rank(data, bases, weights="imagenet", *, cache_dir=None, progress: bool = False, seed: int = 0,
         log=None, **feature_options) -> pd.DataFrame:
    """One row per base (`BASE[@WEIGHTS]`, see `tltoolkit.features.folder.parse_base`), best first (by
    pooled probe accuracy, then LogME): its scores, their times and its extraction cost."""
    log = log or (lambda message: None)
    if not bases:
        raise TltoolkitError("rank needs at least one --base")
    named = [parse_base(b, weights) for b in bases]  # every name checked before any work
    rows = []
    for text, (base, base_weights) in zip(bases, named):
        folder = folder_features(data, base, base_weights, cache_dir=cache_dir, progress=progress, seed=seed,
                                 **feature_options)
        log(f"{text}: computed {folder.computed} of {len(folder.table)} image(s) ({len(folder.table) - folder.computed} "
            f"from the cache)")
        rows.append({"base": text, **score_features(folder, seed),
                     "extract_ms_per_image": extraction_cost(folder.extractor, folder.table, seed),
                     "extraction_s": folder.seconds, "computed": folder.computed})
    frame = pd.DataFrame(rows).sort_values(["probe_pooled_accuracy", "logme"], ascending=False, kind="stable")
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def score_features(folder, seed: int = 0) -> dict:
    """k-NN, linear probe and LogME scores of one base's features (`FolderFeatures`), each timed."""
    table, x = folder.table, folder.features
    present, y = np.unique(table["label_id"].to_numpy(), return_inverse=True)
    train = (table["split"] != "validation").to_numpy()
    if np.unique(y[train]).size < 2:
        raise TltoolkitError("the training split has fewer than two classes; add images")
    val_x, val_y = (x[~train], y[~train]) if (~train).any() else (None, None)
    scores = {"images": len(table), "dims": x.shape[1]}
    tic = time.perf_counter()
    scores["knn_accuracy"], scores["knn_k"] = knn_accuracy(x[train], y[train], val_x, val_y)
    scores["knn_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    scores["probe_accuracy"], scores["probe_cv_accuracy"] = probe_accuracy(x[train], y[train], val_x, val_y,
                                                                           len(present), seed)
    # Every image the probe was scored on without training on it (cross-validated on the training split,
    # held out on validation): a handful of validation images alone cannot order two bases.
    n_val = 0 if val_x is None else len(val_x)
    scores["probe_pooled_accuracy"] = ((scores["probe_cv_accuracy"] * train.sum() + scores["probe_accuracy"] * n_val)
                                       / (train.sum() + n_val)) if n_val else scores["probe_cv_accuracy"]
    scores["probe_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    scores["logme"] = logme(x[train], y[train])
    scores["logme_s"] = time.perf_counter() - tic
    scores["scored_on"] = "validation" if val_x is not None else "training (leave-one-out / cross-validated)"
    return scores


def check_outputs(out, force: bool = False) -> Path:
    out = Path(out)
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not force:
        raise TltoolkitError(f"{out} already holds a ranking ({existing[0]}); pass --force to replace it or "
                             f"choose another --out")
    return out


def markdown(frame: pd.DataFrame) -> str:
    from tltoolkit.reports import markdown_table

    shown = frame[["rank", "base", "knn_accuracy", "knn_k", "probe_accuracy", "logme", "extract_ms_per_image",
                   "knn_s", "probe_s", "logme_s"]]
    return markdown_table(shown.round(4))


def write_rank(frame: pd.DataFrame, out, force: bool = False) -> list[Path]:
    """`rank.csv`, `rank.md` and `rank.png` (scores against extraction cost) into `out`, each atomically."""
    from tltoolkit.reports import save_figure

    out = check_outputs(out, force)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "rank.csv") as temporary:
        frame.to_csv(temporary, index=False)
    with atomic_path(out / "rank.md") as temporary:
        Path(temporary).write_text(f"# Bases ranked on {frame['images'].iloc[0]} images (scored on "
                                   f"{frame['scored_on'].iloc[0]})\n\n{markdown(frame)}", encoding="utf-8")
    save_figure(_figure(frame), out / "rank.png")
    return [out / name for name in OUTPUTS]


def _figure(frame: pd.DataFrame):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    accuracy, evidence = figure.subplots(1, 2)
    cost = frame["extract_ms_per_image"]
    accuracy.scatter(cost, frame["probe_accuracy"], label="linear probe")
    accuracy.scatter(cost, frame["knn_accuracy"], marker="x", label="k-NN")
    evidence.scatter(cost, frame["logme"], color="tab:green")
    for axes, column in ((accuracy, "probe_accuracy"), (evidence, "logme")):
        for name, x, y in zip(frame["base"], cost, frame[column]):
            axes.annotate(Path(name).name if name.endswith(".keras") else name, (x, y), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        axes.set_xlabel("extraction cost (ms per image, this machine)")
    accuracy.set_ylabel("accuracy")
    accuracy.legend(fontsize=8)
    evidence.set_ylabel("LogME (per image)")
    figure.suptitle("frozen features: score against extraction cost")
    return figure
