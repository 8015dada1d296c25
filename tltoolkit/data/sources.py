"""Where images come from: each source becomes a listing, one row per image file with its label.

- A folder of class subfolders: `root/<class>/**/<image>`; hidden files and folders and files without
  an image extension are ignored (and counted); an image directly in `root` has no label.
- A CSV or Parquet manifest with `path` and `label` columns (optional `split`); relative paths
  resolve against the manifest's folder, and a path outside that folder is refused.
- `tfds:NAME[:SPLIT]` (SPLIT defaults to `train`, and takes TFDS slicing like `train[:10%]`):
  the examples' encoded bytes are written once, unchanged, as files under
  `<cache>/tfds/<name>-<version>-<split>-<data dir hash>/<label>/<index>.<ext>` with a manifest
  there, which is then read like any manifest. So every row of every source is a file on disk: the
  scan cache, the pipeline's decoders and the reports treat all sources alike, and the copy costs
  the encoded size once (no re-encoding, no pixel change).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from tltoolkit.data.files import atomic_path, atomic_write_bytes, default_cache_dir
from tltoolkit.data.probe import IMAGE_EXTENSIONS
from tltoolkit.data.splits import TRAIN, VALIDATION
from tltoolkit.errors import TltoolkitError, one_line

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
LISTING_BATCH = 8192  # rows held as Python tuples at a time while a listing is built
_SPLIT_NAMES = {"train": TRAIN, "training": TRAIN, "validation": VALIDATION, "val": VALIDATION, "valid": VALIDATION}


@dataclasses.dataclass
class Listing:
    """Rows `path` (absolute), `label`, `split` (given by the source, or ""), `reason` (why the row is
    unusable before its file is read, or "")."""

    rows: pd.DataFrame
    classes: list[str]  # every class the source declares, even one without images
    ignored: list[str]  # hidden and non-image files
    location: str  # the source's absolute path: names its scan-cache file


def list_source(source, data_dir=None, cache_dir=None) -> Listing:
    text = os.fspath(source)
    if text.startswith("tfds:"):
        return list_tfds(text[len("tfds:"):], data_dir, cache_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        return list_folder(path)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return list_manifest(path)
    if path.is_file():
        raise TltoolkitError(f"--data {text} is a {path.suffix or 'suffix-less'} file; give a folder of class subfolders, a .csv/.parquet manifest or tfds:NAME")
    raise TltoolkitError(f"--data {text} does not exist; give a folder of class subfolders, a .csv/.parquet manifest or tfds:NAME")


def _frame(rows: Iterable[tuple[str, str, str, str]]) -> pd.DataFrame:
    """The rows as Arrow-backed string columns, built a batch at a time: a million paths held as Python
    tuples and strings would cost about 200 bytes each, the columns cost the paths' own bytes."""
    columns = ["path", "label", "split", "reason"]
    rows = iter(rows)
    frames = []
    while batch := list(itertools.islice(rows, LISTING_BATCH)):
        frames.append(pd.DataFrame(batch, columns=columns, dtype=str))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns, dtype=str)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_folder(root: Path) -> Listing:
    root = Path(os.path.abspath(root))
    ignored, classes = [], []

    def rows():
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.name.startswith("."):
                ignored.append(entry.path)
            elif entry.is_dir() and not _utf8(entry.name):  # a class name must go into Parquet and labels.txt
                label = _readable(entry.name)
                for path, _ in _walk_files(entry.path):
                    yield _readable(path), label, "", "class folder name is not UTF-8"
            elif entry.is_dir():
                classes.append(entry.name)
                for path, outside in _walk_files(entry.path):
                    if not _utf8(path):  # kept readable in reports and Parquet; never read
                        yield _readable(path), entry.name, "", "file name is not UTF-8"
                    elif outside:
                        yield path, entry.name, "", "link outside its class folder"
                    elif os.path.basename(path).startswith(".") or not _is_image_name(path):
                        ignored.append(path)
                    else:
                        yield path, entry.name, "", ""
            elif _is_image_name(entry.name):
                yield entry.path, "", "", "no label"  # not inside a class folder
            else:
                ignored.append(entry.path)

    return Listing(_frame(rows()), classes, ignored, str(root))


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:  # bytes that are not UTF-8 come back from the OS as lone surrogates
        return False


def _readable(name: str) -> str:
    """A name the OS gave with bytes that are not UTF-8, as text with those bytes escaped (`caf\\xe9`)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _walk_files(folder: str):
    """`(path, outside)` for every file under `folder`, sorted. Links are followed only to a target
    inside `folder` itself (a class's folder): one leaving it (`up -> ..`, `x.png -> /tmp/x.png`) would
    pull in other classes' or other people's files, so it comes back as `outside`, unread. A linked
    folder inside is walked once (a link loop is cut)."""
    top = os.path.realpath(folder)
    seen = set()

    def inside(path):
        real = os.path.realpath(path)
        return real == top or real.startswith(top + os.sep)

    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        leaving = sorted(d for d in dirs if not d.startswith(".") and not inside(os.path.join(current, d)))
        yield from ((os.path.join(current, d), True) for d in leaving)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in leaving)
        yield from ((os.path.join(current, name), not inside(os.path.join(current, name))) for name in sorted(files))


def list_manifest(manifest: Path) -> Listing:
    manifest = Path(os.path.abspath(manifest))
    try:
        if manifest.suffix.lower() == ".csv":
            table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        else:
            table = pd.read_parquet(manifest)
    except Exception as error:
        raise TltoolkitError(f"cannot read manifest {manifest}: {one_line(error)}") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise TltoolkitError(f"manifest {manifest.name} has no {' or '.join(missing)} column (columns: {', '.join(table.columns) or 'none'}); it needs path,label[,split]")
    base = str(manifest.parent)
    text = lambda column: table[column].fillna("").astype(str).str.strip()  # noqa: E731
    paths, labels = text("path"), text("label")
    splits = text("split").str.lower() if "split" in table.columns else pd.Series("", index=table.index)
    bad_splits = sorted(set(splits) - set(_SPLIT_NAMES) - {""})
    if bad_splits:
        raise TltoolkitError(f"manifest {manifest.name} has split values {', '.join(map(repr, bad_splits))}; use train or validation, or leave it empty to split by content hash")

    def rows():
        for number, (path, label, split) in enumerate(zip(paths, labels, splits), start=1):
            if not path:
                raise TltoolkitError(f"manifest {manifest.name} row {number} has an empty path")
            if "\0" in path:
                yield path.replace("\0", "\\0"), label, "", "NUL byte in the path"
                continue
            full = os.path.normpath(os.path.join(base, os.path.expanduser(path)))
            if os.path.commonpath([base, full]) != base:
                raise TltoolkitError(f"manifest {manifest.name} row {number}: path {path!r} is outside the manifest's folder {base}; keep images under it (or move the manifest up)")
            real_base = os.path.realpath(base)
            leaves = os.path.commonpath([real_base, os.path.realpath(full)]) != real_base  # through a link
            reason = "link outside the manifest's folder" if leaves else "" if label else "no label"
            yield full, label, _SPLIT_NAMES.get(split, ""), reason

    classes = sorted({label for label in labels if label})
    return Listing(_frame(rows()), classes, [], str(manifest))


def list_tfds(spec: str, data_dir=None, cache_dir=None) -> Listing:
    name, _, split = spec.partition(":")
    split = split or "train"
    if not name:
        raise TltoolkitError("--data tfds: needs a dataset name, e.g. tfds:beans or tfds:beans:validation")
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
    except Exception as error:
        where = f" in {data_dir}" if data_dir else ""
        raise TltoolkitError(f"cannot load TFDS dataset {name!r}{where}: {one_line(error)}") from None
    image_key, label_key = _supervised_keys(builder.info, name)
    label_names = builder.info.features[label_key].names
    where = hashlib.sha256(os.path.abspath(os.path.expanduser(str(data_dir or "~/tensorflow_datasets"))).encode()).hexdigest()[:8]
    folder_name = "-".join([builder.info.name, str(builder.info.version), split, where])
    folder = Path(cache_dir or default_cache_dir()) / "tfds" / "".join(c if c.isalnum() or c in "-_.[]%" else "_" for c in folder_name)
    manifest = folder / "manifest.parquet"
    if not manifest.exists():  # written last: its presence means every file is there
        try:
            dataset = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
        except Exception as error:
            raise TltoolkitError(f"TFDS dataset {name!r} has no split {split!r} (splits: {', '.join(builder.info.splits)}): {one_line(error, 120)}") from None
        rows = []
        for index, example in enumerate(tfds.as_numpy(dataset)):
            data, label = example[image_key], label_names[int(example[label_key])]
            relative = f"{label}/{index:07d}{_extension(data)}"
            atomic_write_bytes(folder / relative, data)
            rows.append((relative, label))
        with atomic_path(manifest) as temporary:
            pd.DataFrame(rows, columns=["path", "label"]).to_parquet(temporary, index=False)
    return list_manifest(manifest)


def _supervised_keys(info, name):
    import tensorflow_datasets as tfds

    if info.supervised_keys and len(info.supervised_keys) == 2 and all(isinstance(k, str) for k in info.supervised_keys):
        image_key, label_key = info.supervised_keys
    else:
        features = info.features
        image_key = next((k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
        label_key = next((k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)), None)
    feature = lambda key: info.features[key] if key in info.features.keys() else None  # noqa: E731
    if not (isinstance(feature(image_key), tfds.features.Image) and isinstance(feature(label_key), tfds.features.ClassLabel)):
        raise TltoolkitError(f"TFDS dataset {name!r} has no image and class-label features (features: {', '.join(info.features)}); only image classification datasets can be used")
    return image_key, label_key


def _extension(data: bytes) -> str:
    for magic, ext in ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp")):
        if data.startswith(magic):
            return ext
    return ".webp" if data[8:12] == b"WEBP" else ".img"
