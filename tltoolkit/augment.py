"""Augmentation policies as Keras layers that run inside the model, on the accelerator, in training only.

An `augmentation(...)` block goes between the model's input and its preprocessing layer: it takes and
returns raw pixels (float, 0..255). Keras' random layers are no-ops at inference, and so are ours, so a
trained model predicts on untouched images. MixUp and CutMix mix labels as well as images, which a layer
inside the model cannot do: `mix_batches` applies them to the training dataset instead.

Keras 3 core ships flip, rotation, zoom, shear, translation, colour jitter (brightness, contrast,
saturation, hue), RandAugment, MixUp and CutMix; we use those (they superseded keras-cv's layers, which
is why keras-cv is no dependency). Written here, because neither Keras 3.15 nor keras-cv 0.9 provides
it usably: `PCAColor` (AlexNet's colour augmentation; no library has it), `RandomResizedCrop` (Keras has
none: `RandomCrop` does not resize back, `RandomZoom` samples no area and aspect; keras-cv's
`RandomCropAndResize` ignores `training`, so it would crop at inference too, and loops per image) and
`ClipToPixelRange` (a Keras bug, below).
"""

from __future__ import annotations

import keras
import numpy as np

from tltoolkit.errors import TltoolkitError

VALUE_RANGE = (0, 255)


@keras.saving.register_keras_serializable(package="tltoolkit")
class PCAColor(keras.layers.Layer):
    """AlexNet's PCA colour augmentation (Krizhevsky et al. 2012, §4.1), in training only.

    To every pixel of an image it adds `sum_i alpha_i * sqrt(lambda_i) * p_i`, where `p_i`, `lambda_i` are
    the eigenvectors and eigenvalues of the training set's 3x3 RGB covariance (`fit_pca_color`) and
    `alpha_i ~ N(0, std)` is drawn once per image. Like fb.resnet.torch and most reimplementations we
    scale by the square root of each eigenvalue (the standard deviation along that axis), so the shift is
    in pixel units: about 0.1 of the data's own colour spread. Output stays in 0..255.
    """

    def __init__(self, eigenvalues, eigenvectors, std: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.eigenvalues = [float(v) for v in np.asarray(eigenvalues).reshape(3)]
        self.eigenvectors = np.asarray(eigenvectors, dtype="float64").reshape(3, 3).tolist()
        self.std = float(std)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        images = keras.ops.cast(images, self.compute_dtype)
        if not training:
            return images
        alpha = keras.random.normal((keras.ops.shape(images)[0], 3), stddev=self.std, seed=self.seed_generator)
        weights = alpha * keras.ops.sqrt(keras.ops.convert_to_tensor(self.eigenvalues, self.compute_dtype))
        # Columns of `eigenvectors` are the principal axes: shift[b] = eigenvectors @ weights[b].
        shift = keras.ops.matmul(weights, keras.ops.transpose(
            keras.ops.convert_to_tensor(self.eigenvectors, self.compute_dtype)))
        return keras.ops.clip(images + shift[:, None, None, :], *VALUE_RANGE)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors,
                "std": self.std, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tltoolkit")
class RandomResizedCrop(keras.layers.Layer):
    """The Inception crop (Szegedy et al. 2015): per image, a random box covering `scale` of the area with
    width/height ratio in `ratio` (relative to the image's own aspect), resized back to the input size.
    Identity at inference."""

    def __init__(self, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise TltoolkitError(f"RandomResizedCrop needs 0 < scale <= 1 and 0 < ratio, got {scale}, {ratio}")
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False  # XLA has no CropAndResize kernel (as Keras' RandomZoom, RandomRotation)

    def call(self, images, training=None):
        import tensorflow as tf

        images = keras.ops.cast(images, self.compute_dtype)
        if not training:
            return images
        batch = tf.shape(images)[0]
        area = keras.random.uniform((batch,), *self.scale, seed=self.seed_generator)
        log_ratio = keras.random.uniform((batch,), *np.log(self.ratio), seed=self.seed_generator)
        ratio = tf.exp(log_ratio)
        # Box sides as fractions of the image; a side that would exceed the image is clipped to it.
        height = tf.minimum(tf.sqrt(area / ratio), 1.0)
        width = tf.minimum(tf.sqrt(area * ratio), 1.0)
        top = keras.random.uniform((batch,), seed=self.seed_generator) * (1 - height)
        left = keras.random.uniform((batch,), seed=self.seed_generator) * (1 - width)
        boxes = tf.stack([top, left, top + height, left + width], axis=1)
        size = tf.shape(images)[1:3]
        return tf.image.crop_and_resize(images, boxes, tf.range(batch), size)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": list(self.scale), "ratio": list(self.ratio), "seed": self.seed}


@keras.saving.register_keras_serializable(package="tltoolkit")
class ClipToPixelRange(keras.layers.Layer):
    """Clips to 0..255, closing every augmentation block: Keras 3.15's RandomSaturation clips the HSV
    saturation to `value_range` (255) instead of 1, so with 0..255 pixels it can return negative values."""

    def call(self, images):
        return keras.ops.clip(keras.ops.cast(images, self.compute_dtype), *VALUE_RANGE)


def fit_pca_color(images, max_batches: int | None = None) -> dict:
    """The eigen-decomposition of the RGB covariance of `images`: a `[N, H, W, 3]` array, or a
    `tf.data.Dataset` of image batches or `(images, labels)` batches (e.g. `image_dataset(...)` over the
    training split). Returns `{"eigenvalues": [3], "eigenvectors": [[3x3], columns]}`, largest first:
    JSON-friendly, for the run directory and for `PCAColor(**stats)`."""
    count, total, outer = 0, np.zeros(3), np.zeros((3, 3))
    for i, batch in enumerate(_batches(images)):
        if max_batches is not None and i >= max_batches:
            break
        pixels = np.asarray(batch, dtype="float64").reshape(-1, 3)
        count += len(pixels)
        total += pixels.sum(axis=0)
        outer += pixels.T @ pixels
    if count < 2:
        raise TltoolkitError("PCA colour statistics need images: the data given to fit_pca_color is empty")
    mean = total / count
    covariance = (outer - count * np.outer(mean, mean)) / (count - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    return {"eigenvalues": np.clip(eigenvalues[order], 0, None).tolist(),
            "eigenvectors": eigenvectors[:, order].tolist()}


def _batches(images):
    import tensorflow as tf

    if isinstance(images, tf.data.Dataset):
        for element in images:
            yield (element[0] if isinstance(element, tuple) else element).numpy()
    else:
        yield np.asarray(images)


def _named_layers(pca, seed):
    """Layer factories by name; `seed` gives each a reproducible stream."""
    layers = keras.layers

    def jitter(**factors):
        return lambda s: layers.RandomColorJitter(value_range=VALUE_RANGE, seed=s, **factors)

    def pca_color(s):
        if pca is None:
            raise TltoolkitError("the 'pca' augmentation needs colour statistics: pass "
                                 "pca=fit_pca_color(training images)")
        stats = pca.get_config() if isinstance(pca, PCAColor) else pca
        return PCAColor(stats["eigenvalues"], stats["eigenvectors"], seed=s)

    return {
        "flip": lambda s: layers.RandomFlip("horizontal", seed=s),
        "crop": lambda s: RandomResizedCrop(scale=(0.64, 1.0), ratio=(1.0, 1.0), seed=s),  # 80..100% of a side
        "resized_crop": lambda s: RandomResizedCrop(scale=(0.25, 1.0), seed=s),
        "inception_crop": lambda s: RandomResizedCrop(scale=(0.08, 1.0), seed=s),
        "brightness": jitter(brightness_factor=0.2),
        "contrast": jitter(contrast_factor=0.2),
        "saturation": jitter(saturation_factor=(0.3, 0.7)),
        "hue": jitter(hue_factor=0.05),
        "color": jitter(brightness_factor=0.15, contrast_factor=0.15, saturation_factor=(0.35, 0.65),
                        hue_factor=0.03),
        "rotate": lambda s: layers.RandomRotation(10 / 360, seed=s),  # +-10 degrees
        "shear": lambda s: layers.RandomShear(x_factor=0.1, y_factor=0.1, seed=s),
        "zoom": lambda s: layers.RandomZoom((-0.1, 0.1), seed=s),
        "translate": lambda s: layers.RandomTranslation(0.1, 0.1, seed=s),
        "randaugment": lambda s: layers.RandAugment(value_range=VALUE_RANGE, num_ops=2, factor=0.5, seed=s),
        "pca": pca_color,
    }


PRESETS = {
    "none": [],
    "light": ["flip", "crop"],
    "standard": ["flip", "resized_crop", "color", "rotate", "zoom"],
    "strong": ["flip", "inception_crop", "color", "rotate", "zoom", "randaugment", "pca"],
}
LAYER_NAMES = tuple(_named_layers(None, None))


def policy_names(policy) -> list:
    """The layer names (and Keras layers) of an augmentation policy; a one-line error for an unknown
    name, so a bad policy is refused before any work."""
    if isinstance(policy, str):
        names = PRESETS.get(policy)
        if names is None:
            names = [n.strip() for n in policy.split(",") if n.strip()]
    else:
        names = list(policy)
    unknown = [n for n in names if isinstance(n, str) and n not in LAYER_NAMES]
    if unknown:
        raise TltoolkitError(f"unknown augmentation {', '.join(map(repr, unknown))}; use a preset "
                             f"({', '.join(PRESETS)}) or layers from: {', '.join(LAYER_NAMES)}")
    return names


def augmentation(policy="standard", image_size=None, pca=None, seed: int | None = None):
    """A `keras.Sequential` named "augmentation": random, training-only layers on raw 0..255 pixels.

    `policy`: a preset name (`none`, `light`, `standard`, `strong`), layer names joined by commas
    (`"flip,crop,pca"`, see `LAYER_NAMES`), or a list mixing names and Keras layers. `pca`: the
    `fit_pca_color` statistics (or a `PCAColor`), needed by `pca` and `strong`. `image_size` (int or
    (height, width)) fixes the input shape; without it the block accepts any size.
    """
    names = policy_names(policy)
    factories = _named_layers(pca, seed)
    layers = [factories[n](None if seed is None else seed + i) if isinstance(n, str) else n
              for i, n in enumerate(names)]
    layers = [*layers, ClipToPixelRange(name="clip_to_pixel_range")] if layers else [
        keras.layers.Identity(name="no_augmentation")]
    height, width = (None, None) if image_size is None else (
        (image_size, image_size) if np.isscalar(image_size) else image_size)
    return keras.Sequential([keras.Input((height, width, 3)), *layers], name="augmentation")


def mix_batches(dataset, method: str = "mixup", alpha: float = 0.2, num_classes: int | None = None,
                seed: int | None = None):
    """A training dataset whose batches are mixed with MixUp (Zhang et al. 2018) or CutMix (Yun et al.
    2019): `(images, labels)` in, `(float images, soft one-hot labels)` out. Integer label ids need
    `num_classes`. `alpha` is MixUp's Beta parameter or CutMix's factor. Use with a categorical loss."""
    import tensorflow as tf

    layers = {"mixup": lambda: keras.layers.MixUp(alpha=alpha, seed=seed),
              "cutmix": lambda: keras.layers.CutMix(factor=alpha, seed=seed)}
    if method not in layers:
        raise TltoolkitError(f"unknown batch mixing {method!r}; use mixup or cutmix")
    layer = layers[method]()
    label_spec = dataset.element_spec[1]
    one_hot = label_spec.shape.rank == 1
    if one_hot and not num_classes:
        raise TltoolkitError("mix_batches got integer label ids: pass num_classes so they become one-hot")

    def mix(images, labels):
        if one_hot:
            labels = tf.one_hot(labels, num_classes)
        mixed = layer({"images": tf.cast(images, tf.float32), "labels": tf.cast(labels, tf.float32)})
        return mixed["images"], mixed["labels"]

    return dataset.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
