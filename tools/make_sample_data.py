"""Writes the embedded sample data: scikit-learn's handwritten digits as PNG class folders.

    python tools/make_sample_data.py            # writes data/digits04, digits04-test, digits59, digits59-test
    python tools/make_sample_data.py --force    # replaces them

The source is `sklearn.datasets.load_digits()` (1,797 scans of 8x8 pixels, 0..16 ink counts; shipped
inside scikit-learn, so this needs no network). Each image becomes an RGB PNG of `--size` pixels
(default 32, what the CIFAR ResNets take), grey: dark ink on white paper (RGB, so a scan finds them
ready as they are rather than "converted" from greyscale): every source pixel is repeated
into a `size/8` square (nearest neighbour: no detail is invented, and no resampling library can
change the pixels). The file name is the image's index in `load_digits()`, so each file traces back
to its source row.

Four folders of class folders, each a ready `--data` for tltoolkit:
  digits04/{0..4}       the pretraining half (the embedded backbone is trained on it)
  digits04-test/{0..4}  held out from the backbone's training: its source accuracy
  digits59/{5..9}       the transfer half (the demo fine-tunes the backbone on it)
  digits59-test/{5..9}  held out from fine-tuning: predict / evaluate / the transfer table
Images whose index is a multiple of 5 (20%) are the test split.

Deterministic: the same scikit-learn data gives the same pixels, and the same Pillow the same bytes.
Each folder is written next to its target and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE_SIZE = 8
MAX_INK = 16  # load_digits pixels count the inked pixels of a 4x4 block of the 32x32 scan
TEST_EVERY = 5  # index % 5 == 0: the test split
HALVES = {"digits04": range(0, 5), "digits59": range(5, 10)}


def folder_names() -> list[str]:
    return [name for half in HALVES for name in (half, f"{half}-test")]


def digit_images(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`(images, labels)`: uint8 `[1797, size, size, 3]` (255 = paper, 0 = full ink) and the digits."""
    from sklearn.datasets import load_digits

    if size % SOURCE_SIZE or size < SOURCE_SIZE:
        raise SystemExit(f"--size must be a multiple of {SOURCE_SIZE}, got {size}")
    digits = load_digits()
    ink = digits.images.astype(np.int64)  # float64 holding exact integers 0..16
    grey = ((MAX_INK - ink) * 255 + MAX_INK // 2) // MAX_INK  # 0..16 ink -> 255..0, rounded
    factor = size // SOURCE_SIZE
    upscaled = grey.repeat(factor, axis=1).repeat(factor, axis=2)
    return np.repeat(upscaled[..., None], 3, axis=3).astype(np.uint8), digits.target.astype(int)


def layout(labels: np.ndarray) -> dict[str, list[int]]:
    """The image indices of each output folder."""
    folders = {}
    for half, classes in HALVES.items():
        mine = [i for i, label in enumerate(labels) if label in classes]
        folders[half] = [i for i in mine if i % TEST_EVERY]
        folders[f"{half}-test"] = [i for i in mine if i % TEST_EVERY == 0]
    return folders


def write_folder(target: Path, indices: list[int], images: np.ndarray, labels: np.ndarray) -> None:
    """Writes the class folders into a temporary sibling and renames it to `target`."""
    from PIL import Image

    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        for index in indices:
            path = temporary / str(labels[index]) / f"{index:04d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(images[index]).save(path, format="PNG")
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def make_sample_data(out: Path, size: int = 32, force: bool = False) -> dict[str, int]:
    """Writes the four folders under `out`; returns the image count of each."""
    out = Path(out)
    existing = [name for name in folder_names() if (out / name).exists()]
    if existing and not force:
        raise SystemExit(f"{out / existing[0]} exists; pass --force to replace the sample data")
    out.mkdir(parents=True, exist_ok=True)
    images, labels = digit_images(size)
    counts = {}
    for name, indices in layout(labels).items():
        write_folder(out / name, indices, images, labels)
        counts[name] = len(indices)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data", help="parent folder (default: data/)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels, a multiple of 8 (default 32)")
    parser.add_argument("--force", action="store_true", help="replace existing sample folders")
    args = parser.parse_args(argv)
    counts = make_sample_data(args.out, args.size, args.force)
    for name, count in counts.items():
        print(f"{args.out / name}: {count} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
