"""The batch job's output: Parquet files any tool reads, and `_extract.json` describing them."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from tltoolkit.errors import TltoolkitError
from tltoolkit.features.cache import FeatureCache
from tltoolkit.features.extractor import TF_FP32, FeatureExtractor
from tltoolkit.features.local import prepared

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
    located = cache.locate(prepared(table))
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
            "runtime": spec.runtime or TF_FP32, "engine": engine, "quarantined": quarantined,
            "tltoolkit": __version__}
