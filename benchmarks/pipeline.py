"""Input-pipeline throughput, measured in one run on this machine:

  ours   tltoolkit.pipeline.image_dataset (default center_crop, and stretch)
  keras  keras.utils.image_dataset_from_directory on the same folder, same size and batch (its default
         stretch, and crop_to_aspect_ratio=True to compare with our centre crop)
  model  ResNet-50 (weights=None) forward passes on an in-memory batch: the compute-only rate

Targets: ours >= keras, and ours >= 5x the model's rate (the pipeline never starves feature extraction).

    .venv/bin/python benchmarks/pipeline.py [--folder DIR] [--images 512] [--source-size 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_folder(root: Path, count: int, size: int) -> Path:
    """`count` smooth random JPEGs (natural-image-like file sizes) in two class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8))
        coarse.resize((size, size), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def best_rates(datasets: dict, rounds: int) -> dict:
    """Images/s of each dataset: one warm-up pass (file cache, tracing, autotuning), then `rounds` passes
    taken in turn, so that load from other processes hits every contender alike; the best pass counts."""
    for dataset in datasets.values():
        for _ in dataset:
            pass
    rates = {name: 0.0 for name in datasets}
    for _ in range(rounds):
        for name, dataset in datasets.items():
            count, start = 0, time.perf_counter()
            for batch in dataset:
                count += int((batch[0] if isinstance(batch, tuple) else batch).shape[0])
            rates[name] = max(rates[name], count / (time.perf_counter() - start))
    return rates


def model_images_per_second(image_size: int, batch_size: int, steps: int = 5) -> float:
    import keras
    import tensorflow as tf

    model = keras.applications.ResNet50(weights=None, input_shape=(image_size, image_size, 3))
    batch = tf.random.uniform((batch_size, image_size, image_size, 3), 0, 255)
    forward = tf.function(lambda x: model(x, training=False))
    forward(batch).numpy()
    start = time.perf_counter()
    for _ in range(steps):
        forward(batch).numpy()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a folder of class subfolders (default: generate one)")
    parser.add_argument("--images", type=int, default=512, help="images to generate (default: 512)")
    parser.add_argument("--source-size", type=int, default=256, help="generated image side (default: 256)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per pipeline (default: 3)")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from tltoolkit.data import scan
    from tltoolkit.pipeline import image_dataset

    with tempfile.TemporaryDirectory() as temp:
        folder = args.folder or make_folder(Path(temp) / "images", args.images, args.source_size)
        # The scan's table, as every tltoolkit command passes it: its facts (format, size) let the
        # pipeline pick each file's decoder ahead of time. The scan itself is not timed.
        table = scan(folder, cache_dir=Path(temp) / "cache").usable()
        size, batch = args.image_size, args.batch_size
        print(f"{len(table)} images from {folder}, to {size}x{size}, batch {batch}, "
              f"{os.cpu_count()} CPUs, GPUs: {len(tf.config.list_physical_devices('GPU'))}")

        rates = best_rates({
            "ours (center_crop)": image_dataset(table, size, batch),
            "ours (stretch)": image_dataset(table, size, batch, resize="stretch"),
            "keras (stretch)": keras.utils.image_dataset_from_directory(
                folder, image_size=(size, size), batch_size=batch, shuffle=False, verbose=False),
            "keras (crop_to_aspect_ratio)": keras.utils.image_dataset_from_directory(
                folder, image_size=(size, size), batch_size=batch, shuffle=False, verbose=False,
                crop_to_aspect_ratio=True),
        }, args.rounds)
    rates["ResNet-50 compute only"] = model_images_per_second(size, batch)

    for name, rate in rates.items():
        print(f"{name:38s} {rate:9.1f} images/s")
    model_rate = rates["ResNet-50 compute only"]
    # Like for like: our centre crop against Keras' crop_to_aspect_ratio, our stretch against its default.
    for ours, theirs in (("ours (center_crop)", "keras (crop_to_aspect_ratio)"), ("ours (stretch)", "keras (stretch)")):
        print(f"{ours}: {rates[ours] / rates[theirs]:.2f}x {theirs}, {rates[ours] / model_rate:.1f}x ResNet-50")


if __name__ == "__main__":
    main()
