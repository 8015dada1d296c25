"""Extraction into the feature cache on this machine: `extract_features`.

The extractor runs on the batches of `tltoolkit.pipeline.image_dataset`: decoding runs ahead in
tf.data's threads, and a writer thread stores shards while the next batch computes.
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time

import numpy as np
import pandas as pd

from tltoolkit.errors import TltoolkitError
from tltoolkit.features.cache import FeatureCache
from tltoolkit.features.extractor import FeatureExtractor


@dataclasses.dataclass
class ExtractionStats:
    images: int  # distinct images asked for
    computed: int  # of them, computed by this call (the rest came from the cache)
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds else 0.0


def prepared(table: pd.DataFrame) -> pd.DataFrame:
    """The rows to extract: usable ones (when the table has a status), one per distinct image."""
    missing = [c for c in ("path", "sha256") if c not in table.columns]
    if missing:
        raise TltoolkitError(f"the image table lacks column(s) {', '.join(missing)}; pass a scan's table")
    if "status" in table.columns:
        table = table[table["status"].isin(("ok", "converted"))]
    table = table.drop_duplicates("sha256")
    if "label" not in table.columns:
        table = table.assign(label="")
    return table.reset_index(drop=True)


def extract_features(table: pd.DataFrame, extractor: FeatureExtractor, cache_dir=None, batch_size: int = 32,
                     shard_size: int | None = None, progress: bool = True) -> tuple[FeatureCache, ExtractionStats]:
    """Stores the features of every image of `table` (a scan's table) in the cache; computes only the
    images the cache lacks, so a re-run after a crash, or on a grown folder, does only the new work.
    Returns the cache and what was done."""
    from tltoolkit.pipeline import image_dataset

    started = time.perf_counter()
    table, cache, todo = cache_and_misses(table, extractor, cache_dir, shard_size)
    if len(todo):
        # The row index travels as the "label": tf.data may deliver images out of order (faster),
        # except with augmented views, whose random draws then follow the table's order (seeded runs
        # over the same table give the same views).
        dataset = image_dataset(todo.assign(label_id=np.arange(len(todo))), extractor.spec.image_size,
                                batch_size, resize=extractor.spec.resize, dtype="float32",
                                deterministic=extractor.spec.views > 0)
        bar = _progress(len(todo) * extractor.spec.view_count, progress)
        with cache.writer() as writer, _Background(writer.add) as background:
            for images, index in dataset:
                index = index.numpy()
                rows = todo.iloc[index]
                for view in range(extractor.spec.view_count):
                    background.put(rows["sha256"].tolist(), rows["path"].tolist(), rows["label"].tolist(),
                                   extractor(images), view)
                    bar.update(len(index))
        bar.close()
    return cache, ExtractionStats(len(table), len(todo), time.perf_counter() - started)


def cache_and_misses(table, extractor, cache_dir, shard_size=None):
    """The rows to extract, the extractor's cache, and the rows it lacks."""
    table = prepared(table)
    cache = FeatureCache(extractor.spec, cache_dir, shard_size)
    return table, cache, table[table["sha256"].isin(set(cache.missing(table["sha256"])))].reset_index(drop=True)


class _Background:
    """Runs `function(*args)` calls in order on one thread, so writing overlaps the next batch's
    compute; the first error is raised in the caller's thread."""

    def __init__(self, function):
        self._function = function
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while (args := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._function(*args)
                except BaseException as error:  # re-raised in the caller's thread
                    self._error = error

    def put(self, *args):
        if self._error is not None:
            raise self._error
        self._queue.put(args)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, error_type, error, traceback):
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and error_type is None:
            raise self._error
        return False


def _progress(total: int, enabled: bool):
    """A progress bar on stderr with images/s and the ETA."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="extract", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)
