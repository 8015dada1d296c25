"""Grad-CAM (Selvaraju et al. 2017): where in the image a classifier found the evidence for a class.

The map is ReLU(sum_k a_k A_k) over the feature maps A_k of a spatial layer, each weighted by the mean
gradient a_k of the class' logit with respect to it; normalised to [0, 1] per image.

    maps = grad_cam(model, images)                                    # the last spatial layer, the predicted class
    maps = grad_cam(model, images, stage_layer(model, spec.stages, "conv3"))   # a stage the user names
    save_overlay(images[0], maps[0], "explain/0001.png")
    explain_files(classifier, table, "explain/", stage="conv3")      # `predict --explain`: a PNG per image file

The model is split at the layer into front (input -> feature map) and back (feature map -> logits),
through any nesting (finetune saves pixels -> preprocessing -> [base -> head], the base nested twice
deep). The layer must be a cut: a stage boundary, or any layer whose output alone feeds the rest.
"""

from __future__ import annotations

import numpy as np

from tltoolkit._keras_internals import history
from tltoolkit.errors import TltoolkitError

OVERLAY_ALPHA = 0.45  # the heat map's share of the blended pixel
COLORMAP = "jet"


def _nested(model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def _holder(model, name: str):
    """The model (`model` or one nested in it) that has a layer called `name`, or None."""
    if any(layer.name == name for layer in model.layers):
        return model
    return next((h for h in map(lambda m: _holder(m, name), _nested(model)) if h is not None), None)


def _spatial_layers(model, seen_kernel: list) -> list[str]:
    """Names of the layers with [B, H, W, C] outputs after the first layer with a kernel (convolution),
    in order, through nested models."""
    import keras

    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += _spatial_layers(layer, seen_kernel)
            continue
        seen_kernel[0] = seen_kernel[0] or hasattr(layer, "kernel")
        shape = getattr(layer.output, "shape", ()) if not isinstance(layer, keras.layers.InputLayer) else ()
        if seen_kernel[0] and len(shape) == 4:
            names.append(layer.name)
    return names


def last_spatial_layer(model) -> str:
    names = _spatial_layers(model, [False])
    if not names:
        raise TltoolkitError(f"{model.name} has no spatial feature map (no convolutional layer with a "
                             f"[batch, height, width, channels] output): Grad-CAM needs a convolutional stage")
    return names[-1]


def stage_layer(model, stages, stage: str, base_output: str | None = None) -> str:
    """The last layer of `stage` (its output is the stage's feature map): the layer before the next
    stage's first layer, or `base_output` (else the base's last layer) for the last stage. `stages`:
    (name, first layer) pairs, as an ArchSpec (registered or `keras:NAME`'s derived one) has them."""
    names = [name for name, _ in stages]
    if stage not in names:
        raise TltoolkitError(f"unknown stage {stage!r}; explain one of {', '.join(names)}")
    i = names.index(stage)
    holder = _holder(model, stages[i][1])
    if holder is None:
        raise TltoolkitError(f"{model.name} has no layer {stages[i][1]!r} (the start of stage {stage!r}): "
                             f"the stages are not those of this model's base")
    if i + 1 < len(stages):
        layers = [layer.name for layer in holder.layers]
        return layers[layers.index(stages[i + 1][1]) - 1]
    return base_output or holder.layers[-1].name


def _node_of(model, layer):
    for nodes in model._nodes_by_depth.values():  # Keras keeps no public edge list
        for node in nodes:
            if node.operation is layer:
                return node
    raise TltoolkitError(f"{layer.name} is not called in {model.name}")


def _model(inputs, outputs, what: str):
    import keras

    try:
        return keras.Model(inputs, outputs)
    except ValueError:
        raise TltoolkitError(f"cannot explain at {what}: later layers also read tensors from before it (a layer "
                             f"inside a block); name a stage boundary instead") from None


def _tail(tensor, output, what: str):
    """The model computing `output` from `tensor`; the identity when they are the same tensor (Keras
    refuses a model without an operation)."""
    import keras

    if history(tensor)[:2] == history(output)[:2]:
        tensor = keras.Input(tuple(tensor.shape[1:]))
        return _model(tensor, keras.layers.Identity()(tensor), what)
    return _model(tensor, output, what)


def split_at(model, name: str):
    """(front, back): `model`'s input -> the output of layer `name`, and that output -> `model`'s output."""
    import keras

    if any(layer.name == name for layer in model.layers):
        tensor = model.get_layer(name).output
        return _model(model.inputs[0], tensor, name), _tail(tensor, model.outputs[0], name)
    for inner in _nested(model):
        if _holder(inner, name) is not None:
            front, back = split_at(inner, name)
            node = _node_of(model, inner)
            rest = _tail(node.output_tensors[0], model.outputs[0], name)
            features = keras.Input(tuple(front.outputs[0].shape[1:]))
            return (_model(model.inputs[0], front(node.input_tensors[0]), name),
                    _model(features, rest(back(features)), name))
    raise TltoolkitError(f"{model.name} has no layer {name!r}; explain at a stage or a layer of the model")


def grad_cam(model, images, layer: str | None = None, class_ids=None) -> np.ndarray:
    """[B, h, w] maps in [0, 1] at `layer` (default: the last spatial layer) for `class_ids` (default:
    each image's predicted class). `model`: a softmax classifier (its logits are explained) on `images`
    as it takes them (finetune's models: uint8 pixels)."""
    import tensorflow as tf

    from tltoolkit.calibration import logits_model

    layer = layer or last_spatial_layer(model)
    front, back = split_at(logits_model(model), layer)
    if len(front.outputs[0].shape) != 4:
        raise TltoolkitError(f"layer {layer!r} of {model.name} outputs {tuple(front.outputs[0].shape)}, not a "
                             f"spatial feature map; explain at a convolutional stage")
    features = tf.convert_to_tensor(front(tf.convert_to_tensor(images), training=False))
    with tf.GradientTape() as tape:
        tape.watch(features)
        logits = back(features, training=False)
        ids = tf.argmax(logits, axis=-1) if class_ids is None else tf.constant(np.asarray(class_ids), tf.int64)
        chosen = tf.gather(logits, ids, axis=1, batch_dims=1)
    weights = tf.reduce_mean(tape.gradient(chosen, features), axis=(1, 2))  # [B, C]
    maps = tf.nn.relu(tf.einsum("bhwc,bc->bhw", features, weights)).numpy().astype("float64")
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """`image` (uint8 [H, W, 3]) blended with `heat` ([h, w] in [0, 1], resized bilinearly to H x W) in
    the `COLORMAP` colours."""
    import matplotlib
    from PIL import Image

    image = np.asarray(image)
    height, width = image.shape[:2]
    resized = Image.fromarray((np.clip(heat, 0, 1) * 255).astype("uint8")).resize((width, height), Image.BILINEAR)
    colours = matplotlib.colormaps[COLORMAP](np.asarray(resized) / 255.0)[..., :3] * 255
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image.reshape(height, width, 1), 3, axis=2)
    return np.round((1 - alpha) * rgb + alpha * colours).astype("uint8")


def save_overlay(image: np.ndarray, heat: np.ndarray, path) -> None:
    """Writes `overlay(image, heat)` as a PNG, atomically."""
    from PIL import Image

    from tltoolkit.data.files import atomic_path

    with atomic_path(path, suffix=".png") as temporary:
        Image.fromarray(overlay(image, heat)).save(temporary, format="PNG")


def explain_to(folder, model, images: np.ndarray, names, layer: str | None = None, class_ids=None,
               batch_size: int = 32) -> list:
    """Grad-CAM overlays of `images` (as the model takes them, uint8) written to `folder`/NAME.png, one
    per entry of `names`, in batches; returns the paths. The layer is checked before anything is written."""
    from pathlib import Path

    layer = layer or last_spatial_layer(model)
    paths = [Path(folder) / f"{name}.png" for name in names]
    if len(paths) != len(images):
        raise TltoolkitError(f"{len(images)} images but {len(paths)} names to write their explanations to")
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)
        ids = None if class_ids is None else np.asarray(class_ids)[batch]
        for image, heat, path in zip(images[batch], grad_cam(model, images[batch], layer, ids), paths[batch]):
            save_overlay(image, heat, path)
    return paths


def explained_layer(classifier, stage: str | None = None) -> str:
    """The layer a classifier is explained at: the last spatial layer, or `stage`: a stage of the run's
    base (`tltoolkit layers BASE` lists them), else a layer name. One-line errors for a model without a
    spatial layer or a name it lacks."""
    from tltoolkit.architectures.bases import resolve_base

    model = classifier.model
    if stage is None:
        return last_spatial_layer(model)
    spec = None
    if classifier.base:
        try:
            spec = resolve_base(classifier.base, classifier.image_size)
        except TltoolkitError:  # a base this installation does not know: the name can still be a layer's
            spec = None
    if spec is not None and stage in spec.stage_names:
        return stage_layer(model, spec.stages, stage, spec.base_output)
    if _holder(model, stage) is None:
        named = f"; its stages: {', '.join(spec.stage_names)}" if spec is not None else ""
        raise TltoolkitError(f"{classifier.name} has no stage or layer {stage!r}{named}")
    return stage


def model_images(classifier, table, batch_size: int = 32):
    """Batches of the images of `table` as the classifier takes them: uint8 at its input size, resized
    by its policy (as `predict` without TTA)."""
    from tltoolkit.pipeline import image_dataset

    for batch in image_dataset(table, classifier.image_size, batch_size=batch_size, resize=classifier.resize,
                               deterministic=True, with_labels=False):
        yield np.asarray(batch).astype("uint8")


def explain_files(classifier, table, folder, stage: str | None = None, batch_size: int = 32) -> list:
    """Grad-CAM overlays of the images of `table` (a `path` column; `predict`'s image table) for their
    predicted classes, written as `folder`/NNNN_NAME.png (NNNN: the row's index, from 1) in table order;
    returns the paths. The layer is checked before any image is read."""
    from pathlib import Path

    layer = explained_layer(classifier, stage)
    names = [f"{i + 1:04d}_{Path(path).stem}" for i, path in zip(table.index, table["path"])]
    paths = []
    for batch in model_images(classifier, table, batch_size):
        paths += explain_to(folder, classifier.model, batch, names[len(paths):len(paths) + len(batch)], layer,
                            batch_size=batch_size)
    return paths


def overlays(classifier, rows, layer: str, batch_size: int = 32) -> list[np.ndarray]:
    """Grad-CAM overlays of the images of `rows` (path, decoder, predicted_id: an evaluation's
    predictions) for their predicted classes, as the model sees them (at its input size)."""
    images = np.concatenate(list(model_images(classifier, rows, batch_size)))
    ids = rows["predicted_id"].to_numpy()
    return [overlay(image, heat) for start in range(0, len(images), batch_size)
            for image, heat in zip(images[start:start + batch_size],
                                   grad_cam(classifier.model, images[start:start + batch_size], layer,
                                            ids[start:start + batch_size]))]
