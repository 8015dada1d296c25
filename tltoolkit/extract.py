"""Feature extraction: the frozen part of a network over a table of images, into the feature cache,
on this machine (`extract_features`) or on a Ray cluster (`extract_with_ray`).

    extractor = feature_extractor("resnet50", weights="imagenet", layer="penultimate")
    cache, stats = extract_features(scan_result.usable(), extractor)
    dataset = tltoolkit.cache.cached_dataset(cache, scan_result.usable("train"))

The extraction model is raw 0..255 pixels -> [augmentation, for views] -> the architecture's
preprocessing -> the base up to the cut layer -> [global pooling]. It runs as one `tf.function` on
the batches of `tltoolkit.pipeline.image_dataset`: decoding runs ahead in tf.data's threads, and a
writer thread stores shards while the next batch computes. (On this 2-core machine `model.predict`
on NumPy arrays ran ResNet-50 at ~0.65x the rate of a `tf.function` call on the same tensors;
`predict_on_batch` and a tf.function are on par, see benchmarks/extraction.py.)
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time

import numpy as np
import pandas as pd

from tltoolkit.architectures.registry import ArchSpec, Checkpoint
from tltoolkit.cache import FeatureCache, FeatureSpec
from tltoolkit.errors import TltoolkitError

PENULTIMATE = "penultimate"
POOLINGS = ("avg", "max")


@dataclasses.dataclass
class FeatureExtractor:
    """The extraction model and the `FeatureSpec` that keys its features."""

    model: object  # keras.Model: raw pixels in, features out
    spec: FeatureSpec
    base: object  # the full keras.Model the cut was taken from (for `tail_model`)
    augmentation: object = None  # for views: random layers on raw pixels, run in training mode

    def __post_init__(self):
        import tensorflow as tf

        def features(images):
            if self.augmentation is not None:
                images = self.augmentation(images, training=True)
            # The base (BatchNormalization included) always runs in inference mode.
            return self.model(images, training=False)

        # One trace for every batch size (the last batch is smaller): a second trace would cost a
        # fresh process about as much as extracting a batch.
        inputs = self.model.inputs[0]
        self._call = tf.function(features, input_signature=[tf.TensorSpec((None, *inputs.shape[1:]), inputs.dtype)])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.model.output.shape[1:])

    def __call__(self, images) -> np.ndarray:
        return self._call(images).numpy()


@dataclasses.dataclass
class ExtractionStats:
    images: int  # distinct images asked for
    computed: int  # of them, computed by this call (the rest came from the cache)
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds else 0.0


def cut_layer(model, spec, layer: str) -> str:
    """The name of the layer whose output `layer` means: `penultimate` is the spec's feature layer (a
    derived spec's: the base's output); a stage name is that stage's last layer (so `block4` is
    block4's output, the input of block5); any other name must be a layer whose output alone
    determines the rest (`stages.cut_points`)."""
    from tltoolkit.architectures.stages import check_cut_layer, spec_stage_ranges

    if layer == PENULTIMATE:
        return model.layers[-1].name if spec.derived else spec.penultimate
    ranges = {r.name: r for r in spec_stage_ranges(model, spec) if r.name in spec.stage_names}
    if layer in ranges:
        return model.layers[ranges[layer].stop - 1].name
    try:
        return model.layers[check_cut_layer(model, layer)].name
    except TltoolkitError as error:
        raise TltoolkitError(f"{spec.id} has no stage {layer!r} (stages: {PENULTIMATE}, "
                             f"{', '.join(spec.stage_names)}), and as a layer: {error}") from None


def feature_extractor(arch, weights=None, image_size=None, layer: str = PENULTIMATE, pooling=None,
                      dtype: str = "float32", resize: str = "center_crop", preprocessing: str | None = None,
                      views: int = 0, augmentation: str | None = None, seed: int = 0) -> FeatureExtractor:
    """Builds the extraction model for `arch` and the spec that keys its features.

    `arch`: a registry id, `keras:NAME`, the path of a saved `.keras` base, or the `ArchSpec` that
    `tltoolkit.architectures.bases.resolve_base` made of one of them (see there).
    `weights`: None (random init after `keras.utils.set_random_seed(seed)`: reproducible), `imagenet`
    (a saved model: its own weights) or a weights file. `layer`: `penultimate` (for `keras:NAME` and a
    saved base: their output, average-pooled unless `pooling="max"`), a stage (its output) or a layer
    name (its output; see `cut_layer`). `pooling`: None keeps a stage's feature map (what a
    later fine-tune of the next stages needs), `avg`/`max` pool it to a vector. `preprocessing`: a
    mode overriding the base's (required for a saved model). `views` > 0: that many views per image
    through the `augmentation` policy, seeded with `seed`.
    """
    import keras

    from tltoolkit.architectures import build
    from tltoolkit.architectures.bases import build_base, cache_name, resolve_base
    from tltoolkit.architectures.preprocessing import preprocessing_layer
    from tltoolkit.pipeline import RESIZE_POLICIES, _image_size

    if pooling not in (None, *POOLINGS):
        raise TltoolkitError(f"unknown pooling {pooling!r}; use avg, max or none")
    if resize not in RESIZE_POLICIES:
        raise TltoolkitError(f"unknown resize policy {resize!r}; use one of {', '.join(RESIZE_POLICIES)}")
    spec = arch if isinstance(arch, ArchSpec) else resolve_base(arch, image_size, preprocessing, weights)
    arch = spec.id
    size = _image_size(image_size or spec.default_size)
    if weights is None:
        keras.utils.set_random_seed(seed)
    if spec.derived:
        model = build_base(spec, weights, size)
    else:
        model = build(arch, weights=weights, include_top=layer == PENULTIMATE, input_shape=(*size, spec.channels))
    cut = cut_layer(model, spec, layer)
    weights_id = _weights_id(model, spec, weights, seed, cut)
    features = model.get_layer(cut).output
    if layer == PENULTIMATE and spec.derived and pooling is None and len(features.shape) == 4:
        pooling = "avg"  # penultimate means a vector: keras.applications' pooling="avg" (a stage keeps its map)
    if pooling and len(features.shape) != 4:
        raise TltoolkitError(f"{arch} layer {cut} outputs vectors already; drop --pooling (it pools feature maps)")
    truncated = keras.Model(model.inputs, features, name=f"{cache_name(spec)}_to_{cut}")

    augment = None
    if views:
        from tltoolkit.augment import augmentation as augmentation_block

        augment = augmentation_block(augmentation, image_size=size, seed=seed)
    inputs = keras.Input((*size, 3), name="pixels")  # RGB pixels, whatever the base takes
    x = preprocessing_layer(preprocessing or spec.preprocessing, channels=spec.channels)(inputs)
    x = truncated(x)
    if pooling:
        x = (keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D)(
            name=f"{pooling}_pool_features")(x)
    feature_spec = FeatureSpec(arch=cache_name(spec), weights=weights_id, image_size=size, resize=resize,
                               preprocessing=preprocessing or spec.preprocessing, cut=cut, pooling=pooling,
                               dtype=dtype, views=views, augmentation=augmentation if views else None,
                               seed=seed)
    return FeatureExtractor(keras.Model(inputs, x, name=f"{cache_name(spec)}_features"), feature_spec, model,
                            augment)


def _weights_id(model, spec, weights, seed: int, cut: str) -> str:
    from tltoolkit.architectures.weights import IMAGENET, file_digest, has_reference_top, is_published, weights_entry

    if weights is None:
        return f"random-init:{seed}"
    if not is_published(weights):
        return f"sha256:{file_digest(weights, 'sha256')}"
    if spec.derived:
        # keras.applications checked its download against the published hash; a saved model's weights
        # are in the file that cache_name hashes. Either way the loaded values name them exactly.
        return f"{IMAGENET}:weights-sha256:{weights_digest(model)}"
    entry = weights_entry(spec, weights)
    with_top = has_reference_top(model, spec, entry.num_classes)
    names = [layer.name for layer in model.layers]
    head = names[names.index(spec.base_output) + 1:]
    up_to_cut = head[:head.index(cut) + 1] if cut in head else []
    if not with_top and any(model.get_layer(name).weights for name in up_to_cut):
        raise TltoolkitError(f"{spec.id}'s {cut} layer is in the classifier, whose ImageNet weights fit only "
                             f"{spec.default_size}x{spec.default_size} input; use --image-size "
                             f"{spec.default_size} or cut at a stage (--layer {spec.stage_names[-1]} --pooling avg)")
    if isinstance(entry, Checkpoint):
        from tltoolkit.architectures.weights import published_id

        return published_id(entry)
    # get_file checked the published hash of the file that was loaded: it names the weights exactly.
    return f"imagenet:{entry.file_hash if with_top else entry.notop_hash}"


def weights_digest(model) -> str:
    """SHA-256 of a model's weight values and shapes, in order."""
    import hashlib

    digest = hashlib.sha256()
    for value in model.get_weights():
        digest.update(str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def tail_model(model, cut: str, name: str | None = None):
    """The part of `model` after layer `cut`, as a Functional model taking `cut`'s output (cached
    features) and sharing `model`'s layers: cache block4, then train block5 + head on the cache.

    Raises when a layer after the cut also reads a tensor from before it (e.g. a cut inside a
    residual block): those features alone do not determine the rest.
    """
    import keras

    try:
        features = model.get_layer(cut).output
    except ValueError:
        raise TltoolkitError(f"{model.name} has no layer {cut!r}") from None
    try:
        return keras.Model(features, model.outputs, name=name or f"{model.name}_after_{cut}")
    except ValueError as error:
        raise TltoolkitError(f"{model.name} cannot be cut at {cut}: the layers after it also read earlier "
                             f"tensors ({' '.join(str(error).split())[:160]}); cut at a stage boundary") from error


def _prepared(table: pd.DataFrame) -> pd.DataFrame:
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
    table, cache, todo = _cache_and_misses(table, extractor, cache_dir, shard_size)
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


def _cache_and_misses(table, extractor, cache_dir, shard_size=None):
    """The rows to extract, the extractor's cache, and the rows it lacks."""
    table = _prepared(table)
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


# -- the batch job's output: Parquet files any tool reads -------------------------------------------

OUTPUT_METADATA = "_extract.json"  # "_" so that pd.read_parquet(out) and Arrow datasets skip it
TARGET_FILE_BYTES = 256 << 20  # feature bytes per Parquet file


def check_output_folder(out, force: bool = False):
    """The output folder, refused when it holds files and `force` is not set (checked before the job
    runs, so a long extraction never ends in a refusal)."""
    from pathlib import Path

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise TltoolkitError(f"--out {out} is a file; pass a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise TltoolkitError(f"--out {out} is not empty; choose another folder or pass --force to replace "
                             f"its extraction files")
    return out


def cache_chunks(cache: FeatureCache, table: pd.DataFrame, rows: int = 4096):
    """`(rows of table, features)` chunks of the cached features of `table`, in table order."""
    located = cache.locate(_prepared(table))
    for start in range(0, len(located), rows):
        chunk = located.iloc[start:start + rows]
        yield chunk, cache.gather(chunk["shard"], chunk["row"])


def write_output(out, chunks, metadata: dict) -> int:
    """Writes `(rows, features)` chunks as `part-NNNNN.parquet` files (`path`, `label`, `sha256`,
    `features`: a fixed-size list per row, feature maps flattened in C order; `_extract.json` has their
    shape) and `_extract.json`; each file is renamed into place when complete. Returns the row count."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tltoolkit.data.files import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    old_parts = set(out.glob("part-*.parquet"))
    written, file_index, writer, context, in_file = 0, 0, None, None, 0

    def close():
        if writer is not None:
            writer.close()
            context.__exit__(None, None, None)

    try:
        for rows, features in chunks:
            flat = np.ascontiguousarray(features).reshape(len(features), -1)
            per_file = max(1, TARGET_FILE_BYTES // max(1, flat.shape[1] * flat.itemsize))
            column = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
            batch = pa.table({"path": pa.array(rows["path"].astype(str).tolist()),
                              "label": pa.array(rows["label"].astype(str).tolist()),
                              "sha256": pa.array(rows["sha256"].astype(str).tolist()),
                              "view": pa.array(rows["view"].astype("int32").tolist()), "features": column})
            if writer is not None and in_file + len(batch) > per_file:
                close()
                writer, file_index = None, file_index + 1
            if writer is None:
                target = out / f"part-{file_index:05d}.parquet"
                context = atomic_path(target)
                writer, in_file = pq.ParquetWriter(context.__enter__(), batch.schema), 0
                old_parts.discard(target)
            writer.write_table(batch)
            in_file += len(batch)
            written += len(batch)
    except BaseException:
        if writer is not None:
            writer.close()
            context.__exit__(*sys.exc_info())
        raise
    close()
    for stale in old_parts:  # parts of an earlier, larger extraction replaced with --force
        stale.unlink()
    with atomic_path(out / OUTPUT_METADATA) as temporary:
        with open(temporary, "w") as handle:
            json.dump({**metadata, "count": written}, handle, indent=2)
            handle.write("\n")
    return written


def output_metadata(extractor: FeatureExtractor, engine: str, weights, quarantined: int) -> dict:
    from tltoolkit import __version__
    from tltoolkit.architectures.weights import is_published

    spec = extractor.spec
    return {"model": spec.arch, "weights": weights if weights is None or is_published(weights) else str(weights),
            "weights_hash": spec.weights, "layer": spec.cut, "pooling": spec.pooling,
            "preprocessing": spec.preprocessing, "image_size": list(spec.image_size), "resize": spec.resize,
            "dtype": spec.dtype, "feature_shape": list(extractor.feature_shape), "cache_key": spec.key(),
            "engine": engine, "quarantined": quarantined, "tltoolkit": __version__}


# -- Ray ------------------------------------------------------------------------------------------

class _RayWorker:
    """A Ray actor: one extraction model per worker, fed pandas batches of table rows."""

    def __init__(self, options: dict):
        self.extractor = feature_extractor(**options)

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
    table, cache, todo = _cache_and_misses(table, extractor, cache_dir)
    if len(todo):
        with cache.writer() as writer:
            for rows, features in extract_with_ray(todo, options, batch_size, address, workers):
                writer.add(rows["sha256"].tolist(), rows["path"].tolist(), rows["label"].tolist(), features)
    return cache, ExtractionStats(len(table), len(todo), time.perf_counter() - started)


def extract_with_ray(table: pd.DataFrame, options: dict, batch_size: int = 32, address: str | None = None,
                     workers: int | None = None, num_gpus: float | None = None, rows: int = 4096):
    """`(rows, features)` chunks of `table`'s features, computed by a Ray Data job: the table's rows
    -> `map_batches` over an actor pool (`workers` actors, one `feature_extractor(**options)` model
    each, `num_gpus` each; by default one GPU each where the cluster has GPUs). `address` joins a
    running cluster; otherwise a local Ray starts with `workers` CPUs. Yields rows in table order."""
    ray = require_ray()
    table = _prepared(table)
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
            _RayWorker, fn_constructor_kwargs={"options": options}, batch_size=batch_size, batch_format="pandas",
            concurrency=workers, num_gpus=num_gpus, num_cpus=0 if num_gpus else 1)
        for batch in dataset.iter_batches(batch_size=rows, batch_format="pandas"):
            yield batch, np.stack(list(batch["features"]))
    finally:
        if started_here:
            ray.shutdown()
