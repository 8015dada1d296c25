"""Augmentation: PCA colour statistics and layer, the crop layer, presets, composition, batch mixing and
the `augment` preview CLI."""

import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from tltoolkit.augment import (LAYER_NAMES, PRESETS, PCAColor, RandomResizedCrop, augmentation, fit_pca_color,
                               mix_batches)
from tltoolkit.errors import TltoolkitError
from tltoolkit.pipeline import image_dataset

RNG = np.random.default_rng(0)


def correlated_pixels(n=6, size=16):
    """Images whose colours vary mostly along one axis (like natural images: brightness dominates)."""
    base = RNG.normal(128, 40, (n, size, size, 1))
    noise = RNG.normal(0, (12, 6, 3), (n, size, size, 3))
    return np.clip(base * (1.0, 0.9, 0.7) + noise, 0, 255).astype("float32")


def test_pca_statistics_match_numpy_eigh():
    images = correlated_pixels()
    stats = fit_pca_color(images)
    values, vectors = np.linalg.eigh(np.cov(images.reshape(-1, 3), rowvar=False))
    np.testing.assert_allclose(stats["eigenvalues"], values[::-1], rtol=1e-9)
    for i in range(3):  # eigenvectors are defined up to sign
        ours, theirs = np.asarray(stats["eigenvectors"])[:, i], vectors[:, 2 - i]
        assert abs(abs(ours @ theirs) - 1) < 1e-9


def test_pca_statistics_from_a_dataset_equal_those_from_the_array(tmp_path):
    images = correlated_pixels(n=5).round().astype("uint8")
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    dataset = image_dataset(pd.DataFrame({"path": paths, "label_id": 0}), 16, batch_size=2, resize="stretch")
    from_files, from_array = fit_pca_color(dataset), fit_pca_color(images)
    np.testing.assert_allclose(from_files["eigenvalues"], from_array["eigenvalues"], rtol=1e-6)


def test_pca_layer_is_identity_at_inference_and_preserves_mean_colour_on_average():
    images = correlated_pixels()
    stats = fit_pca_color(images)
    layer = PCAColor(**stats, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)

    grey = np.full((4000, 2, 2, 3), 128.0, "float32")  # mid-range: clipping cannot bias the mean
    shifts = np.asarray(layer(grey, training=True))[:, 0, 0] - 128.0
    assert np.abs(shifts).mean() > 1  # it does change colours
    assert np.all(np.abs(shifts.mean(axis=0)) < 0.1 * np.sqrt(stats["eigenvalues"][0]) * 0.1)
    # Shifts follow the data's colour covariance, scaled by std**2 = 0.01.
    np.testing.assert_allclose(np.cov(shifts, rowvar=False), 0.01 * np.cov(images.reshape(-1, 3), rowvar=False),
                               atol=0.1 * 0.01 * stats["eigenvalues"][0])


def test_custom_layers_save_and_load_in_a_model(tmp_path):
    stats = fit_pca_color(correlated_pixels())
    inputs = keras.Input((16, 16, 3))
    outputs = augmentation(["flip", "crop", "pca"], pca=stats, seed=3)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # safe mode: the layers are registered
    pca = [layer for layer in loaded.get_layer("augmentation").layers if isinstance(layer, PCAColor)][0]
    np.testing.assert_allclose(pca.eigenvalues, stats["eigenvalues"])
    images = correlated_pixels(n=2)
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), images, atol=1e-4)


def test_random_resized_crop_changes_training_images_only():
    images = np.zeros((8, 16, 16, 3), "float32")
    images[:, :8] = 255  # white top half, black bottom half
    layer = RandomResizedCrop(scale=(0.1, 0.3), seed=0)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    cropped = np.asarray(layer(images, training=True))
    assert cropped.shape == images.shape
    assert len({round(float(m)) for m in cropped.mean(axis=(1, 2, 3))}) > 1  # a different box per image
    whole = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(np.asarray(whole(images, training=True)), images, atol=1e-3)


@pytest.mark.parametrize("name", ["crop", "inception_crop", "pca"])
def test_our_layers_say_truly_whether_xla_compiles_them(name):
    # Keras' jit_compile="auto" (its default; XLA on a GPU) compiles a model only if every layer says
    # supports_jit: a layer that claims it wrongly makes fit() fail on the accelerator.
    images = correlated_pixels(n=2)
    block = augmentation(name, 16, pca=fit_pca_color(images), seed=0)
    try:
        tf.function(lambda x: block(x, training=True), jit_compile=True)(tf.constant(images))
        compiles = True
    except tf.errors.InvalidArgumentError as error:
        assert "No registered" in str(error)
        compiles = False
    assert block.layers[0].supports_jit == compiles


@pytest.mark.parametrize("policy, blocked", [("flip", False), ("light", True), ("randaugment", True)])
def test_jit_compiles_what_xla_can_and_leaves_the_rest_uncompiled(policy, blocked):
    """finetune --jit: a model whose augmentation XLA cannot compile trains without XLA (fit() would
    fail), named by xla_blockers; a flip-only model is compiled."""
    import keras

    from tltoolkit.training.phases import compile_model

    inputs = keras.Input((16, 16, 3))
    x = augmentation(policy, 16, seed=0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    blockers = compile_model(model, 1e-3, 0.0, jit=True)
    assert bool(blockers) == blocked and model.jit_compile == (not blocked)
    labels = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    model.fit(correlated_pixels(n=4), labels, epochs=1, verbose=0)  # XLA on a blocked model would fail here


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_run_in_training_and_are_identity_at_inference(preset):
    images = correlated_pixels(n=4, size=32)
    block = augmentation(preset, 32, pca=fit_pca_color(images), seed=1)
    assert block.name == "augmentation"
    trained = np.asarray(block(images, training=True))
    assert trained.shape == images.shape
    assert trained.min() >= 0 and trained.max() <= 255
    if preset != "none":
        assert np.abs(trained - images).mean() > 1  # the variants differ from the originals
    np.testing.assert_allclose(np.asarray(block(images, training=False)), images, atol=1e-4)


def test_every_named_layer_keeps_pixels_in_range():
    images = RNG.integers(0, 256, (4, 24, 24, 3)).astype("float32")
    block = augmentation(",".join(LAYER_NAMES), pca=fit_pca_color(images), seed=2)
    assert len(block.layers) == len(LAYER_NAMES) + 1  # and the final clip
    out = np.asarray(block(images, training=True))
    assert out.min() >= 0 and out.max() <= 255


def test_composition_from_names_and_layer_objects():
    flip = keras.layers.RandomFlip("vertical", seed=0)
    block = augmentation([flip, "crop"], 16)
    assert block.layers[0] is flip and isinstance(block.layers[1], RandomResizedCrop)


@pytest.mark.parametrize("policy, pca, message", [
    ("flip,blur", None, "unknown augmentation 'blur'; use a preset .* or layers from: flip"),
    ("strong", None, "needs colour statistics"),
])
def test_bad_policies_are_one_line_errors(policy, pca, message):
    with pytest.raises(TltoolkitError, match=message):
        augmentation(policy, 16, pca=pca)


@pytest.mark.parametrize("method", ["mixup", "cutmix"])
def test_mix_batches_keeps_label_sums_at_one(method):
    images = RNG.integers(0, 256, (16, 8, 8, 3)).astype("uint8")
    labels = np.arange(16) % 4
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    mixed = list(mix_batches(dataset, method, alpha=0.8, num_classes=4, seed=0))
    soft = np.concatenate([m[1].numpy() for m in mixed])
    assert soft.shape == (16, 4)
    np.testing.assert_allclose(soft.sum(axis=1), 1, atol=1e-5)
    assert (soft.max(axis=1) < 0.999).any()  # some labels really are mixed
    assert mixed[0][0].dtype == tf.float32 and mixed[0][0].shape == (8, 8, 8, 3)
    with pytest.raises(TltoolkitError, match="num_classes"):
        mix_batches(dataset, method)


@pytest.mark.slow  # a contact sheet of every preset through the CLI
def test_augment_cli_writes_a_preview_and_refuses_to_overwrite(tmp_path):
    for label in ("misty", "tigger"):
        (tmp_path / "cats" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(RNG.integers(0, 256, (30, 40, 3)).astype("uint8")).save(tmp_path / "cats" / label / f"{i}.jpg")
    (tmp_path / "cats" / "misty" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "preview.png"
    command = [sys.executable, "-m", "tltoolkit", "augment", "--data", str(tmp_path / "cats"), "--policy",
               "standard", "--out", str(out), "--n", "3", "--variants", "3", "--image-size", "32"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 images x 3 variants" in done.stdout
    with Image.open(out) as preview:
        assert preview.format == "PNG" and preview.size[0] > preview.size[1]  # 4 columns, 3 rows

    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    assert subprocess.run(command + ["--force"], capture_output=True).returncode == 0
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ""] == ["preview.png"]  # no temp files left


def test_the_preview_reads_only_what_a_scan_would_use(tmp_path):
    from images import write_good_images

    from tltoolkit.cli.augment import _preview_table

    data = tmp_path / "data"
    write_good_images(data / "a", 2)
    write_good_images(data / "b", 2, seed=1)
    Image.new("L", (9000, 8000)).save(data / "a" / "0huge.png")  # 72M pixels: quarantined, never decoded
    os.mkfifo(data / "a" / "0pipe.png")  # blocked forever before
    os.symlink("/dev/zero", data / "b" / "0zero.png")  # read without end before
    (data / "b" / "0broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    table = _preview_table(data, 3)
    assert [os.path.relpath(p, data) for p in table["path"]] == ["a/img_0_0.png", "b/img_1_0.png", "a/img_0_1.png"]
    assert list(table["decoder"]) == ["tf"] * 3 and (table["width"] > 0).all()
    assert image_dataset(table, 16, batch_size=3, with_labels=False).element_spec.shape[1:] == (16, 16, 3)
    (tmp_path / "none" / "a").mkdir(parents=True)
    os.mkfifo(tmp_path / "none" / "a" / "pipe.png")
    with pytest.raises(TltoolkitError, match="no usable images in .*`tltoolkit scan --data"):
        _preview_table(tmp_path / "none", 1)
