"""`build()`: an architecture id (or a keras.applications name) to a plain Functional keras.Model."""

from __future__ import annotations

import collections
import contextlib
import os
import re

import keras

from tltoolkit._keras_internals import swap_name_counters
from tltoolkit.architectures.registry import ArchitectureError, close_matches, get_spec

KERAS_PREFIX = "keras:"


def build(arch: str, weights=None, include_top: bool = True, num_classes: int | None = None,
          input_shape=None, pooling=None, **options) -> keras.Model:
    """Builds `arch` with the Functional API.

    Args:
      arch: a registry id (`tltoolkit.list_architectures()`), `keras:NAME` for any
        keras.applications model (e.g. `keras:EfficientNetB0`), or the path of a saved `.keras`
        model, returned as saved (its freeze points are its layer names).
      weights: None (random init), "imagenet" (the architecture's default published weights:
        keras.applications' file, or a torchvision/timm checkpoint converted once and cached; see
        `tltoolkit models`), "imagenet:TAG" (another published tag, e.g. "imagenet:a1_in1k"), or the
        path of a weights file (`.h5` legacy, `.weights.h5`, `.keras`, or a timm `.safetensors` /
        torchvision `.pth`, detected by content and converted on the fly, pickle-free).
      include_top: keep the classifier; with `num_classes` other than the weights' own, the base is
        loaded and the new classifier is freshly initialised.
      num_classes: classifier size; defaults to the architecture's reference (1000 for ImageNet).
      input_shape: (height, width, channels); defaults to the architecture's default size.
      pooling: without the top, None (the feature map), "avg" or "max".
      **options: architecture options (`tltoolkit models` lists them), e.g. `batch_norm=True`.
    """
    if arch.startswith(KERAS_PREFIX):
        return _build_keras_application(arch[len(KERAS_PREFIX):], weights, include_top, num_classes,
                                        input_shape, pooling, options)
    if arch.endswith(".keras"):
        return _load_saved_model(arch, weights, include_top, num_classes, input_shape, pooling, options)
    spec = get_spec(arch)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ArchitectureError(f"{arch}: unknown option(s) {', '.join(unknown)}; options: {allowed}")
    model = spec.builder(
        spec,
        include_top=include_top,
        num_classes=spec.num_classes if num_classes is None else num_classes,
        input_shape=input_shape,
        pooling=pooling,
        **options,
    )
    if weights is not None:
        from tltoolkit.architectures.weights import load_weights

        load_weights(model, spec, weights)
    return model


def _build_keras_application(name, weights, include_top, num_classes, input_shape, pooling, options):
    import keras.applications as apps

    public = [n for n in dir(apps) if n[:1].isupper()]
    if name not in public:
        raise ArchitectureError(f"unknown keras.applications model {name!r}; {close_matches(name, public)}")
    kwargs = dict(include_top=include_top, weights=weights, input_shape=input_shape, pooling=pooling, **options)
    if num_classes is not None:
        kwargs["classes"] = num_classes
    if weights == "imagenet":  # get_file falls back to /tmp/.keras when the folder is missing
        from tltoolkit.architectures.weights import keras_cache_dir

        keras_cache_dir().mkdir(parents=True, exist_ok=True)
    with _fresh_layer_names():
        try:
            return getattr(apps, name)(**kwargs)
        except Exception as error:  # get_file raises bare Exceptions for network failures
            url = re.search(r"URL fetch failure on (\S+):", str(error))
            if url is None:
                raise
            from tltoolkit.architectures.weights import WeightsError, keras_cache_dir

            fname = url.group(1).rsplit("/", 1)[-1]
            raise WeightsError(f"could not download {fname} for keras:{name}; download {url.group(1)} and put it "
                               f"in {keras_cache_dir()}/ (or pass the file's path as the weights)") from None


@contextlib.contextmanager
def _fresh_layer_names():
    """Auto-generated layer names (`conv2d_8`, `add_3`) as in a fresh session, whatever was built before:
    a keras.applications model then has the same layer names in every build, so a layer named on the
    command line, a stage's layers and a cache key's cut layer mean the same layer each time."""
    fresh = collections.defaultdict(int)
    counters = swap_name_counters(fresh)
    try:
        yield
    finally:
        # Names made later continue after both counts: they never repeat one of the model's.
        for prefix, count in fresh.items():
            counters[prefix] = max(counters[prefix], count)
        swap_name_counters(counters)


def load_model(path, compile: bool = False) -> keras.Model:
    """`keras.models.load_model(path)` in safe mode, with tltoolkit's custom layers registered first.

    Our few custom layers register with Keras when their modules are imported: the architectures'
    (StochasticDepth, LRN, option-A shortcuts, ...) with this package, the others (PCA colour, the
    temperature and score layers, TTA views) here, since a fresh process that only loads a model has not
    imported them yet. A file that is not a loadable model (truncated, foreign, refused by safe mode)
    raises a one-line `ArchitectureError`, made from Keras's exception.
    """
    import zipfile

    import tltoolkit.augment  # noqa: F401
    import tltoolkit.inference.views  # noqa: F401  (an export's TTA layers)
    import tltoolkit.rejection  # noqa: F401  (and tltoolkit.calibration: the temperature and score layers)

    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a broken, foreign or unsafe file
        from tltoolkit.errors import one_line

        if str(path).endswith(".keras") and os.path.isfile(path) and not zipfile.is_zipfile(path):
            reason = "not a complete .keras archive (truncated, or another kind of file)"
        else:
            reason = one_line(error)
        raise ArchitectureError(f"cannot load {path}: {reason}; re-create it (finetune, export) or pass "
                                f"another model") from error


def _load_saved_model(path, weights, include_top, num_classes, input_shape, pooling, options):
    from pathlib import Path

    if not Path(path).is_file():
        raise ArchitectureError(f"saved model {path} does not exist; pass an existing .keras file or an architecture id")
    changed = [name for name, value, default in (
        ("weights", weights, None), ("include_top", include_top, True), ("num_classes", num_classes, None),
        ("input_shape", input_shape, None), ("pooling", pooling, None)) if value != default] + list(options)
    if changed:
        raise ArchitectureError(f"a saved model is used as saved; drop {', '.join(changed)} (heads are added by finetune)")
    return load_model(path)
