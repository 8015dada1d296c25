"""`extract_job`: what `tltoolkit extract` runs. A folder's images -> the feature cache (on this
machine, or computed by Ray) -> Parquet files in an output folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tltoolkit.architectures.stages import PENULTIMATE
from tltoolkit.data import scan
from tltoolkit.data.files import check_output_dir
from tltoolkit.errors import TltoolkitError
from tltoolkit.features.extractor import feature_extractor, runtime_arguments, runtime_fidelity
from tltoolkit.features.local import ExtractionStats, extract_features
from tltoolkit.features.parquet import cache_chunks, check_output_folder, output_metadata, write_output
from tltoolkit.features.ray import extract_features_with_ray, require_ray
from tltoolkit.runtimes import check_runtime

ENGINES = ("local", "ray")


@dataclasses.dataclass
class ExtractJob:
    count: int  # rows written (images x views)
    feature_shape: tuple[int, ...]
    stats: ExtractionStats
    cache_folder: Path  # the cache entry the rows came from
    out: Path


def extract_job(data, out, base: str, weights="imagenet", preprocessing=None, layer: str = PENULTIMATE,
                pooling=None, dtype: str = "float32", batch_size: int = 32, image_size=None,
                resize: str = "center_crop", seed: int = 0, views: int = 0, augmentation=None,
                engine: str = "local", address=None, workers=None, cache_dir=None, rehash: bool = False, force: bool = False,
                progress: bool = True, log=None, runtime: str = "tf", precision: str = "fp32") -> ExtractJob:
    """Extracts the features of the usable images of `data` (a folder, manifest or tfds:NAME) into
    `out`: `part-NNNNN.parquet` files and `_extract.json`. Every input is checked before any work;
    `log(message)` receives the progress lines (quarantined files, cache hits). `runtime`/`precision`:
    see `tltoolkit.runtimes`; a precision other than fp32 records its fidelity to TensorFlow fp32 on
    a sample of images (`runtime_fidelity`) in `_extract.json`."""
    log = log or (lambda message: None)
    check_runtime(runtime, precision)  # before the scan and any cache folder
    if batch_size < 1:
        raise TltoolkitError(f"--batch-size must be at least 1, got {batch_size}")
    if views < 0 or (views > 0) != bool(augmentation):
        raise TltoolkitError("--views K needs --augment POLICY (and --augment needs --views K >= 1)")
    if engine not in ENGINES:
        raise TltoolkitError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if views and engine == "ray":
        raise TltoolkitError("--views runs on the local engine; drop --engine ray")
    if address and engine != "ray":
        raise TltoolkitError("--address joins a Ray cluster; add --engine ray")
    if engine == "ray":
        require_ray()
    for path, flag in ((out, "--out"), (cache_dir, "--cache-dir")):
        check_output_dir(path, data, flag)
    out = check_output_folder(out, force)
    result = scan(data, check=False, cache_dir=cache_dir, cache=not rehash)
    table = result.usable()
    quarantined = len(result.quarantined)
    if quarantined:
        log(f"{quarantined} file(s) quarantined and skipped (see `tltoolkit scan --data {data}`)")
    if table.empty:
        raise TltoolkitError(f"no usable images in {data}; check the folder (tltoolkit scan --data {data})")
    options = dict(arch=base, weights=weights, image_size=image_size, layer=layer, preprocessing=preprocessing,
                   pooling=pooling, dtype=dtype, resize=resize, seed=seed, views=views, augmentation=augmentation,
                   **runtime_arguments(runtime, precision, table, batch_size, progress))
    extractor = feature_extractor(**options)  # Ray's actors build the same, runtime included
    if engine == "ray":
        cache, stats = extract_features_with_ray(table, extractor, options, cache_dir, batch_size, address, workers)
    else:
        cache, stats = extract_features(table, extractor, cache_dir, batch_size, progress=progress)
    log(f"computed {stats.computed} of {stats.images} image(s) ({stats.images - stats.computed} from the "
        f"cache {cache.folder})")
    metadata = output_metadata(extractor, engine, weights, quarantined)
    if precision != "fp32":
        metadata["fidelity"] = runtime_fidelity(extractor, table, seed)
        log(metadata["fidelity"])
    count = write_output(out, cache_chunks(cache, table), metadata)
    return ExtractJob(count, extractor.feature_shape, stats, cache.folder, out)

