"""`finetune` end to end: phase 2 trained from the cut-layer cache vs from images, in one run.

    .venv/bin/python benchmarks/finetune.py [--base vgg11] [--images 96] [--image-size 64] [--epochs 3]

Generated PNGs in three class folders, random-init weights (seeded; the compute is that of ImageNet
weights), `--freeze-until` the last stage, no augmentation (the condition for the cut cache). Prints,
measured in this run on this machine: the phase-1 seconds per epoch (head on cached features), the
phase-2 seconds per epoch from images and from the cached output of the last frozen stage (the cut
extraction is timed separately), and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_images(root: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")


def main() -> None:
    from tltoolkit.architectures import get_spec
    from tltoolkit.training.finetune import finetune

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="vgg11")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    stage = get_spec(args.base).stage_names[-1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_images(tmp / "data", args.images, args.image_size)
        results = {}
        for cut in (False, True):
            lines = []
            entry = finetune({"base": args.base, "weights": "none", "data": str(tmp / "data"),
                              "out": str(tmp / f"run-{cut}"), "cache_dir": str(tmp / "cache"),
                              "freeze_until": stage, "image_size": args.image_size, "augment": "none",
                              "epochs": args.epochs, "fine_tune_epochs": args.epochs, "patience": 99,
                              "batch_size": 16, "cut_cache": cut}, progress=False, echo=lines.append)
            results[cut] = entry
        phase1 = results[False]["phases"][0]["seconds"]
        from_images = results[False]["phases"][1]["seconds"] / args.epochs
        from_cut = results[True]["phases"][1]["seconds"] / args.epochs  # includes the one-off cut extraction
        print(f"{args.base} at {args.image_size}px, {args.images} images, {args.epochs} epochs per phase, "
              f"training {stage} + head")
        print(f"phase 1 (the head sweep on cached features, to convergence): {phase1:.2f} s in all")
        print(f"phase 2 from images:              {from_images:.2f} s/epoch")
        print(f"phase 2 from the cut cache:       {from_cut:.2f} s/epoch (incl. the one-off extraction)")
        print(f"ratio images / cut cache: {from_images / from_cut:.2f}x")


if __name__ == "__main__":
    main()
