"""`folder_features`: a folder's usable images and their feature vectors, through the feature cache
(what `tltoolkit audit` and `tltoolkit rank` start from: a second call computes nothing), and
`nearest_neighbours` among such vectors by cosine similarity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tltoolkit.errors import TltoolkitError

# Query-reference scores computed at once: with argpartition's copy and its int64 indices, about 170 MB at
# the peak (tests/test_audit.py measures it at a smaller budget).
BLOCK_SCORES = 1 << 23


@dataclasses.dataclass
class FolderFeatures:
    table: pd.DataFrame  # usable images, one per distinct image: path, label, label_id, sha256, split, decoder...
    features: np.ndarray  # [images, dims] float32, in table order
    class_names: list[str]  # by class id
    extractor: object  # the FeatureExtractor
    computed: int  # images this call computed (the rest came from the cache)
    seconds: float  # the extraction call's time (scan excluded)


def parse_base(text: str, default_weights="imagenet") -> tuple[str, str | None]:
    """`BASE[@WEIGHTS]` -> (base, weights): `resnet20_cifar@none`, `resnet50@imagenet:tv2_in1k`,
    `resnet20_cifar@data/backbone/x.weights.h5`; without `@`, `default_weights`. `none`: random weights."""
    base, _, weights = text.partition("@")
    if not base:
        raise TltoolkitError(f"--base {text!r} names no base; use an architecture id, keras:NAME or a .keras file")
    weights = weights or default_weights
    return base, None if weights in (None, "none") else weights


def folder_features(data, base: str, weights="imagenet", *, val_split: float = 0.2, image_size=None,
                    preprocessing=None, batch_size: int = 32, cache_dir=None, progress: bool = False,
                    seed: int = 0, rehash: bool = False) -> FolderFeatures:
    """Scans `data` (class folders, a manifest or tfds:NAME; at least two classes, else a one-line
    error), builds `base`'s penultimate-layer extractor and returns the usable images' feature vectors,
    extracting only what the cache lacks."""
    from tltoolkit.data import scan
    from tltoolkit.features.extractor import feature_extractor
    from tltoolkit.features.local import extract_features, prepared

    result = scan(data, val_split, cache_dir=cache_dir, cache=not rehash)
    table = prepared(result.usable())
    extractor = feature_extractor(base, weights=weights, image_size=image_size, preprocessing=preprocessing,
                                  seed=seed)
    cache, stats = extract_features(table, extractor, cache_dir, batch_size, progress=progress)
    _, features = cache.features(table)
    return FolderFeatures(table, np.asarray(features, "float32").reshape(len(table), -1), result.class_names,
                          extractor, stats.computed, stats.seconds)


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, k: int, same: bool = False,
                       metric: str = "cosine", block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The `k` references nearest each query: ([queries, k] indices, values), nearest first; the values are
    cosine similarities (`metric="cosine"`) or Euclidean distances (`"euclidean"`). `same`: queries are the
    references, and an image is not its own neighbour. Computed a block of queries at a time: at most
    `block` queries and BLOCK_SCORES scores, so memory stays bounded however many references there are
    (2048 queries x 100,000 references are 2.5 GB of scores and argpartition indices)."""
    queries = np.asarray(queries, "float32").reshape(len(queries), -1)
    references = np.asarray(references, "float32").reshape(len(references), -1)
    if metric == "cosine":
        unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
        queries, references = unit(queries), unit(references)
    elif metric != "euclidean":
        raise ValueError(f"unknown metric {metric!r}")
    squared = (references ** 2).sum(axis=1)
    k = min(k, len(references) - int(same))
    if k < 1:
        raise TltoolkitError("too few images to find neighbours among; add images")
    block = max(1, min(block, BLOCK_SCORES // max(1, len(references))))
    index = np.empty((len(queries), k), "int64")
    values = np.empty((len(queries), k), "float32")
    for start in range(0, len(queries), block):
        scores = queries[start:start + block] @ references.T  # larger is nearer
        if metric == "euclidean":  # minus the squared distance, without the query's own (constant) norm
            scores = 2 * scores - squared
        if same:
            rows = np.arange(len(scores))
            scores[rows, start + rows] = -np.inf
        top = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]  # (faster than partitioning -scores)
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        index[start:start + block] = np.take_along_axis(top, order, axis=1)
        values[start:start + block] = np.take_along_axis(top_scores, order, axis=1)
        if metric == "euclidean":
            norms = (queries[start:start + block] ** 2).sum(axis=1, keepdims=True)
            values[start:start + block] = np.sqrt(np.maximum(norms - values[start:start + block], 0.0))
    return index, values
