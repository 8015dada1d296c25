"""Trains the embedded pretrained backbone: a CIFAR ResNet on digits 0-4 of the sample data.

    python tools/make_sample_data.py      # first, once: data/digits04, digits04-test, ...
    python tools/train_backbone.py        # writes data/backbone/digits04_resnet20_cifar.weights.h5 + .json

The demo transfers this backbone to digits 5-9 (data/digits59), classes it has never seen: real
transfer learning with no download. The model is raw 0..255 pixels -> light augmentation (small
shifts, rotations and zooms; no flips, digits are not symmetric) -> the architecture's preprocessing
(as tltoolkit feeds it) -> the base -> global average pooling -> a 5-way softmax. Only the base's
weights are saved (`build(arch, include_top=False)` loads them as they are; a model with a new head
loads them into its base). The JSON record says how it was trained and its accuracy on
data/digits04-test, which training never sees.

Runs deterministically on CPU (seeded, with TensorFlow's op determinism); takes about 1.5 minutes on
2 cores. Refuses to replace an existing backbone without --force.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUGMENTATION = "translate,rotate,zoom"  # tltoolkit.augment layer names
ROTATIONS = 4


def backbone_path(out: Path, arch: str) -> Path:
    return out / f"digits04_{arch}.weights.h5"


def labelled(folder: Path):
    """The usable rows of a class-folder tree, by tltoolkit's own scan."""
    from tltoolkit.data import scan

    if not folder.is_dir():
        raise SystemExit(f"{folder} does not exist; run python tools/make_sample_data.py first")
    return scan(folder, val_split=0.0, cache=False).usable()


def classifier(arch: str, num_classes: int, size: int, seed: int):
    """(model: raw pixels -> class probabilities, base: the part that is saved)."""
    import keras

    from tltoolkit.architectures import build, get_spec
    from tltoolkit.architectures.preprocessing import preprocessing_layer
    from tltoolkit.augment import augmentation

    spec = get_spec(arch)
    base = build(arch, include_top=False, input_shape=(size, size, spec.channels))
    inputs = keras.Input((size, size, spec.channels), name="pixels")
    x = augmentation(AUGMENTATION, image_size=size, seed=seed)(inputs)
    x = preprocessing_layer(spec.preprocessing)(x)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{arch}_digits04"), base


def with_rotations(rotations: int):
    """Self-supervised label augmentation (Lee et al. 2020, arXiv:1910.05872): every image four times,
    turned by 0/90/180/270 degrees, labelled (digit, turn). Twenty classes instead of five ask the
    features for more than what separates 0-4, and they transfer to 5-9 better (measured: see
    data/README.md)."""
    import tensorflow as tf

    def expand(images, labels):
        turned = [tf.image.rot90(images, k) for k in range(rotations)]
        joint = [labels * rotations + k for k in range(rotations)]
        return tf.concat(turned, 0), tf.concat(joint, 0)

    return expand


def digit_accuracy(model, dataset) -> float:
    """Accuracy on upright images: the digit whose upright class (turn 0) is most probable."""
    import numpy as np

    hits = total = 0
    for images, labels in dataset:
        upright = model(images, training=False).numpy()[:, ::ROTATIONS]
        hits += int((upright.argmax(axis=1) == labels.numpy()).sum())
        total += len(labels)
    return hits / total


def train(arch: str, epochs: int, batch_size: int, learning_rate: float, seed: int, data: Path):
    """Trains on `data`/digits04 and measures on `data`/digits04-test; returns (base, record)."""
    import keras
    import tensorflow as tf

    from tltoolkit.pipeline import image_dataset

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    train_rows, test_rows = labelled(data / "digits04"), labelled(data / "digits04-test")
    classes = sorted(train_rows["label"].unique())
    if sorted(test_rows["label"].unique()) != classes:
        raise SystemExit(f"{data / 'digits04-test'} has other classes than {data / 'digits04'}; regenerate the data")
    size = 32
    train_set = image_dataset(train_rows, size, batch_size, shuffle=True, seed=seed, deterministic=True)
    train_set = train_set.map(with_rotations(ROTATIONS))
    test_set = image_dataset(test_rows, size, batch_size, deterministic=True)

    model, base = classifier(arch, len(classes) * ROTATIONS, size, seed)
    steps = epochs * -(-len(train_rows) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(train_set, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - started
    test_accuracy = digit_accuracy(model, test_set)
    record = {
        "arch": arch, "input_size": [size, size], "classes": classes,
        "train_data": _shown(data / "digits04"), "train_images": len(train_rows),
        "test_data": _shown(data / "digits04-test"), "test_images": len(test_rows),
        "test_accuracy": round(float(test_accuracy), 4),
        "final_train_accuracy": round(float(history.history["accuracy"][-1]), 4),
        "epochs": epochs, "batch_size": batch_size, "optimizer": "Adam",
        "learning_rate": f"{learning_rate} cosine-decayed to 0 over {steps} steps",
        "augmentation": AUGMENTATION, "label_augmentation": f"{ROTATIONS} turns of 90 degrees (digit, turn) classes", "seed": seed, "train_seconds": round(seconds, 1),
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }
    return base, record


def _shown(path: Path) -> str:
    """`path` relative to the repository when inside it (the record reads the same on every clone)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _readable(path: str) -> None:
    """mkstemp makes files private (0600); give them the mode a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save(base, record: dict, target: Path) -> None:
    """The base's weights and the record, each renamed into place when complete."""
    from tltoolkit.architectures.weights import file_digest

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".weights.h5")
    os.close(handle)
    try:
        base.save_weights(temporary, overwrite=True)
        _readable(temporary)
        record = {**record, "weights_file": target.name, "weights_sha256": file_digest(temporary, "sha256")}
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    record_path = target.with_name(target.name.removesuffix(".weights.h5") + ".json")
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=".", suffix=".json", delete=False) as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    _readable(f.name)
    os.replace(f.name, record_path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet20_cifar", help="a registry id taking 32x32 input")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="folder holding digits04 and digits04-test")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "backbone")
    parser.add_argument("--force", action="store_true", help="replace an existing backbone")
    args = parser.parse_args(argv)
    target = backbone_path(args.out, args.arch)
    if target.exists() and not args.force:
        raise SystemExit(f"{target} exists; pass --force to retrain and replace it")
    base, record = train(args.arch, args.epochs, args.batch_size, args.learning_rate, args.seed, args.data)
    argv = sys.argv[1:] if argv is None else argv
    record["command"] = shlex.join(["python", "tools/train_backbone.py", *argv])
    save(base, record, target)
    print(f"source accuracy on {record['test_data']} ({record['test_images']} held-out images): "
          f"{record['test_accuracy']:.4f}")
    print(f"wrote {target} ({record['train_seconds']} s of training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
