"""The feature cache: the frozen part of a network computed once per image, stored on disk.

A cache entry is a folder `<cache_dir>/<key>/`, where the key hashes everything the features depend
on (`FeatureSpec`: architecture, weights file hash, input size, resize policy, preprocessing, cut
layer, pooling, dtype, augmentation views). Change any of them and the key changes: a cache never
serves stale features. Within a folder, images are identified by the SHA-256 of their bytes, so an
edited file (same path, new bytes) is a miss and a renamed one is a hit.

Layout of `<cache_dir>/<key>/`:
- `spec.json`: the `FeatureSpec`, for people and tools.
- `shard-<id>.npy`: `shard_size` feature rows (default: as many as fit in 64 MB; a run's last shard
  holds the rest), float16 or float32, `[rows, *feature_shape]`.
- `parts/<id>.parquet`: the manifest rows of shard `<id>` (sha256, path, label, shard, row, view,
  checksum: the SHA-256 of the shard file).
- `manifest.parquet`: the parts merged (`compact()`).
Every file is written to a temporary name in the same folder and renamed, and a shard is written
before its manifest part: a part on disk commits its shard. So a job killed at any point (kill -9)
leaves only complete shards that the manifest knows about, or orphan shards it ignores; a re-run
computes what the manifest lacks, and its final `compact()` deletes the orphans. Concurrent runs
never write the same file (ids are random); writes and reads take a shared `fcntl` lock, the merge
into `manifest.parquet` an exclusive one. An image two runs both computed is stored twice and served
once.

A shard is checked against its checksum the first time a process uses it (again only if its size or
mtime changes): a truncated or overwritten shard is dropped with one line on stderr, and its images
count as missing, so the next extraction recomputes them instead of serving what was not computed.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tltoolkit.data.files import atomic_path, default_cache_dir
from tltoolkit.errors import TltoolkitError
from tltoolkit.features.extractor import FeatureSpec

SHARD_BYTES = 64 << 20  # default shard size: small enough to buffer, large enough to be few files
MANIFEST_COLUMNS = ["sha256", "path", "label", "shard", "row", "view", "checksum"]
_CHECKED: dict[tuple, bool] = {}  # (shard path, size, mtime, checksum) -> intact: one check per process
FOLDER = "features"  # the default root: $XDG_CACHE_HOME/tltoolkit/features


class FeatureCache:
    """One cache entry: the features of `spec`, for any number of images, under `root/<spec.key()>`."""

    def __init__(self, spec: FeatureSpec, root=None, shard_size: int | None = None):
        if shard_size is not None and shard_size < 1:
            raise TltoolkitError(f"shard_size must be at least 1, got {shard_size}")
        self.spec = spec
        self.root = Path(root).expanduser() if root else default_cache_dir() / FOLDER
        self.folder = self.root / spec.key()
        self.shard_size = shard_size
        self._shards: dict[str, np.ndarray] = {}

    # -- the manifest -------------------------------------------------------------------------------

    @contextmanager
    def _lock(self, exclusive: bool):
        if not exclusive and self.folder.is_dir() and not os.access(self.folder, os.W_OK):
            yield  # a read-only cache: nobody writes it, so it reads without a lock
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_manifest(self) -> tuple[pd.DataFrame, list[Path]]:
        """The merged manifest, duplicates included, and the part files it includes (call under the lock)."""
        parts = sorted((self.folder / "parts").glob("*.parquet"))
        frames = [pd.read_parquet(p) for p in [self.folder / "manifest.parquet", *parts] if p.exists()]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
                MANIFEST_COLUMNS, ["str", "str", "str", "str", "int64", "int64", "str"])}), parts
        return pd.concat(frames, ignore_index=True), parts

    def manifest(self, sha256s=None) -> pd.DataFrame:
        """Every stored image view once: sha256, path and label when extracted, shard file, row, view,
        checksum; only the images `sha256s` when given, whose shards are then checked (`_intact`)."""
        if not self.folder.exists():
            return self._read_manifest()[0]
        with self._lock(exclusive=False):
            manifest = self._read_manifest()[0]
        if sha256s is not None:
            manifest = manifest[_isin(manifest["sha256"], _strings(sha256s))]
            rows = manifest["shard"].value_counts()
            shards = manifest.drop_duplicates("shard")
            bad = [name for name, checksum in zip(shards["shard"], shards["checksum"])
                   if not self._intact(name, checksum, rows[name])]
            manifest = manifest[~manifest["shard"].isin(bad)]
        # Two runs may both have stored an image; serve the first copy (compact() keeps both rows,
        # so a shard stays in use while anyone may read it).
        return manifest.drop_duplicates(["sha256", "view"]).reset_index(drop=True)

    def _intact(self, name: str, checksum, rows: int) -> bool:
        """Whether shard `name` still holds the bytes that were written (caches from before checksums:
        whether it loads). A bad shard is deleted (when the cache is writable) and reported once."""
        path = self.folder / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        key = (str(path), stat.st_size, stat.st_mtime_ns, checksum)
        if key not in _CHECKED:
            try:
                if isinstance(checksum, str):
                    with open(path, "rb") as handle:
                        intact = hashlib.file_digest(handle, "sha256").hexdigest() == checksum
                else:
                    intact = len(np.load(path, mmap_mode="r")) > 0
            except (OSError, ValueError, EOFError):
                intact = False
            _CHECKED[key] = intact
            if not intact:
                print(f"feature cache: shard {path} is corrupt (its checksum does not match); dropped, "
                      f"its {rows} row(s) will be recomputed", file=sys.stderr)
                self._shards.pop(name, None)
                try:
                    path.unlink()
                except OSError:  # a read-only cache: the shard stays, and is skipped each time
                    pass
        return _CHECKED[key]

    def compact(self) -> None:
        """Merges the manifest parts into `manifest.parquet` (one atomic rename) and drops them; then
        deletes what killed writers left behind: shards no manifest row uses, and temporary files.
        Writers hold the shared lock while they write, so under this exclusive lock none is mid-write."""
        with self._lock(exclusive=True):
            manifest, parts = self._read_manifest()
            present = {p.name for p in self.folder.glob("shard-*.npy")}
            dropped = ~manifest["shard"].isin(present)  # rows of shards dropped as corrupt
            manifest = manifest[~dropped]
            if parts or dropped.any():
                with atomic_path(self.folder / "manifest.parquet") as temporary:
                    manifest.to_parquet(temporary, index=False)
                for part in parts:
                    part.unlink()
            used = set(manifest["shard"])
            leftovers = [p for p in self.folder.glob("shard-*.npy") if p.name not in used]
            leftovers += [*self.folder.glob(".*.tmp"), *self.folder.glob("parts/.*.tmp")]
            for leftover in leftovers:
                leftover.unlink(missing_ok=True)

    def missing(self, sha256s) -> list[str]:
        """The distinct hashes of `sha256s` (in order) that lack any of their views."""
        wanted = _strings(sha256s).drop_duplicates()
        counts = self.manifest(wanted)["sha256"].value_counts()
        return wanted[~_isin(wanted, counts.index[counts >= self.spec.view_count])].tolist()

    # -- writing ------------------------------------------------------------------------------------

    def writer(self) -> "ShardWriter":
        spec_file = self.folder / "spec.json"
        with self._lock(exclusive=False):
            if not spec_file.exists():
                with atomic_path(spec_file) as temporary:
                    Path(temporary).write_text(json.dumps(self.spec.to_json(), indent=2) + "\n")
        return ShardWriter(self)

    # -- reading ------------------------------------------------------------------------------------

    def shard(self, name: str) -> np.ndarray:
        """A shard, memory-mapped: rows are read from disk when used, so caches larger than RAM work."""
        if name not in self._shards:
            self._shards[name] = np.load(self.folder / name, mmap_mode="r")
        return self._shards[name]

    def locate(self, table: pd.DataFrame) -> pd.DataFrame:
        """For each row of `table` (a scan's table: `sha256`, and the current `path`, `label`...), its
        stored rows: `table`'s columns plus `shard`, `row`, `view`, ordered by table row then view.
        Images not in `table` are not served (a removed image drops out); a row of `table` whose
        image is not stored raises."""
        if "sha256" not in table.columns:
            raise TltoolkitError("the image table lacks column sha256; pass a scan's table")
        stored = self.manifest(table["sha256"])[["sha256", "shard", "row", "view"]]
        located = table.reset_index(drop=True).rename_axis("_order").reset_index().merge(
            stored, on="sha256", how="left")
        absent = located["shard"].isna()
        if absent.any():
            count = located.loc[absent, "sha256"].nunique()
            raise TltoolkitError(f"{count} image(s) are not in the feature cache {self.folder} (first: "
                                 f"{located.loc[absent, 'path'].iloc[0] if 'path' in located else '?'}); "
                                 f"extract them first (tltoolkit.features.local.extract_features)")
        located = located.sort_values(["_order", "view"], kind="stable").drop(columns="_order")
        located["row"] = located["row"].astype("int64")
        located["view"] = located["view"].astype("int64")
        return located.reset_index(drop=True)

    def gather(self, shards, rows) -> np.ndarray:
        """The feature rows at (`shards[i]`, `rows[i]`), in that order, as one array."""
        shards, rows = np.asarray(shards), np.asarray(rows)
        if len(shards) == 0:
            raise TltoolkitError("nothing to gather: no rows were asked for")
        first = self.shard(shards[0])
        out = np.empty((len(rows), *first.shape[1:]), first.dtype)
        for name in np.unique(shards):
            where = shards == name
            out[where] = self.shard(name)[rows[where]]
        return out

    def features(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """`locate(table)` and the features of its rows, in memory (for small tables and tests)."""
        located = self.locate(table)
        return located, self.gather(located["shard"], located["row"])


def _isin(column: pd.Series, values) -> np.ndarray:
    """`column.isin(values)` for string columns, computed by Arrow: pandas' isin makes a Python string of
    every value (~180 bytes a row for a million hashes)."""
    return pc.is_in(pa.array(column), value_set=pa.array(values)).to_numpy(zero_copy_only=False)


def _strings(values) -> pd.Series:
    """`values` as an Arrow-backed string column: a million hashes as a Python set or list cost ~150
    bytes each, as Arrow strings their 64 bytes and an offset."""
    return values if isinstance(values, pd.Series) and values.dtype == "str" else pd.Series(list(values), dtype="str")


class ShardWriter:
    """Collects feature rows and writes them as fixed-size shards, each committed by its manifest part.

    Use as a context manager: leaving it writes the last (partial) shard and merges the manifest.
    """

    def __init__(self, cache: FeatureCache):
        self.cache = cache
        self._rows: list[dict] = []
        self._features: list[np.ndarray] = []
        self._buffered = 0
        self._shard_rows: int | None = None
        self.written = 0  # rows written by this writer

    def add(self, sha256s, paths, labels, features: np.ndarray, view: int = 0) -> None:
        features = np.asarray(features, dtype=self.cache.spec.dtype)
        if len(features) != len(sha256s):
            raise ValueError(f"{len(sha256s)} hashes but {len(features)} feature rows")
        self._rows.extend({"sha256": h, "path": p, "label": lab, "view": view}
                          for h, p, lab in zip(sha256s, paths, labels))
        self._features.append(features)
        self._buffered += len(features)
        if self._shard_rows is None:
            self._shard_rows = self.cache.shard_size or max(1, SHARD_BYTES // max(1, features[0].nbytes))
        while self._buffered >= self._shard_rows:
            self._write(self._shard_rows)

    def _write(self, count: int) -> None:
        features = np.concatenate(self._features)
        rows, self._rows = self._rows[:count], self._rows[count:]
        self._features = [features[count:]] if count < len(features) else []
        self._buffered -= count
        shard_id = uuid.uuid4().hex[:16]
        shard_name = f"shard-{shard_id}.npy"
        folder = self.cache.folder
        part = pd.DataFrame(rows)
        part["shard"] = shard_name
        part["row"] = np.arange(count, dtype="int64")
        part["label"] = part["label"].astype(str)
        buffer = io.BytesIO()
        np.save(buffer, features[:count])
        part["checksum"] = hashlib.sha256(buffer.getbuffer()).hexdigest()
        with self.cache._lock(exclusive=False):  # from the shard's temporary file to its committing part
            with atomic_path(folder / shard_name) as temporary:
                with open(temporary, "wb") as handle:
                    handle.write(buffer.getbuffer())
            with atomic_path(folder / "parts" / f"{shard_id}.parquet") as temporary:
                part[MANIFEST_COLUMNS].to_parquet(temporary, index=False)
        self.written += count

    def __enter__(self):
        return self

    def __exit__(self, error_type, error, traceback):
        if error_type is None:
            if self._buffered:
                self._write(self._buffered)
            self.cache.compact()
        return False


def cached_dataset(cache: FeatureCache, table: pd.DataFrame, batch_size: int = 32, shuffle: bool = True,
                   seed: int | None = None, with_labels: bool = True, repeat: bool = False):
    """A `tf.data.Dataset` of `(features, label_ids)` batches (features alone with `with_labels=False`)
    for the images of `table`, streamed from the memory-mapped shards.

    Features are float32, shaped like the stored features. With augmented views, every pass over the
    data draws one of each image's views at random (seeded by `seed`, different in each epoch).
    Only row indices live in memory, so a cache larger than RAM trains fine.
    """
    import tensorflow as tf

    from tltoolkit.pipeline import dataset_options

    if batch_size < 1:
        raise TltoolkitError(f"batch_size must be at least 1, got {batch_size}")
    if with_labels and "label_id" not in table.columns:
        raise TltoolkitError("the image table lacks column label_id; pass a scan's table or with_labels=False")
    located = cache.locate(table)
    views = cache.spec.view_count
    # [images, views] tables of where each view lives; locate() orders rows by image, then view.
    shard_names = np.asarray(sorted(located["shard"].unique()))
    shard_index = np.searchsorted(shard_names, located["shard"].to_numpy()).reshape(-1, views)
    row_index = located["row"].to_numpy().reshape(-1, views)
    labels = table["label_id"].to_numpy().astype("int32") if with_labels else np.zeros(len(table), "int32")
    first = cache.shard(shard_names[0])
    feature_shape = first.shape[1:]

    def load(images, draws):
        view = draws % views
        return (cache.gather(shard_names[shard_index[images, view]], row_index[images, view]).astype("float32"),
                labels[images])

    @tf.autograph.experimental.do_not_convert  # plain TF calls; nothing for autograph to convert
    def load_tensors(images, draws):
        features, label_ids = tf.numpy_function(load, [images, draws], (tf.float32, tf.int32), stateful=False)
        features.set_shape([None, *feature_shape])
        label_ids.set_shape([None])
        return (features, label_ids) if with_labels else features

    dataset = tf.data.Dataset.range(len(table))
    if shuffle:
        dataset = dataset.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(dataset, draws)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size).map(load_tensors, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(dataset_options(deterministic=True))
