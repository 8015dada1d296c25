"""Writes a second real image domain: animal silhouettes from the `animal-mnist` package, as PNG class folders.

    pip install -e ".[bench]"                 # animal-mnist==0.4: the images ship inside its wheel
    python tools/make_animal_data.py          # writes data/animals and data/animals-test
    python tools/make_animal_data.py --force  # replaces them

The source is the file `animal_mnist/data/Animal_MNIST/animal_data_version_3.gz` of animal-mnist 0.4
(10,000 grey 28x28 silhouettes, white on black, 1,000 in each of 10 classes; a pickled NumPy array,
read here by an unpickler that admits nothing but NumPy arrays, after checking the file's SHA-256).
No network: the file is in the wheel.

284 of the source images (2.8%) repeat an earlier image of their class, exactly or mirrored
(compared by pixel distance, L2 over 0..1 pixels: these copies are within 0.1, while the closest
distinct pairs are 0.5 and more apart). Each such group keeps its first image only, so no image
appears in both the pool and the test set, mirrored or not. Of each class's remaining images a seeded
permutation (NumPy's PCG64, seed 0) takes `--test` for `animals-test/` and the next `--pool` for
`animals/`.

Each image becomes a 32x32 RGB PNG (what the CIFAR ResNets take): padded by 2 black pixels on each
side (the silhouettes' own background; no resampling, so no library version changes a pixel), grey
repeated into three channels. The file name is the image's index in the source array.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_sample_data import write_folder  # noqa: E402  (same folder)

PACKAGE, VERSION = "animal_mnist", "0.4"
IMAGES = "data/Animal_MNIST/animal_data_version_3.gz"
LABELS = "data/Animal_MNIST/animal_label_version_3.gz"
SHA256 = {IMAGES: "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
          LABELS: "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57"}
CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")  # label order
SIZE, PAD = 32, 2
DUPLICATE_DISTANCE = 0.5  # copies are within 0.1, distinct images 0.5 and further apart (see above)
SEED = 0
FOLDERS = ("animals", "animals-test")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else: a data file must not run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a NumPy array part")
        return super().find_class(module, name)


def _read(relative: str) -> np.ndarray:
    from importlib import metadata, resources

    try:
        version = metadata.version("animal-mnist")
        data = (resources.files(PACKAGE) / relative).read_bytes()
    except (metadata.PackageNotFoundError, ModuleNotFoundError, FileNotFoundError):
        raise SystemExit(f"animal-mnist {VERSION} is not installed: pip install -e '.[bench]'") from None
    if hashlib.sha256(data).hexdigest() != SHA256[relative]:
        raise SystemExit(f"{PACKAGE}/{relative} of animal-mnist {version} is not the file this tool was written "
                         f"for (animal-mnist {VERSION}); install that version")
    return np.asarray(_ArraysOnly(io.BytesIO(gzip.decompress(data))).load())


def source() -> tuple[np.ndarray, np.ndarray]:
    """`(images, labels)`: uint8 `[10000, 28, 28]` and int `[10000]`, as the package ships them."""
    images, labels = _read(IMAGES), _read(LABELS).astype(int)
    if images.shape != (len(labels), 28, 28) or images.dtype != np.uint8 or set(labels) != set(range(len(CLASSES))):
        raise SystemExit(f"unexpected source arrays {images.shape} {images.dtype}, labels {sorted(set(labels))}")
    return images, labels


def first_of_duplicates(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Indices of the images with no earlier near-copy (itself or mirrored) in their class, in order."""
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        pixels = images[members].reshape(len(members), -1).astype(np.float64) / 255
        mirrored = images[members][:, :, ::-1].reshape(len(members), -1).astype(np.float64) / 255
        norms = (pixels ** 2).sum(1)
        distances = np.minimum(norms[:, None] + norms[None, :] - 2 * pixels @ pixels.T,
                               norms[:, None] + norms[None, :] - 2 * pixels @ mirrored.T)
        close = np.sqrt(np.maximum(distances, 0)) < DUPLICATE_DISTANCE
        earlier = np.tril(close, k=-1).any(axis=1)  # a near-copy with a smaller index exists
        keep += members[~earlier].tolist()
    return np.array(sorted(keep))


def layout(labels: np.ndarray, kept: np.ndarray, pool: int, test: int) -> dict[str, list[int]]:
    """The source indices of each output folder: per class, a seeded permutation of the kept images,
    the first `test` to the test set, the next `pool` to the pool."""
    rng = np.random.default_rng(SEED)
    folders = {name: [] for name in FOLDERS}
    for label in range(len(CLASSES)):
        members = kept[labels[kept] == label]
        if len(members) < pool + test:
            raise SystemExit(f"class {CLASSES[label]} has {len(members)} distinct images, fewer than "
                             f"--pool {pool} + --test {test}")
        order = members[rng.permutation(len(members))]
        folders["animals-test"] += sorted(order[:test].tolist())
        folders["animals"] += sorted(order[test:test + pool].tolist())
    return folders


def as_rgb(images: np.ndarray) -> np.ndarray:
    """28x28 grey -> 32x32x3: black padding, the grey value in every channel."""
    padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD)))
    return np.repeat(padded[..., None], 3, axis=3)


def make_animal_data(out: Path, pool: int = 150, test: int = 50, force: bool = False) -> dict[str, int]:
    """Writes the two folders under `out`; returns the image count of each."""
    out = Path(out)
    existing = [name for name in FOLDERS if (out / name).exists()]
    if existing and not force:
        raise SystemExit(f"{out / existing[0]} exists; pass --force to replace it")
    images, labels = source()
    folders = layout(labels, first_of_duplicates(images, labels), pool, test)
    out.mkdir(parents=True, exist_ok=True)
    names = np.array(CLASSES)[labels]
    rgb = as_rgb(images)
    for name, indices in folders.items():
        write_folder(out / name, indices, rgb, names)
    return {name: len(indices) for name, indices in folders.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data", help="parent folder (default: data/)")
    parser.add_argument("--pool", type=int, default=150, help="training-pool images per class (default 150)")
    parser.add_argument("--test", type=int, default=50, help="held-out test images per class (default 50)")
    parser.add_argument("--force", action="store_true", help="replace existing folders")
    args = parser.parse_args(argv)
    if args.pool < 1 or args.test < 1:
        parser.error("--pool and --test must be at least 1")
    for name, count in make_animal_data(args.out, args.pool, args.test, args.force).items():
        print(f"{args.out / name}: {count} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
