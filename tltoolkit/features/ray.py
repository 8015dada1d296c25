"""Extraction on a Ray cluster: the table's rows through `map_batches` over an actor pool, each actor
holding one extraction model (pip install 'tltoolkit[ray]'), on the driver's runtime and precision
(compiled in each actor; int8 calibrated there on the same seeded sample of the same table)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from tltoolkit.errors import TltoolkitError
from tltoolkit.features.cache import FeatureCache
from tltoolkit.features.extractor import FeatureExtractor, feature_extractor
from tltoolkit.features.local import ExtractionStats, cache_and_misses, prepared


class _RayWorker:
    """A Ray actor: one extraction model per worker, fed pandas batches of table rows. `key`: the
    driver's cache key: an actor whose features would differ (another OpenVINO or NNCF version, other
    weights on its node) refuses to run rather than store them under the driver's key."""

    def __init__(self, options: dict, key: str | None = None):
        self.extractor = feature_extractor(**options)
        if key is not None and self.extractor.spec.key() != key:
            raise TltoolkitError(f"a Ray worker's features key as {self.extractor.spec.key()}, the driver's as {key} "
                                 f"(runtime {self.extractor.spec.runtime}); install the same packages on every node")

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from tltoolkit.pipeline import image_dataset

        spec = self.extractor.spec
        # The same decode and resize as the local engine, so both write the same features.
        images = next(iter(image_dataset(batch, spec.image_size, len(batch), resize=spec.resize,
                                         dtype="float32", with_labels=False, deterministic=True)))
        features = self.extractor(images).astype(spec.dtype)
        return batch[["path", "label", "sha256"]].assign(view=0, features=list(features))


def require_ray():
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise TltoolkitError("the ray engine needs Ray: pip install 'tltoolkit[ray]' (or use --engine local)") from None
    return ray


def extract_features_with_ray(table: pd.DataFrame, extractor: FeatureExtractor, options: dict, cache_dir=None,
                              batch_size: int = 32, address: str | None = None, workers: int | None = None,
                              ) -> tuple[FeatureCache, ExtractionStats]:
    """`extract_features` with the images the cache lacks computed by a Ray job (`extract_with_ray`,
    `options` are the extractor's `feature_extractor` arguments) and stored in the cache here, on the
    driver, as they arrive: a killed job or a grown folder computes only what the cache lacks."""
    started = time.perf_counter()
    table, cache, todo = cache_and_misses(table, extractor, cache_dir)
    if len(todo):
        with cache.writer() as writer:
            for rows, features in extract_with_ray(todo, options, batch_size, address, workers,
                                                   key=extractor.spec.key()):
                writer.add(rows["sha256"].tolist(), rows["path"].tolist(), rows["label"].tolist(), features)
    return cache, ExtractionStats(len(table), len(todo), time.perf_counter() - started)


def extract_with_ray(table: pd.DataFrame, options: dict, batch_size: int = 32, address: str | None = None,
                     workers: int | None = None, num_gpus: float | None = None, rows: int = 4096,
                     key: str | None = None):
    """`(rows, features)` chunks of `table`'s features, computed by a Ray Data job: the table's rows
    -> `map_batches` over an actor pool (`workers` actors, one `feature_extractor(**options)` model
    each, `num_gpus` each; by default one GPU each where the cluster has GPUs). `address` joins a
    running cluster; otherwise a local Ray starts with `workers` CPUs. `key`: the cache key every
    actor's extractor must have. Yields rows in table order."""
    ray = require_ray()
    table = prepared(table)
    if "decoder" not in table.columns:
        table = table.assign(decoder="tf")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        resources = ray.cluster_resources()
        workers = workers or max(1, int(resources.get("CPU", 1)))
        if num_gpus is None:
            num_gpus = 1 if resources.get("GPU", 0) else 0
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        # Enough blocks for every actor to get work, and a few more to balance the load.
        # (Split here: from_pandas(override_num_blocks=) fails on pandas 3 in Ray 2.60.)
        block_rows = max(batch_size, -(-len(table) // (workers * 8)))
        columns = table[["path", "label", "sha256", "decoder"]]
        dataset = ray.data.from_pandas([columns.iloc[start:start + block_rows]
                                        for start in range(0, len(columns), block_rows)])
        dataset = dataset.map_batches(
            _RayWorker, fn_constructor_kwargs={"options": options, "key": key}, batch_size=batch_size, batch_format="pandas",
            concurrency=workers, num_gpus=num_gpus, num_cpus=0 if num_gpus else 1)
        for batch in dataset.iter_batches(batch_size=rows, batch_format="pandas"):
            yield batch, np.stack(list(batch["features"]))
    finally:
        if started_here:
            ray.shutdown()
