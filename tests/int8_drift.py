"""int8 TFLite at input sizes other than the training size: the export's int8 file against the TFLite
converter's default int8 (size arithmetic quantised too, calibrated on the training images at their own
sizes), both compared with the Keras serving model. Shared by the export tests; run it for the table
quoted in tltoolkit/export.py and the README:

    .venv/bin/python -m tests.int8_drift

It trains the export tests' tiny run (32x32, seconds on 2 CPU cores) in a temporary folder; each row is
three framed images (`framed_images`) of that size.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tests.runs import COLOURS, coloured_image, train_run, write_class_folders

SIZES = [(32, 32), (16, 16), (45, 61), (64, 64), (128, 128), (100, 300), (256, 256), (1000, 750), (3000, 4000)]


def framed_image(inner: int, outer: int, height: int, width: int, rng) -> np.ndarray:
    """Class `outer`'s colour with the middle third in class `inner`'s: the class the model sees
    depends on the crop box, so a wrong one shows."""
    colours = list(COLOURS.values())
    image = coloured_image(colours[outer], height, width, rng)
    top, left = height // 3, width // 3
    image[top:height - top, left:width - left] = coloured_image(colours[inner], height - 2 * top, width - 2 * left, rng)
    return image


def framed_images(height: int, width: int, seed: int = 7) -> list[np.ndarray]:
    """One framed image per class at `height` x `width`, each framed by the next class's colour."""
    rng = np.random.default_rng(seed)
    return [framed_image(i, (i + 1) % len(COLOURS), height, width, rng) for i in range(len(COLOURS))]


def converter_default_int8(run, out) -> Path:
    """The run as int8 TFLite the way the converter does it by default (everything with an int8 kernel
    quantised), calibrated on the run's training images at their own sizes: how exports were made before
    the size arithmetic was kept float."""
    import tensorflow as tf

    from tltoolkit.inference.classifier import load_classifier
    from tltoolkit.export import REPRESENTATIVE_IMAGES, sample_images, serving_model

    classifier = load_classifier(run)
    images = sample_images(classifier, count=REPRESENTATIVE_IMAGES, synthetic=False)
    with tempfile.TemporaryDirectory() as folder:
        serving_model(classifier).export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        Path(out).write_bytes(converter.convert())
    return Path(out)


def main() -> None:
    from tltoolkit.inference.classifier import load_classifier
    from tltoolkit.export import _keras_runner, _runner, export, serving_model

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_class_folders(root / "data", per_class=6)
        run = train_run(root / "run", root / "data", filters=48, epochs=30)  # as tests/test_export.py
        files = {"converter default int8": converter_default_int8(run, root / "default.tflite"),
                 "tltoolkit export int8": export(run, "tflite", root / "export.tflite", quantize="int8").path}
        keras = _keras_runner(serving_model(load_classifier(run)))
        runners = {name: _runner("tflite", path) for name, path in files.items()}
        print(f"{'size':>10}  " + "  ".join(f"{name:>32}" for name in runners))
        for height, width in SIZES:
            images = framed_images(height, width)
            expected = np.concatenate([probabilities for probabilities, _ in keras(images)])
            cells = []
            for run_tflite in runners.values():
                actual = np.concatenate([probabilities for probabilities, _ in run_tflite(images)])
                agree = int((actual.argmax(1) == expected.argmax(1)).sum())
                cells.append(f"max |dp| {np.abs(actual - expected).max():.3f}, top-1 {agree}/{len(images)}")
            print(f"{height:>4}x{width:<5}  " + "  ".join(f"{cell:>32}" for cell in cells))


if __name__ == "__main__":
    main()
