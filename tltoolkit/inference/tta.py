"""Test-time augmentation (`tta`):
- `none`: the image resized as in training.
- `flip`: the image and its mirror image; their probabilities are averaged.
- `ten-crop` (AlexNet's evaluation, the course's "10-crop"): the image is resized so that the model's
  input is `TEN_CROP_FRACTION` of its shorter side (e.g. 32 -> 37, 224 -> 256), then the centre and
  the four corner crops at the input size, and their mirror images: 10 views, probabilities averaged.
The views are tensor slices of the whole batch, so the model runs once on `10 x batch` images. The
rejection score is averaged over the views too. `views.py` holds these steps as Keras layers, which
`averaged_forward` and `export --tta` both use.
"""

from __future__ import annotations

from tltoolkit.errors import TltoolkitError

TTA_MODES = ("none", "flip", "ten-crop")
VIEWS = {"none": 1, "flip": 2, "ten-crop": 10}  # views per image
TEN_CROP_FRACTION = 0.875  # crop / resized shorter side, as in the AlexNet and VGG evaluations


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise TltoolkitError(f"unknown TTA mode {tta!r}; use one of {', '.join(TTA_MODES)}")
    return tta


def load_size(image_size, tta: str) -> tuple[int, int]:
    """The size images are resized to before the views are taken: larger for ten-crop."""
    if tta != "ten-crop":
        return tuple(image_size)
    return tuple(int(round(s / TEN_CROP_FRACTION)) for s in image_size)


def ten_crop(images, crop_size):
    """`[B, H, W, 3]` -> `[B, 10, h, w, 3]`: centre, top-left, top-right, bottom-left, bottom-right
    crops of size `crop_size`, then the same five mirrored left-right."""
    import tensorflow as tf

    h, w = crop_size
    height, width = images.shape[1], images.shape[2]
    offsets = [((height - h) // 2, (width - w) // 2), (0, 0), (0, width - w), (height - h, 0),
               (height - h, width - w)]
    crops = tf.stack([images[:, top:top + h, left:left + w] for top, left in offsets], axis=1)
    return tf.concat([crops, tf.reverse(crops, axis=[3])], axis=1)


def flip_views(images):
    """`[B, H, W, 3]` -> `[B, 2, H, W, 3]`: the image and its mirror image."""
    import tensorflow as tf

    return tf.stack([images, tf.reverse(images, axis=[2])], axis=1)


def tta_views(images, tta: str, image_size):
    """`[B, V, h, w, 3]` views of a batch loaded at `load_size(image_size, tta)`."""
    import tensorflow as tf

    if tta == "ten-crop":
        return ten_crop(images, image_size)
    if tta == "flip":
        return flip_views(images)
    return tf.expand_dims(images, 1)


def averaged_forward(classifier, tta: str):
    """A compiled function: a batch of images -> (probabilities, rejection scores), each averaged over
    the TTA views, with one call of the model on all `B x V` views."""
    import tensorflow as tf

    from tltoolkit.inference.views import view_layers

    views, mean = view_layers(tta, classifier.image_size)
    scored = classifier.scored  # built eagerly: rebuilding the classifier copies weights

    @tf.function(reduce_retracing=True)
    def forward(images):
        flat = views(images)
        if scored is not None:
            probabilities, scores = scored(flat, training=False)
        else:
            probabilities = classifier.model(flat, training=False)
            scores = tf.reduce_max(probabilities, axis=-1)  # the maximum softmax probability
        return mean(probabilities), mean(scores)

    return forward
