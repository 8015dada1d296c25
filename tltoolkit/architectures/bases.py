"""Any base as an `ArchSpec`: a registry id, `keras:NAME` (any keras.applications model) or the path of
a saved `.keras` model.

    spec = resolve_base("keras:EfficientNetB0", image_size=224)
    base = build_base(spec, weights="imagenet", image_size=(224, 224))   # no classifier

A registry id keeps its registered spec. For the others, what a registered spec writes down is derived
from the built model (`derived=True`): the stages from its graph (`stages.graph_stages`: `stage1`..
`stageN`, one per drop in spatial resolution), the base output (and `penultimate`) is the model's last
layer (keras.applications' no-top feature map, or whatever the saved model returns), the parameter
and MAC counts are counted. The preprocessing of `keras:NAME` is found by running the application
module's own `preprocess_input` on a probe array and matching the result to our modes; a saved model
does not record it, so the caller states it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from pathlib import Path

import keras
import numpy as np

from tltoolkit.architectures.api import KERAS_PREFIX, build, load_model
from tltoolkit.architectures.registry import ArchitectureError, ArchSpec, Reference, get_spec
from tltoolkit.preprocessing_modes import PREPROCESSING_MODES
from tltoolkit.errors import one_line

SAVED_SUFFIX = ".keras"
SAVED_FAMILY = "saved model"
KERAS_FAMILY = "keras.applications"


def resolve_base(base: str, image_size=None, preprocessing: str | None = None, weights=None) -> ArchSpec:
    """The spec of `base`. `image_size` (int or (height, width)): the size a derived spec's stages are
    derived at (default: the model's own default size). `preprocessing`: a mode overriding the spec's;
    required for a saved model. Otherwise a registry spec takes the mode its `weights` were trained with
    (`imagenet:TAG`, a PyTorch checkpoint file: see weights.preprocessing_mode)."""
    if preprocessing is not None and preprocessing not in PREPROCESSING_MODES:
        raise ArchitectureError(f"unknown preprocessing {preprocessing!r}; use one of {', '.join(PREPROCESSING_MODES)}")
    size = None if image_size is None else _pair(image_size)
    if base.startswith(KERAS_PREFIX):
        spec = _keras_application_spec(base, size)
    elif base.endswith(SAVED_SUFFIX):
        spec = _saved_model_spec(base, size, preprocessing)
    else:
        spec = get_spec(base)
        if preprocessing is None and weights is not None:
            from tltoolkit.architectures.weights import preprocessing_mode

            preprocessing = preprocessing_mode(spec, weights)
    return spec if preprocessing in (None, spec.preprocessing) else dataclasses.replace(spec, preprocessing=preprocessing)


def build_base(spec: ArchSpec, weights, image_size) -> keras.Model:
    """The base without a classifier at `image_size` (height, width), with `weights`: None (random
    init), `imagenet` (for a saved model: the weights it was saved with) or a weights file."""
    from tltoolkit.architectures.weights import WeightsError, is_published

    shape = (*_pair(image_size), spec.channels)
    if weights is None or is_published(weights):
        return _build_base(spec, weights, shape)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass 'imagenet', none or an existing file")
    try:
        return _build_base(spec, str(path), shape)
    except Exception as error:
        raise WeightsError(f"{path.name} does not fit {spec.id}: {one_line(error)}") from None


def _build_base(spec: ArchSpec, weights, shape):
    from tltoolkit.architectures.weights import is_published

    if spec.family != SAVED_FAMILY:
        return build(spec.id, weights=weights, include_top=False, input_shape=shape)
    saved = load_model(spec.id)
    model = _at_shape(saved, shape)
    if weights is not None:
        model.set_weights(saved.get_weights())  # None: the clone keeps its fresh initialisation
    if weights is not None and not is_published(weights):
        model.load_weights(weights)  # e.g. the fine-tuned base of an earlier run
    return model


def cache_name(spec: ArchSpec) -> str:
    """What names the architecture in feature-cache keys (and their folder names): the id, or for a saved
    model the hash of its file (the architecture is whatever the file holds)."""
    if spec.family == SAVED_FAMILY:
        from tltoolkit.architectures.weights import file_digest

        return f"saved-{file_digest(Path(spec.id), 'sha256')[:16]}"
    return spec.id.replace(":", "-")


def _pair(size) -> tuple[int, int]:
    values = tuple(int(v) for v in (size if isinstance(size, (list, tuple)) else (size, size)))
    if len(values) != 2:
        raise ArchitectureError(f"an image size is one number or [height, width], got {size}")
    return values


def _keras_application_spec(base: str, size) -> ArchSpec:
    if size is None:  # the default input size of the application's classifier
        size = tuple(build(base, include_top=True).input.shape[1:3])
    model = _built(base, lambda: build(base, include_top=False, input_shape=(*size, 3)))
    name = base[len(KERAS_PREFIX):]
    return _derived_spec(base, KERAS_FAMILY, model, size, keras_preprocessing(name), keras_application=name)


def _saved_model_spec(path: str, size, preprocessing) -> ArchSpec:
    if not Path(path).is_file():
        raise ArchitectureError(f"saved model {path} does not exist; pass an existing .keras file or an architecture id")
    if preprocessing is None:
        raise ArchitectureError(f"{path}: a saved model does not say how its input pixels are scaled; pass "
                                f"--preprocessing MODE (config key preprocessing): {', '.join(PREPROCESSING_MODES)}")
    model = load_model(path)
    shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or len(shape) != 3 or shape[2] not in (1, 3):
        raise ArchitectureError(f"{path} takes {[tuple(t.shape) for t in model.inputs]}; a base takes one image "
                                f"input (height, width, 1 or 3 channels)")
    fixed = None if None in shape[:2] else shape[:2]
    if fixed and size and tuple(size) != fixed:
        raise ArchitectureError(f"{path} takes {fixed[0]}x{fixed[1]} images, not {size[0]}x{size[1]}; drop "
                                f"--image-size or pass {fixed[0]}")
    size = size or fixed or (224, 224)
    model = _built(path, lambda: _at_shape(model, (*size, shape[2])))
    return _derived_spec(path, SAVED_FAMILY, model, size, preprocessing)


def _at_shape(model, shape):
    """`model` as is when it takes `shape`; otherwise a fresh-weights clone of it on that input shape
    (a saved base with flexible height and width)."""
    import keras

    if tuple(model.inputs[0].shape[1:]) == tuple(shape):
        return keras.models.clone_model(model)
    return keras.models.clone_model(model, input_tensors=keras.Input(shape))


def _built(base: str, make):
    """`make()`, with a model's refusal of the input (e.g. too small) as a one-line error."""
    try:
        return make()
    except ValueError as error:
        raise ArchitectureError(f"{base}: {one_line(error, 300)}") from None


def _derived_spec(base: str, family: str, model, size, preprocessing: str, **extra) -> ArchSpec:
    from tltoolkit.architectures.profile import count_macs
    from tltoolkit.architectures.stages import graph_stages, trainable_count

    stages = graph_stages(model)
    if not stages:
        raise ArchitectureError(f"{base} has no layer with trainable weights: nothing to fine-tune or cut")
    last = model.layers[-1].name
    params = model.count_params()
    return ArchSpec(id=base, family=family, builder=functools.partial(build, base), stages=stages,
                    base_output=last, penultimate=last, default_size=size[0], min_size=1,
                    preprocessing=preprocessing, params=params, trainable_params=trainable_count(model),
                    macs=count_macs(model) / 1e9,
                    reference_params=Reference(params, "total", "counted on the built model"),
                    channels=int(model.inputs[0].shape[-1]), derived=True, **extra)


PROBE = np.array([[[[0.0, 64.0, 255.0], [12.0, 128.0, 200.0]]]], dtype="float32")  # 1x1x2x3 RGB pixels


@functools.lru_cache(maxsize=None)
def keras_preprocessing(name: str) -> str:
    """The registry mode equal to what the keras.applications module of `name` does in its
    `preprocess_input` (caffe, tf, torch, or none for models that normalise inside, e.g. EfficientNet,
    ConvNeXt), found by running both on the same probe pixels."""
    import keras

    from tltoolkit.architectures.preprocessing import preprocessing_layer

    module = importlib.import_module(getattr(keras.applications, name).__module__)
    expected = np.asarray(module.preprocess_input(PROBE.copy()), dtype="float32")
    for mode in PREPROCESSING_MODES:
        if np.allclose(np.asarray(preprocessing_layer(mode)(PROBE)), expected, atol=1e-4):
            return mode
    raise ArchitectureError(f"keras:{name}'s preprocess_input matches none of the modes "
                            f"{', '.join(PREPROCESSING_MODES)}; pass --preprocessing MODE")
