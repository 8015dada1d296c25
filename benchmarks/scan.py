"""Scan throughput, measured in one run on this machine:

  cold    tltoolkit.data.scan with an empty cache: every file read, hashed and decoded (JPEGs in
          Pillow's draft mode)
  decode  a full Pillow decode of the same files, one thread: what a naive validator pays
  warm    the same scan again, nothing changed: stat + cache lookup only
  many    a warm re-scan of `--files` tiny files, to extrapolate to a 100k-image folder

    .venv/bin/python benchmarks/scan.py [--images 300] [--size 1024] [--files 20000]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_photos(root: Path, count: int, size: int) -> None:
    """Smooth random JPEGs (photo-like file sizes), two classes."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (size // 16, size * 3 // 64, 3), dtype=np.uint8))
        coarse.resize((size * 3 // 4, size), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)


def make_tiny_files(root: Path, count: int) -> None:
    """One 8x8 JPEG with a different trailing comment per copy: distinct hashes, cheap to write."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "JPEG")
    data = buffer.getvalue()
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(data + str(i).encode())


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=1024, help="long side of the generated photos")
    parser.add_argument("--files", type=int, default=20000)
    args = parser.parse_args()
    from tltoolkit.data import scan

    with tempfile.TemporaryDirectory() as work:
        photos, tiny, cache = Path(work) / "photos", Path(work) / "tiny", Path(work) / "cache"
        make_photos(photos, args.images, args.size)
        paths = sorted(photos.rglob("*.jpg"))
        for path in paths:  # page cache warm for every measurement
            path.read_bytes()
        decode = timed(lambda: [Image.open(p).load() for p in paths])
        cold = timed(lambda: scan(photos, cache_dir=cache))
        warm = timed(lambda: scan(photos, cache_dir=cache))
        print(f"{args.images} JPEGs {args.size * 3 // 4}x{args.size}:")
        print(f"  full Pillow decode, 1 thread  {args.images / decode:8.0f} images/s")
        print(f"  cold scan (hash + draft decode) {args.images / cold:6.0f} images/s  = {decode / cold:.1f}x the full decode")
        print(f"  warm re-scan                  {args.images / warm:8.0f} images/s  = {cold / warm:.0f}x the cold scan")

        make_tiny_files(tiny, args.files)
        scan(tiny, cache_dir=cache)
        many = timed(lambda: scan(tiny, cache_dir=cache))
        print(f"{args.files} unchanged files: warm re-scan {many:.2f} s ({args.files / many:.0f} files/s;"
              f" about {100_000 / args.files * many:.0f} s for 100k)")


if __name__ == "__main__":
    main()
