"""`audit(data, base)`: what is wrong with a folder of images, found on the feature cache.

- **near duplicates**: pairs whose feature vectors (centred on the folder's mean: a ReLU network's
  features all share one direction, which raw cosine would count as similarity) have a cosine
  similarity of at least `duplicate_cosine` and whose perceptual hashes (a 64-bit dHash) differ in at
  most `hash_bits` bits: two opinions, one from the base's view of the picture, one from its pixels,
  so neither two similar pictures of one writer or scene, nor two different pictures with similar
  coarse pixels, are called copies. Pairs across splits (train/validation leakage) and
  across labels (one picture, two classes) come first.
- **label errors**: out-of-fold class probabilities from k-fold linear heads on the cached features
  (`tltoolkit.training.head.out_of_fold_probabilities`), then confident learning (cleanlab's
  `find_label_issues`, the `audit` extra); the score is 1 - cleanlab's self-confidence quality.
- **outliers**: the mean Euclidean distance to the `neighbours` nearest images in feature space,
  flagged beyond Tukey's far fence (Q3 + 3 IQR) of that distance over the folder. Euclidean, not
  cosine: an image unlike the folder often shows as unusual activation strength, which cosine ignores
  (and strangers alike point the same way from the folder's mean).
- **class balance**: images per class and split.

Outputs (`write_audit`): `audit.parquet` (one row per finding), `report.md`, one contact sheet per
kind, and optionally a manifest without the flagged images. User images are never moved or deleted.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tltoolkit.data.files import atomic_path
from tltoolkit.errors import TltoolkitError
from tltoolkit.features.folder import FolderFeatures, folder_features, nearest_neighbours

KINDS = ("near_duplicate", "label_error", "outlier")
COLUMNS = ["kind", "path", "sha256", "label", "split", "score", "suggested_label", "other_path", "other_sha256",
           "other_label", "other_split", "cosine", "hash_distance", "cross_split", "cross_label"]
OUTPUTS = ("audit.parquet", "report.md", *(f"{kind}s.png" for kind in KINDS))
DUPLICATE_COSINE = 0.96
HASH_BITS = 3  # with the cosine: 20 of 20 planted copies among 743 digits and 1 other pair (benchmarks/audit.py)
NEIGHBOURS = 5
SHEET_ROWS = 24  # images (or pairs) per contact sheet: the most important ones


@dataclasses.dataclass
class Audit:
    findings: pd.DataFrame  # COLUMNS, the most important first within each kind
    balance: pd.DataFrame  # class, train, validation, total, share
    folder: FolderFeatures
    seconds: dict  # extraction, near_duplicates, label_errors, outliers

    def flagged(self, kind: str) -> pd.DataFrame:
        return self.findings[self.findings["kind"] == kind]


def require_cleanlab():
    try:
        import cleanlab.filter  # noqa: F401
    except ImportError:
        raise TltoolkitError("label errors need cleanlab: pip install 'tltoolkit[audit]' (or pip install "
                             "cleanlab)") from None


def audit(data, base: str, weights="imagenet", *, duplicate_cosine: float = DUPLICATE_COSINE,
          hash_bits: int = HASH_BITS, neighbours: int = NEIGHBOURS, folds: int = 5, seed: int = 0,
          cache_dir=None, progress: bool = False, **feature_options) -> Audit:
    """Audits `data` (class folders or a manifest) on `base`'s cached features (see the module doc)."""
    require_cleanlab()
    if not 0 < duplicate_cosine <= 1:
        raise TltoolkitError(f"--duplicate-cosine must be in (0, 1], got {duplicate_cosine}")
    folder = folder_features(data, base, weights, cache_dir=cache_dir, progress=progress, seed=seed,
                             **feature_options)
    return audit_features(folder, duplicate_cosine=duplicate_cosine, hash_bits=hash_bits, neighbours=neighbours,
                          folds=folds, seed=seed)


def audit_features(folder: FolderFeatures, *, duplicate_cosine: float = DUPLICATE_COSINE, hash_bits: int = HASH_BITS,
                   neighbours: int = NEIGHBOURS, folds: int = 5, seed: int = 0) -> Audit:
    """The audit of images whose features are at hand (`audit` after extraction)."""
    table, x = folder.table.reset_index(drop=True), folder.features
    if len(table) <= neighbours:
        raise TltoolkitError(f"{len(table)} usable images are too few to audit (more than {neighbours} needed); "
                             f"add images")
    seconds = {"extraction": folder.seconds}
    tic = time.perf_counter()
    centred = x - x.mean(axis=0)
    index, similarity = nearest_neighbours(centred, centred, max(neighbours, 10), same=True)
    duplicates = near_duplicates(table, index, similarity, duplicate_cosine, hash_bits)
    seconds["near_duplicates"] = time.perf_counter() - tic
    tic = time.perf_counter()
    errors = label_errors(table, x, folder.class_names, folds, seed)
    seconds["label_errors"] = time.perf_counter() - tic
    tic = time.perf_counter()
    far = outliers(table, nearest_neighbours(x, x, neighbours, same=True, metric="euclidean")[1])
    seconds["outliers"] = time.perf_counter() - tic
    found = [frame for frame in (duplicates, errors, far) if len(frame)]
    findings = pd.concat(found, ignore_index=True).reindex(columns=COLUMNS) if found else pd.DataFrame(columns=COLUMNS)
    findings = findings.astype({"hash_distance": "Int64", "cross_split": "boolean", "cross_label": "boolean"})
    return Audit(findings, class_balance(table, folder.class_names), folder, seconds)


# -- near duplicates ---------------------------------------------------------------------------------


def dhash(path, bits: int = 8) -> int:
    """The difference hash of an image: grey, `bits+1` x `bits` pixels, one bit per horizontally adjacent
    pair (is the left one brighter). Resizing and re-encoding barely change it."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        grey = ImageOps.exif_transpose(image).convert("L").resize((bits + 1, bits), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, "int16")
    value = 0
    for bit in (pixels[:, 1:] < pixels[:, :-1]).ravel():
        value = (value << 1) | int(bit)
    return value


def near_duplicates(table: pd.DataFrame, index: np.ndarray, similarity: np.ndarray, cosine: float,
                    hash_bits: int) -> pd.DataFrame:
    """Each pair once, among each image's nearest neighbours (`index`, `similarity` from
    `nearest_neighbours`), that both the features (cosine) and the perceptual hash call copies."""
    rows, columns = np.nonzero(similarity >= cosine)
    first, second = rows, index[rows, columns]
    pairs = pd.DataFrame({"a": np.minimum(first, second), "b": np.maximum(first, second),
                          "cosine": similarity[rows, columns]}).drop_duplicates(["a", "b"])
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    hashes = {i: dhash(table.at[i, "path"]) for i in np.unique(pairs[["a", "b"]])}
    pairs["hash_distance"] = [(hashes[a] ^ hashes[b]).bit_count() for a, b in zip(pairs["a"], pairs["b"])]
    pairs = pairs[pairs["hash_distance"] <= hash_bits]
    a, b = table.loc[pairs["a"]].reset_index(drop=True), table.loc[pairs["b"]].reset_index(drop=True)
    found = pd.DataFrame({
        "kind": "near_duplicate", "path": a["path"], "sha256": a["sha256"], "label": a["label"], "split": a["split"],
        "score": pairs["cosine"].to_numpy("float64"), "suggested_label": "", "other_path": b["path"],
        "other_sha256": b["sha256"], "other_label": b["label"], "other_split": b["split"],
        "cosine": pairs["cosine"].to_numpy("float64"), "hash_distance": pairs["hash_distance"].astype("Int64").to_numpy(),
        "cross_split": (a["split"] != b["split"]).to_numpy(), "cross_label": (a["label"] != b["label"]).to_numpy()})
    return found.sort_values(["cross_label", "cross_split", "score"], ascending=False, kind="stable")


# -- label errors ------------------------------------------------------------------------------------


def label_errors(table: pd.DataFrame, x: np.ndarray, class_names, folds: int, seed: int) -> pd.DataFrame:
    """The images confident learning finds mislabelled, from out-of-fold head probabilities."""
    import cleanlab.filter
    import cleanlab.rank

    from tltoolkit.training.head import out_of_fold_probabilities, sweep_settings

    labels = table["label_id"].to_numpy().astype(int)
    # Class ids follow the class index, which may name classes without usable images: compact them.
    present, given = np.unique(labels, return_inverse=True)
    probabilities, _ = out_of_fold_probabilities(x, given, len(present), sweep_settings(), folds, seed=seed)
    issues = cleanlab.filter.find_label_issues(given, probabilities, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = cleanlab.rank.get_label_quality_scores(given, probabilities, method="self_confidence")
    suggested = np.asarray(class_names)[present[probabilities.argmax(axis=1)]]
    rows = table[issues]
    found = pd.DataFrame({"kind": "label_error", "path": rows["path"], "sha256": rows["sha256"],
                          "label": rows["label"], "split": rows["split"], "score": 1.0 - quality[issues].astype("float64"),
                          "suggested_label": suggested[issues]})
    return found.sort_values("score", ascending=False, kind="stable")


# -- outliers and balance ----------------------------------------------------------------------------


def outliers(table: pd.DataFrame, distances: np.ndarray) -> pd.DataFrame:
    """The images whose mean distance to their nearest neighbours is beyond Tukey's far fence."""
    score = distances.mean(axis=1, dtype="float64")
    q1, q3 = np.percentile(score, [25, 75])
    far = score > q3 + 3 * (q3 - q1)
    rows = table[far]
    found = pd.DataFrame({"kind": "outlier", "path": rows["path"], "sha256": rows["sha256"], "label": rows["label"],
                          "split": rows["split"], "score": score[far], "suggested_label": ""})
    return found.sort_values("score", ascending=False, kind="stable")


def class_balance(table: pd.DataFrame, class_names) -> pd.DataFrame:
    counts = pd.crosstab(table["label"], table["split"]).reindex(class_names).fillna(0).astype(int)
    for split in ("train", "validation"):
        if split not in counts:
            counts[split] = 0
    counts = counts[["train", "validation"]]
    counts["total"] = counts.sum(axis=1)
    counts["share"] = (counts["total"] / max(1, counts["total"].sum())).round(3)
    return counts.rename_axis("class").reset_index()


# -- outputs -----------------------------------------------------------------------------------------


def check_outputs(out, manifest=None, force: bool = False) -> tuple[Path, Path | None]:
    """Refuses, before any work, to replace an earlier audit in `out` or an existing manifest without `force`."""
    out = Path(out)
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not force:
        raise TltoolkitError(f"{out} already holds an audit ({existing[0]}); pass --force to replace it or "
                             f"choose another --out")
    if manifest is not None:
        manifest = Path(manifest)
        if manifest.suffix.lower() != ".csv":
            raise TltoolkitError(f"--write-manifest {manifest} must end in .csv")
        if manifest.exists() and not force:
            raise TltoolkitError(f"--write-manifest {manifest} already exists; pass --force to replace it or "
                                 f"choose another name")
    return out, manifest


def kept_images(result: Audit) -> pd.DataFrame:
    """The usable images without the flagged ones: label errors and outliers out; of a near-duplicate
    pair, both when their labels differ (neither can be trusted), else the validation copy (leakage)
    or the second path."""
    found = result.findings
    dropped = set(found.loc[found["kind"].isin(["label_error", "outlier"]), "sha256"])
    pairs = found[found["kind"] == "near_duplicate"]
    for pair in pairs.itertuples(index=False):
        if pair.cross_label:
            dropped |= {pair.sha256, pair.other_sha256}
        elif pair.split == "validation" and pair.other_split != "validation":
            dropped.add(pair.sha256)
        elif pair.other_sha256 not in dropped:
            dropped.add(pair.other_sha256)
    table = result.folder.table
    return table[~table["sha256"].isin(dropped)]


def write_manifest(table: pd.DataFrame, path) -> Path:
    """`path,label,split` with paths relative to the manifest's folder (as `--data` reads them)."""
    path = Path(path).absolute()
    folder = str(path.parent)
    outside = [p for p in table["path"] if os.path.commonpath([folder, os.path.abspath(p)]) != folder]
    if outside:
        raise TltoolkitError(f"image {outside[0]} is outside {folder}; write the manifest in a folder above the "
                             f"images (a manifest's paths must lie under its folder)")
    frame = pd.DataFrame({"path": [os.path.relpath(os.path.abspath(p), folder) for p in table["path"]],
                          "label": table["label"].to_numpy(), "split": table["split"].to_numpy()})
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)
    return path


def write_audit(result: Audit, out, manifest=None, force: bool = False) -> list[Path]:
    """`audit.parquet`, `report.md`, one contact sheet per kind (and the manifest) into `out`, each atomically."""
    from tltoolkit.reports import save_figure

    out, manifest = check_outputs(out, manifest, force)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "audit.parquet") as temporary:
        result.findings.to_parquet(temporary, index=False)
    written = [out / "audit.parquet"]
    for kind in KINDS:
        written.append(save_figure(_sheet(result.flagged(kind).head(SHEET_ROWS), kind, result.folder.table),
                                   out / f"{kind}s.png"))
    kept = None
    if manifest is not None:
        kept = kept_images(result)
        written.append(write_manifest(kept, manifest))
    with atomic_path(out / "report.md") as temporary:
        Path(temporary).write_text(report(result, kept, manifest), encoding="utf-8")
    written.insert(1, out / "report.md")
    return written


def report(result: Audit, kept=None, manifest=None) -> str:
    from tltoolkit.reports import markdown_table

    folder = result.folder
    spec = folder.extractor.spec
    lines = [f"# Audit: {len(folder.table)} images, {len(folder.class_names)} classes", "",
             f"Features: {spec.arch}, {spec.cut} ({folder.features.shape[1]} values; {folder.computed} image(s) "
             f"computed, the rest from the cache).", ""]
    duplicates = result.flagged("near_duplicate")
    summary = pd.DataFrame({"kind": ["near duplicate pairs", "  of them across splits", "  of them across labels",
                                     "likely label errors", "outliers"],
                            "count": [len(duplicates), int(duplicates["cross_split"].sum()),
                                      int(duplicates["cross_label"].sum()), len(result.flagged("label_error")),
                                      len(result.flagged("outlier"))]})
    lines += [markdown_table(summary), "## Class balance", "", markdown_table(result.balance)]
    shares = result.balance["total"][result.balance["total"] > 0]
    if len(shares):
        lines += [f"Largest class / smallest: {shares.max() / shares.min():.1f}x.", ""]
    shown = {"near_duplicate": ["path", "split", "label", "other_path", "other_split", "other_label", "cosine",
                                "hash_distance"],
             "label_error": ["path", "split", "label", "suggested_label", "score"],
             "outlier": ["path", "split", "label", "score"]}
    for kind in KINDS:
        rows = result.flagged(kind)
        lines += [f"## {kind.replace('_', ' ').capitalize()}s ({len(rows)}; sheet: {kind}s.png)", ""]
        if len(rows):
            lines.append(markdown_table(rows[shown[kind]].head(50).round(3)))
        else:
            lines.append("None found.\n")
    if manifest is not None:
        lines += [f"Manifest without the flagged images: {manifest} ({len(kept)} of {len(folder.table)} images).", ""]
    timing = ", ".join(f"{name} {value:.2f} s" for name, value in result.seconds.items())
    return "\n".join(lines + [f"Time: {timing}.", ""])


def _sheet(rows: pd.DataFrame, kind: str, table: pd.DataFrame):
    """A contact sheet of findings: pairs side by side (one pair a line), single images four a line."""
    from matplotlib.figure import Figure

    from tltoolkit.pipeline import decode_image_file  # TensorFlow, only when a sheet is drawn

    decoders = dict(zip(table["path"], table["decoder"]))
    if kind == "near_duplicate":
        cells = [cell for r in rows.itertuples(index=False) for cell in (  # a pair: two cells side by side
            (r.path, f"{r.label} ({r.split})\ncosine {r.cosine:.3f}"),
            (r.other_path, f"{r.other_label} ({r.other_split})\nhash distance {r.hash_distance}"))]
    else:
        detail = (lambda r: f"-> {r.suggested_label} ({r.score:.2f})") if kind == "label_error" else (
            lambda r: f"distance {r.score:.3f}")
        cells = [(r.path, f"{r.label} ({r.split})\n{detail(r)}") for r in rows.itertuples(index=False)]
    columns = 4
    lines = max(1, -(-len(cells) // columns))
    figure = Figure(figsize=(2.4 * columns, 2.7 * lines + 0.5), layout="constrained")  # leaves room for the title
    figure.suptitle(f"{kind.replace('_', ' ')}s" + ("" if cells else ": none found"))
    for position, (path, caption) in enumerate(cells, start=1):
        axes = figure.add_subplot(lines, columns, position)
        axes.imshow(decode_image_file(path, decoders.get(path) or "tf"))
        axes.set_axis_off()
        axes.set_title(f"{Path(path).name}\n{caption}", fontsize=8)
    return figure
