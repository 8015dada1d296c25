"""Using a trained classifier: predict, evaluate, test-time augmentation and ensembles.

A classifier is a run directory (`model.keras`, `class_index.json`, `config.json`) or a `.keras` file
(labels from a `labels.txt` or `class_index.json` beside it). Its model takes raw uint8 RGB images at
the training size and returns class probabilities.

Test-time augmentation (`tta`):
- `none`: the image resized as in training.
- `flip`: the image and its mirror image; their probabilities are averaged.
- `ten-crop` (AlexNet's evaluation, the course's "10-crop"): the image is resized so that the model's
  input is `TEN_CROP_FRACTION` of its shorter side (e.g. 32 -> 37, 224 -> 256), then the centre and
  the four corner crops at the input size, and their mirror images: 10 views, probabilities averaged.
The views are tensor slices of the whole batch, so the model runs once on `10 x batch` images.

Ensembles average the probabilities (never the weights) of several classifiers with the same classes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from tltoolkit.errors import TltoolkitError

TTA_MODES = ("none", "flip", "ten-crop")
TEN_CROP_FRACTION = 0.875  # crop / resized shorter side, as in the AlexNet and VGG evaluations


# -- loading a classifier ----------------------------------------------------------------------------

@dataclasses.dataclass
class Classifier:
    """A trained model with what it needs to be used: its class names (in output order), input size
    and resize policy."""

    model: object  # keras.Model: uint8 [B, H, W, 3] -> probabilities [B, classes]
    class_names: list[str]
    image_size: tuple[int, int]
    resize: str
    source: str  # the run directory or .keras file it came from
    run_dir: Path | None = None

    @property
    def name(self) -> str:
        return Path(self.source).name


def load_classifier(path) -> Classifier:
    """A run directory or a `.keras` file as a Classifier; a one-line TltoolkitError when it is not one."""
    from tltoolkit.data import load_class_index

    path = Path(path).expanduser()
    if path.is_dir():
        missing = [name for name in ("model.keras", "class_index.json") if not (path / name).is_file()]
        if missing:
            raise TltoolkitError(f"{path} is not a run directory: it lacks {', '.join(missing)}; pass the folder "
                                 f"`tltoolkit finetune` wrote or a .keras file")
        model_file, run_dir = path / "model.keras", path
        index = load_class_index(path / "class_index.json")
        config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
    elif path.suffix == ".keras" and path.is_file():
        model_file, run_dir, config = path, None, {}
        index = _labels_beside(path)
    else:
        raise TltoolkitError(f"--model {path} is neither a run directory nor a .keras file")
    model = _load_keras(model_file)
    classes = int(model.output.shape[-1])
    names = sorted(index, key=index.get) if index else [str(i) for i in range(classes)]
    if len(names) != classes:
        raise TltoolkitError(f"{model_file} has {classes} outputs but its class index names {len(names)} classes; "
                             f"the class index belongs to another model")
    size = config.get("image_size") or tuple(model.input.shape[1:3])
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise TltoolkitError(f"{path}: unknown input size {size}; add \"image_size\": [H, W] to config.json")
    return Classifier(model, names, size, config.get("resize", "center_crop"), str(path), run_dir)


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TltoolkitError(f"cannot read {path}: {error}") from None


def _labels_beside(model_file: Path) -> dict[str, int] | None:
    from tltoolkit.data import load_class_index

    labels, index = model_file.parent / "labels.txt", model_file.parent / "class_index.json"
    if labels.is_file():
        names = labels.read_text(encoding="utf-8").splitlines()
        return {name: i for i, name in enumerate(names)}
    return load_class_index(index) if index.is_file() else None


def _load_keras(model_file: Path):
    from tltoolkit.architectures import load_model

    try:
        return load_model(model_file)
    except Exception as error:  # Keras raises many types for a broken or foreign file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TltoolkitError(f"cannot load {model_file}: {first}") from None


def load_ensemble(paths) -> list[Classifier]:
    """Several classifiers whose class indexes match exactly (same names, same ids)."""
    return _same_classes([load_classifier(path) for path in paths])


def _same_classes(classifiers: list[Classifier]) -> list[Classifier]:
    first = classifiers[0]
    for other in classifiers[1:]:
        if other.class_names != first.class_names:
            raise TltoolkitError(f"cannot ensemble {first.source} and {other.source}: their classes differ "
                                 f"({_names(first.class_names)} vs {_names(other.class_names)}); ensemble runs "
                                 f"trained on the same class index")
    return classifiers


def _names(names, limit=6):
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} classes)" if len(names) > limit else "")


def _as_classifiers(model_or_runs) -> list[Classifier]:
    if isinstance(model_or_runs, Classifier):
        return [model_or_runs]
    if isinstance(model_or_runs, (str, os.PathLike)):
        return [load_classifier(model_or_runs)]
    items = list(model_or_runs)
    if not items:
        raise TltoolkitError("no model given; pass a run directory or a .keras file")
    return _same_classes([c if isinstance(c, Classifier) else load_classifier(c) for c in items])


# -- test-time augmentation ---------------------------------------------------------------------------

def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise TltoolkitError(f"unknown TTA mode {tta!r}; use one of {', '.join(TTA_MODES)}")
    return tta


def load_size(image_size, tta: str) -> tuple[int, int]:
    """The size images are resized to before the views are taken: larger for ten-crop."""
    if tta != "ten-crop":
        return tuple(image_size)
    return tuple(int(round(s / TEN_CROP_FRACTION)) for s in image_size)


def ten_crop(images, crop_size):
    """`[B, H, W, 3]` -> `[B, 10, h, w, 3]`: centre, top-left, top-right, bottom-left, bottom-right
    crops of size `crop_size`, then the same five mirrored left-right."""
    import tensorflow as tf

    h, w = crop_size
    height, width = images.shape[1], images.shape[2]
    offsets = [((height - h) // 2, (width - w) // 2), (0, 0), (0, width - w), (height - h, 0),
               (height - h, width - w)]
    crops = tf.stack([images[:, top:top + h, left:left + w] for top, left in offsets], axis=1)
    return tf.concat([crops, tf.reverse(crops, axis=[3])], axis=1)


def flip_views(images):
    """`[B, H, W, 3]` -> `[B, 2, H, W, 3]`: the image and its mirror image."""
    import tensorflow as tf

    return tf.stack([images, tf.reverse(images, axis=[2])], axis=1)


def tta_views(images, tta: str, image_size):
    """`[B, V, h, w, 3]` views of a batch loaded at `load_size(image_size, tta)`."""
    import tensorflow as tf

    if tta == "ten-crop":
        return ten_crop(images, image_size)
    if tta == "flip":
        return flip_views(images)
    return tf.expand_dims(images, 1)


def _forward(classifier: Classifier, tta: str):
    """A compiled function: a batch of images -> probabilities averaged over the TTA views, with one
    call of the model on all `B x V` views."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(images):
        views = tta_views(images, tta, classifier.image_size)
        shape = tf.shape(views)
        flat = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))
        probabilities = classifier.model(flat, training=False)
        probabilities = tf.reshape(probabilities, [shape[0], shape[1], -1])
        return tf.reduce_mean(tf.cast(probabilities, tf.float32), axis=1)

    return forward


# -- probabilities of a table of image files -----------------------------------------------------------

def probabilities(model_or_runs, table: pd.DataFrame, tta: str = "none", batch_size: int = 32,
                  progress: bool = False) -> np.ndarray:
    """`[len(table), classes]` probabilities of the images of `table` (columns `path`, optional
    `decoder`), in table order; several classifiers: the mean of their probabilities."""
    classifiers = _as_classifiers(model_or_runs)
    per_model = [_classifier_probabilities(c, table, check_tta(tta), batch_size, progress) for c in classifiers]
    return np.mean(per_model, axis=0) if len(per_model) > 1 else per_model[0]


def _classifier_probabilities(classifier: Classifier, table, tta, batch_size, progress) -> np.ndarray:
    from tqdm import tqdm

    from tltoolkit.pipeline import image_dataset

    if batch_size < 1:
        raise TltoolkitError(f"batch size must be at least 1, got {batch_size}")
    dataset = image_dataset(table, load_size(classifier.image_size, tta), batch_size=batch_size,
                            resize=classifier.resize, deterministic=True, with_labels=False)
    forward = _forward(classifier, tta)
    out = []
    with tqdm(total=len(table), unit="img", desc=f"{classifier.name} ({tta})", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for images in dataset:
            out.append(forward(images).numpy())
            bar.update(len(out[-1]))
    return np.concatenate(out)


# -- predict ------------------------------------------------------------------------------------------

def image_table(inputs, progress: bool = False) -> pd.DataFrame:
    """Image files and folders (searched recursively for image files) as a table with `path`,
    `decoder`, `format`, `width`, `height` and `error` (why a file cannot be read; "" when it can), in
    the order given. Every file
    is checked first (as `scan` does), so one bad file cannot stop a batch."""
    from tqdm import tqdm

    from tltoolkit.data import IMAGE_EXTENSIONS
    from tltoolkit.data.probe import probe_file

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
            progress: bool = False) -> pd.DataFrame:
    """Labels with probabilities for image files, folders or a table with a `path` column.

    One row per image, in input order: `path`, `label` and `probability` (the top class), then
    `label_2`, `probability_2`, ... up to `top_k`, and `error` (why a file could not be read; its
    other columns are empty). Several models: their averaged probabilities (an ensemble)."""
    classifiers = _as_classifiers(model_or_runs)
    names = classifiers[0].class_names
    if top_k < 1:
        raise TltoolkitError(f"top-k must be at least 1, got {top_k}")
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
    scores = np.full((len(table), top_k), np.nan, np.float32)
    if good.any():
        probs = probabilities(classifiers, table[good], tta, batch_size, progress)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        ranked[good.to_numpy()] = order
        scores[good.to_numpy()] = np.take_along_axis(probs, order, axis=1)
    for rank in range(top_k):
        suffix = "" if rank == 0 else f"_{rank + 1}"
        labels = np.asarray(names, dtype=object)[ranked[:, rank]]
        result[f"label{suffix}"] = np.where(good, labels, "")
        result[f"probability{suffix}"] = scores[:, rank]
    result["error"] = table["error"].to_numpy()
    return result


# -- evaluate -----------------------------------------------------------------------------------------

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
        n = len(self.class_names)
        counts = np.bincount(self.label_ids * n + self.predictions["predicted_id"].to_numpy(),
                             minlength=n * n).reshape(n, n)
        if not normalize:
            return counts
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

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

    def summary(self) -> dict:
        return {"images": len(self.predictions), "accuracy": self.accuracy, f"top_{self.top_k}_accuracy":
                self.top_k_accuracy, "tta": self.tta, "classes": len(self.class_names),
                "unknown_class_images": int(self.unknown["images"].sum()), "quarantined_files": self.quarantined}

    def write(self, folder, force: bool = False) -> dict[str, Path]:
        """Writes the report files into `folder` (atomically each); existing ones only with `force`."""
        folder = Path(folder).expanduser()
        files = {name: folder / name for name in (
            "summary.json", "per_class.csv", "predictions.csv", "comparison.csv", "confused_pairs.csv",
            "confusion_matrix.png", "confusion_matrix_normalized.png", "worst_predictions.png")}
        existing = [p.name for p in files.values() if p.exists()]
        if existing and not force:
            raise TltoolkitError(f"{folder} already holds an evaluation ({', '.join(existing[:3])}...); pass --force "
                                 f"to replace it or choose another --out")
        from tltoolkit.data.files import atomic_path, atomic_write_bytes

        atomic_write_bytes(files["summary.json"], (json.dumps(self.summary(), indent=2) + "\n").encode())
        for name, frame in (("per_class.csv", self.per_class()), ("predictions.csv", self.predictions),
                            ("comparison.csv", self.comparison), ("confused_pairs.csv", self.confused_pairs())):
            with atomic_path(files[name]) as temporary:
                frame.to_csv(temporary, index=False)
        for name, figure in (("confusion_matrix.png", confusion_figure(self, normalize=False)),
                             ("confusion_matrix_normalized.png", confusion_figure(self, normalize=True)),
                             ("worst_predictions.png", contact_sheet(self.worst(), "Worst predictions"))):
            save_figure(figure, files[name])
        return files


def top_k_accuracy(probs: np.ndarray, label_ids: np.ndarray, k: int) -> float:
    """The share of images whose true class is among the `k` most probable (ties count against)."""
    true = probs[np.arange(len(label_ids)), label_ids]
    higher = (probs > true[:, None]).sum(axis=1)
    return float((higher < k).mean())


def evaluation_table(data, class_names, split: str = "all", val_split: float = 0.2):
    """The usable images of `data` whose class the model knows, with `label_id` in the model's ids, a
    table of the classes it does not know (class, images), which are left out, and how many files the
    scan quarantined."""
    from tltoolkit.data import scan

    index = {name: i for i, name in enumerate(class_names)}
    result = scan(data, val_split=val_split, class_index=index, check=False)
    table = result.usable(None if split == "all" else split)
    if table.empty:
        raise TltoolkitError(f"no usable labelled images in {data}" + ("" if split == "all" else f" ({split} split)")
                             + f"; check it with `tltoolkit scan {data}`")
    known = table["label"].isin(index)
    unknown = table.loc[~known].groupby("label").size().rename("images").reset_index().rename(columns={"label": "class"})
    if not known.any():
        raise TltoolkitError(f"none of the classes of {data} ({_names(sorted(table['label'].unique()))}) is known to "
                             f"the model ({_names(class_names)}); evaluate on data with the model's classes")
    return table.loc[known].reset_index(drop=True), unknown, len(result.quarantined)


def evaluate(model_or_runs, data, tta: str = "none", top_k: int = 5, batch_size: int = 32, split: str = "all",
             val_split: float = 0.2, progress: bool = False) -> Evaluation:
    """Evaluates one classifier or an ensemble on the labelled images of `data` (class folders, a
    manifest or tfds:NAME). The comparison table has each model without and with `tta`, and with
    several models the ensemble's; the rest of the report is for the last row: all models, with `tta`."""
    classifiers = _as_classifiers(model_or_runs)
    check_tta(tta)
    names = classifiers[0].class_names
    table, unknown, quarantined = evaluation_table(data, names, split, val_split)
    labels = table["label_id"].to_numpy()
    k = max(1, min(top_k, len(names)))
    modes = ["none"] + ([tta] if tta != "none" else [])
    runs = {(c.source, mode): _classifier_probabilities(c, table, mode, batch_size, progress)
            for c in classifiers for mode in modes}
    rows, final = [], None
    for mode in modes:
        for c in classifiers:
            rows.append((c.source, mode, runs[c.source, mode]))
        if len(classifiers) > 1:
            rows.append((f"ensemble of {len(classifiers)}", mode, np.mean([runs[c.source, mode] for c in classifiers], axis=0)))
        final = rows[-1][2]
    comparison = pd.DataFrame([{"model": name, "tta": mode, "accuracy": float((p.argmax(1) == labels).mean()),
                                f"top_{k}_accuracy": top_k_accuracy(p, labels, k)} for name, mode, p in rows])
    predicted = final.argmax(axis=1)
    name_array = np.asarray(names, dtype=object)
    predictions = pd.DataFrame({
        "path": table["path"].astype(str), "decoder": table["decoder"], "label": table["label"], "label_id": labels,
        "predicted": name_array[predicted], "predicted_id": predicted, "probability": final.max(axis=1),
        "true_probability": final[np.arange(len(labels)), labels], "correct": predicted == labels})
    return Evaluation(names, predictions, final, comparison, unknown, quarantined, k, tta)


# -- figures ------------------------------------------------------------------------------------------

def confusion_figure(evaluation: Evaluation, normalize: bool = False):
    """The confusion matrix as a matplotlib figure (true classes down, predictions across); cells
    are written in when there are at most 30 classes."""
    from matplotlib.figure import Figure

    matrix = evaluation.confusion(normalize)
    n = len(evaluation.class_names)
    side = min(20.0, max(5.0, 2.5 + 0.45 * n))
    figure = Figure(figsize=(side + 1.5, side))
    axes = figure.add_subplot()
    shown = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, matrix.max()))
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(n)
    axes.set_xticks(ticks, evaluation.class_names, rotation=90 if n > 6 else 0)
    axes.set_yticks(ticks, evaluation.class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Confusion matrix{' (normalised by true class)' if normalize else ''}\n"
                   f"accuracy {evaluation.accuracy:.1%} on {len(evaluation.predictions)} images")
    if n <= 30:
        threshold = (1 if normalize else max(1, matrix.max())) / 2
        for (row, column), value in np.ndenumerate(matrix):
            axes.text(column, row, f"{value:.2f}" if normalize else str(value), ha="center", va="center",
                      fontsize=8, color="white" if value > threshold else "black")
    figure.tight_layout()
    return figure


def contact_sheet(rows: pd.DataFrame, title: str, columns: int = 4):
    """The images of `rows` (path, decoder, label, predicted, probability) in a grid, each titled with
    its true and predicted labels; mistakes in red."""
    from matplotlib.figure import Figure

    from tltoolkit.pipeline import decode_image_file

    count = max(1, len(rows))
    columns = min(columns, count)
    lines = -(-count // columns)
    figure = Figure(figsize=(2.6 * columns, 2.9 * lines + 0.4))
    figure.suptitle(title)
    for position, row in enumerate(rows.itertuples(index=False), start=1):
        axes = figure.add_subplot(lines, columns, position)
        axes.imshow(decode_image_file(row.path, row.decoder or "tf"))
        axes.set_axis_off()
        wrong = row.label != row.predicted
        axes.set_title(f"true: {row.label}\npred: {row.predicted} ({row.probability:.2f})", fontsize=9,
                       color="tab:red" if wrong else "black")
    figure.tight_layout()
    return figure


def save_figure(figure, path) -> Path:
    from tltoolkit.data.files import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return Path(path)
