"""Plain functions that make what `tltoolkit finetune` leaves behind: class folders of learnable images
and a run directory (`model.keras`, `class_index.json`, `config.json`, `snapshot.parquet`) holding a
tiny trained classifier. Shared by the evaluate and export tests."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from tests.images import write_image

COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}  # sorted names = ids


def coloured_image(colour, height, width, rng) -> np.ndarray:
    """Noise around a class colour, with a dark square somewhere: easy to learn, never constant."""
    image = np.clip(rng.normal(colour, 35, (height, width, 3)), 0, 255).astype(np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[top:top + height // 4, left:left + width // 4] //= 4
    return image


def write_class_folders(root, per_class=10, seed=0, sizes=((36, 44), (40, 40), (48, 36))) -> dict[str, list[str]]:
    """`root/<colour>/img_N.png` for each class of COLOURS, in several sizes; returns {class: paths}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, colour in COLOURS.items():
        written[name] = [write_image(os.path.join(root, name, f"img_{seed}_{i}.png"),
                                     coloured_image(colour, *sizes[i % len(sizes)], rng))
                         for i in range(per_class)]
    return written


def train_run(run_dir, data_root, image_size=32, seed=0, epochs=40, filters=8) -> str:
    """Trains a small conv net on the class folders of `data_root` (uint8 pixels in, probabilities
    out, augmentation and preprocessing inside) and writes a run directory as finetune does. Returns
    its path."""
    import keras
    import pandas as pd

    from tltoolkit.architectures.preprocessing import preprocessing_layer
    from tltoolkit.data import save_class_index
    from tltoolkit.pipeline import decode_image_file

    classes = sorted(os.listdir(data_root))
    index = {name: i for i, name in enumerate(classes)}
    rows = [(os.path.join(data_root, name, file), name) for name in classes
            for file in sorted(os.listdir(os.path.join(data_root, name)))]
    resize = keras.layers.Resizing(image_size, image_size, crop_to_aspect_ratio=True)
    images = np.stack([resize(decode_image_file(path)).numpy() for path, _ in rows]).round().astype(np.uint8)
    labels = np.array([index[name] for _, name in rows])

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="pixels")
    # What a finetune model holds: augmentation (a Keras image layer, training=True by default),
    # batch norm and dropout, all of which must be inactive whenever the model is used.
    x = keras.layers.RandomFlip("horizontal", seed=seed)(inputs)
    x = preprocessing_layer("scale")(x)
    x = keras.layers.Conv2D(filters, 3, use_bias=False)(x)
    x = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3, seed=seed)(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    model.compile(keras.optimizers.Adam(0.03), "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=epochs, batch_size=16, verbose=0)

    os.makedirs(run_dir, exist_ok=True)
    model.save(os.path.join(run_dir, "model.keras"))
    save_class_index(index, os.path.join(run_dir, "class_index.json"))
    with open(os.path.join(run_dir, "config.json"), "w") as file:
        json.dump({"base": "tiny", "image_size": [image_size, image_size], "resize": "center_crop"}, file)
    pd.DataFrame({
        "sha256": [hashlib.sha256(open(path, "rb").read()).hexdigest() for path, _ in rows],
        "path": [path for path, _ in rows], "label": [name for _, name in rows],
        "split": ["train"] * len(rows)}).to_parquet(os.path.join(run_dir, "snapshot.parquet"), index=False)
    return str(run_dir)
