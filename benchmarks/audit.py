"""`tltoolkit audit` and `tltoolkit rank`: what the audit finds among planted defects, and how long both
take on 10,000 cached feature rows.

    .venv/bin/python benchmarks/audit.py [--rows 10000] [--seed 0]

1. Planted defects (tests/images.py `plant_defects`) in all of data/digits59 (718 images): 5% of the
   labels flipped, 20 images copied into the other split (resized by 5/4, re-encoded as JPEG), 5 animal
   silhouettes (data/animals) filed under random digits. The audit on the embedded backbone's features:
   recall and precision per kind (a found pair counts when it is a planted copy and its original).
2. Time: `--rows` images made from the digits (each of the 1,797 digit images shifted by up to 2 pixels
   and with seeded noise, under its digit: 10 classes), extracted once (timed apart), then `audit` and
   `rank` (backbone) on the cached rows, each timed in this process (TensorFlow already imported).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import BACKBONE, BASE, ROOT  # noqa: E402  (same folder; puts the repository on the path)

sys.path.insert(0, str(ROOT / "tests"))
from images import plant_defects  # noqa: E402


def recall_precision(found: set, truth: set) -> str:
    hits = len(found & truth)
    return f"recall {hits}/{len(truth)} = {hits / len(truth):.2f}, precision {hits}/{len(found)} = " \
           f"{hits / max(1, len(found)):.2f}"


def planted(work: Path, seed: int) -> None:
    from tltoolkit.audit import audit

    strangers = [sorted((ROOT / "data" / "animals" / animal).glob("*.png"))[0]
                 for animal in sorted(os.listdir(ROOT / "data" / "animals"))[:5]]
    manifest, flipped, copies, outliers = plant_defects(ROOT / "data" / "digits59", work / "planted", copies=20,
                                                        seed=seed, strangers=[str(p) for p in strangers])
    result = audit(manifest, BASE, str(BACKBONE), cache_dir=work / "cache", seed=seed)
    pairs = result.flagged("near_duplicate")
    print(f"planted defects in {len(result.folder.table)} images (digits59, {BASE} digits backbone):")
    found_pairs = {frozenset(p) for p in zip(pairs["path"], pairs["other_path"])}
    print(f"  near duplicates: {recall_precision(found_pairs, {frozenset(p) for p in copies.items()})}")
    print(f"  label errors:    {recall_precision(set(result.flagged('label_error')['path']), flipped)}")
    print(f"  outliers:        {recall_precision(set(result.flagged('outlier')['path']), outliers)}")


def many_images(folder: Path, rows: int, seed: int) -> Path:
    """`rows` PNGs: the digit images shifted by up to 2 pixels, with seeded noise, under their digits."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = sorted(p for d in ("digits04", "digits04-test", "digits59", "digits59-test")
                     for p in (ROOT / "data" / d).glob("*/*.png"))
    for i in range(rows):
        source = sources[i % len(sources)]
        pixels = np.asarray(Image.open(source).convert("RGB"), "int16")
        pixels = np.roll(pixels, tuple(rng.integers(-2, 3, 2)), axis=(0, 1)) + rng.integers(-12, 13, pixels.shape)
        target = folder / source.parent.name / f"{i:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(target)
    return folder


def timed(work: Path, rows: int, seed: int) -> None:
    from tltoolkit.audit import audit
    from tltoolkit.features.folder import folder_features
    from tltoolkit.rank import rank

    data = many_images(work / "many", rows, seed)
    cache = work / "cache"
    tic = time.perf_counter()
    first = folder_features(data, BASE, str(BACKBONE), cache_dir=cache)
    print(f"{len(first.table)} images: first extraction (fills the cache) {time.perf_counter() - tic:.1f} s "
          f"({first.computed} computed)")
    tic, cpu = time.perf_counter(), time.process_time()
    result = audit(data, BASE, str(BACKBONE), cache_dir=cache, seed=seed)
    seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items())
    print(f"audit on {len(result.folder.table)} cached rows: {seconds:.1f} s wall, {cpu:.1f} s CPU "
          f"({result.folder.computed} computed; {parts}; the rest: scan and building the base)")
    tic, cpu = time.perf_counter(), time.process_time()
    table = rank(data, [f"{BASE}@{BACKBONE}"], cache_dir=cache, seed=seed)
    seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    row = table.iloc[0]
    print(f"rank (1 base) on the same rows: {seconds:.1f} s wall, {cpu:.1f} s CPU ({int(row['computed'])} computed; "
          f"k-NN {row['knn_s']:.2f} s, probe {row['probe_s']:.2f} s, LogME {row['logme_s']:.2f} s)")
    print(f"(load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"$ .venv/bin/python benchmarks/audit.py --rows {args.rows} --seed {args.seed}  ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as work:
        planted(Path(work), args.seed)
        timed(Path(work), args.rows, args.seed)


if __name__ == "__main__":
    main()
