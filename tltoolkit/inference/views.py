"""The test-time augmentation views as Keras layers (registered: a `.keras` export holding them loads
in safe mode), so that `predict`/`evaluate` and an exported model average the same views
(`tta.tta_views`) the same way:

    flat = TTAViews("ten-crop", (32, 32))(images)     # [B, 37, 37, 3] -> [B * 10, 32, 32, 3]
    probabilities = ViewMean(10)(model(flat))         # [B * 10, C] -> [B, C]
"""

from __future__ import annotations

import keras

from tltoolkit.inference.tta import VIEWS, check_tta, tta_views


@keras.saving.register_keras_serializable(package="tltoolkit")
class TTAViews(keras.layers.Layer):
    """[B, H, W, 3] loaded at `tta.load_size(image_size, tta)` -> [B x V, h, w, 3]: each image's V views in a row."""

    def __init__(self, tta: str, image_size, **kwargs):
        super().__init__(**kwargs)
        self.tta, self.image_size = check_tta(tta), tuple(int(s) for s in image_size)

    def call(self, images):
        views = tta_views(images, self.tta, self.image_size)
        return keras.ops.reshape(views, (-1, *views.shape[2:]))

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (None, *self.image_size, channels) if self.tta == "ten-crop" else (None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "tta": self.tta, "image_size": list(self.image_size)}


@keras.saving.register_keras_serializable(package="tltoolkit")
class ViewMean(keras.layers.Layer):
    """[B x V, ...] per view -> [B, ...], the mean over each image's `views` views, in float32."""

    def __init__(self, views: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.views = int(views)

    def call(self, per_view):
        per_view = keras.ops.cast(per_view, "float32")
        return keras.ops.mean(keras.ops.reshape(per_view, (-1, self.views, *per_view.shape[1:])), axis=1)

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "views": self.views}


def view_layers(tta: str, image_size) -> tuple[TTAViews, ViewMean]:
    return TTAViews(tta, image_size, name="tta_views"), ViewMean(VIEWS[check_tta(tta)], name="tta_mean")
