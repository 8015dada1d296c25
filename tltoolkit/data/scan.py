"""`scan(source)`: every file of a source, checked once, with its hash, status, class id and split."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from tltoolkit.data.class_index import extend_class_index, load_class_index
from tltoolkit.data.files import atomic_path, default_cache_dir
from tltoolkit.data.probe import probe_file, quarantined
from tltoolkit.data.sources import list_source
from tltoolkit.data.splits import TRAIN, VALIDATION, assign_splits, check_val_split
from tltoolkit.errors import TltoolkitError

STATUSES = ("ok", "converted", "duplicate", "quarantined")
USABLE = ("ok", "converted")
COLUMNS = ["path", "label", "label_id", "sha256", "size", "status", "reason", "detail", "split",
           "decoder", "format", "width", "height"]
_PROBED = ["sha256", "size", "status", "reason", "detail", "decoder", "format", "width", "height"]
_PROBED_TYPES = {column: "int64" if column in ("size", "width", "height") else "str" for column in _PROBED}
PROBE_BATCH = 4096  # files probed at a time: their futures and result dicts are the only per-file Python objects
CACHE_VERSION = 2  # bump when probe results change meaning: old cache files are then ignored (2: "too many pixels")


@dataclasses.dataclass
class ScanResult:
    """What a scan found. `table` has one row per image file (see `tltoolkit.data` for its columns)."""

    table: pd.DataFrame
    class_index: dict[str, int]
    source: str
    ignored: list[str]  # hidden and non-image files, not in the table
    files_read: int  # files hashed and decoded by this scan
    source_classes: list[str]  # the classes the source has (folders or labels), even without images
    files_cached: int = 0  # unchanged files whose facts came from the scan cache (rows refused unread: neither)

    @property
    def class_names(self) -> list[str]:
        return sorted(self.class_index, key=self.class_index.get)

    def usable(self, split: str | None = None) -> pd.DataFrame:
        """The rows to train on: decodable, one per distinct image; optionally one split's."""
        rows = self.table[self.table["status"].isin(USABLE)]
        if split is not None:
            if split not in (TRAIN, VALIDATION):
                raise TltoolkitError(f"split {split!r} is neither {TRAIN!r} nor {VALIDATION!r}")
            rows = rows[rows["split"] == split]
        return rows

    @property
    def quarantined(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "quarantined"]

    @property
    def duplicates(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "duplicate"]

    @property
    def conflicts(self) -> pd.DataFrame:
        return self.table[self.table["reason"] == "label conflict"]

    def summary(self) -> pd.DataFrame:
        """Per class, in id order: usable images per split, duplicates and quarantined files."""
        table = self.table
        counts = pd.DataFrame({
            "train": self.usable(TRAIN).groupby("label").size(),
            "validation": self.usable(VALIDATION).groupby("label").size(),
            "duplicate": self.duplicates.groupby("label").size(),
            "quarantined": self.quarantined.groupby("label").size(),
        }).reindex(self.class_names).fillna(0).astype(int)
        counts.insert(2, "usable", counts["train"] + counts["validation"])
        counts.insert(0, "id", [self.class_index[name] for name in counts.index])
        counts.index.name = "class"
        unlabelled = table[table["label"] == ""]
        if len(unlabelled):
            counts.loc["(no class)"] = [-1, 0, 0, 0, 0, len(unlabelled)]
        return counts.reset_index()

    def write_report(self, path, overwrite: bool = False) -> Path:
        """The table as CSV or Parquet (by suffix), written atomically; an existing file is kept
        unless `overwrite`."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise TltoolkitError(f"report {path} must end in .csv or .parquet")
        if path.exists() and not overwrite:
            raise TltoolkitError(f"report {path} already exists; pass --force to replace it or choose another name")
        with atomic_path(path) as temporary:
            if suffix == ".csv":
                self.table.to_csv(temporary, index=False)
            else:
                self.table.to_parquet(temporary, index=False)
        return path

    def check(self) -> None:
        """Raises a one-line TltoolkitError unless the data can train a classifier: at least two
        classes, each with a usable image."""
        table, summary = self.table, self.summary()
        if table.empty:
            found = f"only {len(self.ignored)} hidden or non-image files" if self.ignored else "nothing"
            raise TltoolkitError(f"no images in {self.source}: found {found}; expected class folders like {self.source}/cats/*.jpg")
        if self.usable().empty:
            reasons = ", ".join(f"{n} {r}" for r, n in self.quarantined["reason"].value_counts().items())
            raise TltoolkitError(f"no usable images in {self.source}: all {len(table)} files were quarantined ({reasons}); see the report")
        declared = summary[summary["class"].isin(self.source_classes)]
        empty = declared[declared["usable"] == 0]
        if len(empty):
            first = empty.iloc[0]
            found = f"{first['quarantined']} quarantined" if first["quarantined"] else "no image files"
            more = f" (and {len(empty) - 1} more empty classes)" if len(empty) > 1 else ""
            raise TltoolkitError(f"class {first['class']!r} has no usable images ({found}){more}; add images or remove the folder")
        if (declared["usable"] > 0).sum() < 2:
            only = declared[declared["usable"] > 0].iloc[0]
            raise TltoolkitError(f"only one class in {self.source} ({only['class']!r}, {only['usable']} images); a classifier needs at least two class folders")


def scan(source, val_split: float = 0.2, *, data_dir=None, cache: bool = True, cache_dir=None,
         class_index: Mapping[str, int] | str | os.PathLike | None = None, check: bool = True,
         workers: int | None = None, splits_from=None) -> ScanResult:
    """Lists, hashes and decodes every image of `source` (a class-folder tree, a CSV/Parquet manifest
    or `tfds:NAME[:SPLIT]`), quarantines what cannot be used, and assigns class ids and stable splits.

    `class_index`: an existing index (mapping or JSON path) whose ids are kept; new classes append.
    `cache`: reuse earlier results for files whose (path, size, mtime) did not change, from
    `cache_dir` (default `$XDG_CACHE_HOME/tltoolkit`). `check`: raise unless the data can train a
    classifier (`ScanResult.check`). `data_dir`: TensorFlow Datasets' data folder.
    `splits_from`: earlier splits to keep (a mapping sha256 -> split, or a scan report / run snapshot
    file with `sha256` and `split` columns): images seen before keep their split exactly, even the
    small-class stand-ins the hash rule would move back to training; new images follow the rule.
    """
    val_split = check_val_split(val_split)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    listing = list_source(source, data_dir=data_dir, cache_dir=cache_dir)
    rows = listing.rows
    cache_file = cache_dir / "scans" / f"{hashlib.sha256(listing.location.encode()).hexdigest()[:20]}-v{CACHE_VERSION}.parquet"
    listed = rows["reason"] == ""  # the others are unusable before any file is read
    # Each distinct path is probed once; `where` is each listed row's path among them (a manifest may repeat one).
    where, paths = rows.loc[listed, "path"].factorize()
    probes, files_read = _probe_all(paths, cache_file if cache else None, workers)
    facts = pd.concat([probes.take(where).set_axis(rows.index[listed]),
                       _facts((quarantined(reason) for reason in rows.loc[~listed, "reason"]), rows.index[~listed])]).sort_index()
    table = pd.concat([rows[["path", "label", "split"]], facts], axis=1)
    table.loc[table["status"] == "quarantined", "split"] = ""
    _mark_duplicates(table)

    existing = load_class_index(class_index) if isinstance(class_index, (str, os.PathLike)) else class_index
    index = extend_class_index(listing.classes, existing)
    table["label_id"] = table["label"].map(index).fillna(-1).astype(int)
    table.loc[table["status"] == "quarantined", "label_id"] = -1

    usable = table["status"].isin(USABLE)
    if splits_from is not None:
        earlier = table.loc[usable, "sha256"].map(_earlier_splits(splits_from)).fillna("")
        table.loc[usable, "split"] = table.loc[usable, "split"].where(table.loc[usable, "split"] != "", earlier)
    table.loc[usable, "split"] = assign_splits(table.loc[usable, ["label", "sha256", "split"]], val_split)
    kept_split = table.loc[usable].set_index("sha256")["split"]
    duplicate = table["status"] == "duplicate"
    table.loc[duplicate, "split"] = table.loc[duplicate, "sha256"].map(kept_split)

    result = ScanResult(table[COLUMNS].reset_index(drop=True), index, os.fspath(source), listing.ignored,
                        files_read, listing.classes, len(paths) - files_read)
    if check:
        result.check()
    return result


def _earlier_splits(splits_from) -> Mapping[str, str]:
    if isinstance(splits_from, Mapping):
        return splits_from
    path = Path(splits_from)
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise TltoolkitError(f"cannot read earlier splits from {path} ({error}); pass a scan report or a "
                             f"run's snapshot.parquet") from None
    if not {"sha256", "split"} <= set(frame.columns):
        raise TltoolkitError(f"{path} has no sha256 and split columns; pass a scan report or a run's snapshot.parquet")
    frame = frame[frame["split"].isin([TRAIN, VALIDATION])]
    return dict(zip(frame["sha256"], frame["split"]))


def _probe_all(paths: pd.Index, cache_file: Path | None, workers: int | None) -> tuple[pd.DataFrame, int]:
    """The probe results of `paths` (distinct), in their order, and how many files had to be read (the
    others' size and mtime matched the cache). Vectorised, so a re-scan of 100k unchanged files costs
    their stat calls; per file, memory holds Arrow strings and NumPy numbers, not Python objects."""
    sizes, mtimes = np.full(len(paths), -1, "int64"), np.full(len(paths), -1, "int64")  # -1: probed below, as `missing` or `unreadable`
    for i, path in enumerate(paths):
        with contextlib.suppress(OSError):
            info = os.stat(path)
            sizes[i], mtimes[i] = info.st_size, info.st_mtime_ns
    stats = pd.DataFrame({"path": paths, "file_size": sizes, "mtime_ns": mtimes})
    hits = stats.iloc[:0].join(_facts([], stats.index[:0]))
    if cache_file is not None and cache_file.exists():
        try:
            hits = stats.reset_index().merge(pd.read_parquet(cache_file), on=["path", "file_size", "mtime_ns"]).set_index("index")
        except Exception:  # a damaged or outdated cache is only a cache: rebuild it
            pass
    todo = stats[~stats.index.isin(hits.index)]
    probed = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # Pillow and hashlib release the GIL
        for start in range(0, len(todo), PROBE_BATCH):  # one batch of futures and result dicts at a time
            batch = todo.iloc[start:start + PROBE_BATCH]
            probed.append(batch.join(_facts(pool.map(probe_file, batch["path"]), batch.index)))
    results = pd.concat([hits, *probed]).sort_index()
    if cache_file is not None and len(todo):
        with atomic_path(cache_file) as temporary:
            results[results["file_size"] >= 0].to_parquet(temporary, index=False)
    return results[_PROBED].reset_index(drop=True), len(todo)


def _facts(probes, index: pd.Index) -> pd.DataFrame:
    """Probe results (dicts of `_PROBED`) as typed columns, strings Arrow-backed even when there are none."""
    return pd.DataFrame(list(probes), columns=_PROBED, index=index).astype(_PROBED_TYPES)


def _mark_duplicates(table: pd.DataFrame) -> None:
    """Same bytes twice: the first path keeps its status, later copies become `duplicate`. Same bytes
    under two labels: no label can be trusted, so every copy is quarantined as `label conflict`."""
    usable = table[table["status"].isin(USABLE)]
    repeated = usable[usable.duplicated("sha256", keep=False)]
    for _, group in repeated.sort_values("path").groupby("sha256", sort=False):
        labels = sorted(set(group["label"]))
        if len(labels) > 1:
            places = "; ".join(f"{label!r}: {group.loc[group['label'] == label, 'path'].iloc[0]}" for label in labels)
            table.loc[group.index, ["status", "reason", "detail", "split", "decoder"]] = ["quarantined", "label conflict", f"same image under {places}", "", ""]
        else:
            later = group.index[1:]
            table.loc[later, ["status", "reason", "detail"]] = ["duplicate", "duplicate", f"same bytes as {group['path'].iloc[0]}"]
