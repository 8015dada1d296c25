"""Loading weights into our builders: the official keras.applications files, or a local file.

Every path ends in the same place: a weights file is matched to the whole model (a file for the
same head) or to its base (a no-top file, or any file when the model has a new head), then loaded
topologically, as keras.applications loads its own files, or, for a PyTorch checkpoint (a timm
safetensors file or a torchvision `.pth`, recognised by content), converted by the spec's
`torch_layouts` (checkpoints.py). A failed load restores the weights the model had before, so a
model is never left half-loaded.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import h5py
import keras

from tltoolkit.architectures import checkpoints
from tltoolkit.architectures.checkpoints import WeightsError
from tltoolkit.architectures.registry import ArchSpec, WeightsFile

IMAGENET = "imagenet"


def keras_cache_dir() -> Path:
    """Where `keras.utils.get_file` keeps downloaded weights (`$KERAS_HOME/models`, default ~/.keras)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_algorithm(file_hash: str) -> str:
    return "md5" if len(file_hash) == 32 else "sha256"


def base_model(model: keras.Model, spec: ArchSpec) -> keras.Model:
    """The model up to the base's last layer, sharing its layers (and so its weights)."""
    output = model.get_layer(spec.base_output).output
    if output is model.outputs[0]:
        return model
    return keras.Model(model.inputs, output, name=f"{model.name}_base")


def has_reference_top(model: keras.Model, spec: ArchSpec, num_classes: int) -> bool:
    """Whether `model` is the architecture's full classifier that published top files fit."""
    try:
        predictions = model.get_layer("predictions")
    except ValueError:
        return False
    return (predictions.output.shape[-1] == num_classes
            and tuple(model.input.shape[1:]) == spec.default_input_shape)


def fetch(spec: ArchSpec, tag: str, with_top: bool) -> Path:
    """The published file for `spec` and `tag`: from the Keras cache, or downloaded and checked."""
    if tag not in spec.weights:
        available = [s.id for s in _specs_with_weights(tag)]
        raise WeightsError(
            f"{spec.id} has no published {tag!r} weights; architectures with them: {', '.join(available)} "
            f"(or pass a weights file path)"
        )
    entry: WeightsFile = spec.weights[tag]
    url, file_hash = (entry.url, entry.file_hash) if with_top else (entry.notop_url, entry.notop_hash)
    folder = keras_cache_dir()
    fname = url.rsplit("/", 1)[-1]
    target = folder / fname
    algorithm = _hash_algorithm(file_hash)
    if target.exists():
        # Checked here rather than by get_file: on a mismatch it re-downloads and, offline,
        # deletes the user's file when the download fails.
        if file_digest(target, algorithm) != file_hash:
            raise WeightsError(
                f"{target} does not match the published {algorithm} hash of {fname} ({file_hash}): "
                f"it is damaged or another file; replace it with the file from {url}"
            )
        return target
    # get_file falls back to /tmp/.keras when the folder is missing; create it so the file lands
    # where the error messages say.
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = keras.utils.get_file(fname, origin=url, file_hash=file_hash, cache_subdir="models",
                                    cache_dir=str(folder.parent))
    except Exception as error:  # get_file raises bare Exceptions for network failures
        # A download that failed its hash check stays behind in get_file; it was not there before.
        target.unlink(missing_ok=True)
        raise WeightsError(
            f"could not download {fname} ({_one_line(error)}); download {url} and put it in {folder}/ "
            f"(or pass the file's path as the weights)"
        ) from error
    return Path(path)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]


def _all_specs():
    from tltoolkit.architectures.registry import all_specs

    return all_specs()


def _specs_with_weights(tag: str):
    return [s for s in _all_specs() if tag in s.weights]


def load_weights(model: keras.Model, spec: ArchSpec, weights) -> Path:
    """Loads `weights` ("imagenet" or a file path) into `model`, built from `spec`; returns the file.

    The whole model is loaded when the file was written for the same head; otherwise only the base
    is, and the new classifier keeps its fresh initialisation.
    """
    if weights == IMAGENET:
        entry = spec.weights.get(IMAGENET)
        with_top = entry is not None and has_reference_top(model, spec, entry.num_classes)
        path = fetch(spec, IMAGENET, with_top)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist; pass 'imagenet', none or an existing file")
    before = model.get_weights()
    try:
        _load_file(model, spec, path, before)
    except WeightsError:
        model.set_weights(before)
        raise
    except Exception as error:
        model.set_weights(before)
        raise WeightsError(f"{path.name} does not fit {spec.id}: {_one_line(error)}") from error
    return path


def _load_file(model: keras.Model, spec: ArchSpec, path: Path, before: list) -> None:
    name = path.name
    if checkpoints.is_checkpoint(path):
        load_checkpoint(model, spec, checkpoints.read_state_dict(path), path.name)
    elif name.endswith(".keras"):
        _copy_by_name(keras.models.load_model(path, compile=False), model, spec, path)
    elif name.endswith(".weights.h5"):
        if not _loads_completely(model, path):  # written for another head: the base alone, from a clean slate
            model.set_weights(before)
            base_model(model, spec).load_weights(path)
    elif name.endswith((".h5", ".hdf5")):
        _load_legacy_h5(model, spec, path)
    else:
        raise WeightsError(f"{name}: unknown weights format; use a .h5, .weights.h5 or .keras file, "
                           f"a timm .safetensors or a torchvision .pth")


def load_checkpoint(model: keras.Model, spec: ArchSpec, state: dict, name: str) -> None:
    """Converts a PyTorch state dict into `model`: the whole model when the checkpoint's head fits,
    else the base alone (the checkpoint's classifier skipped); all or nothing."""
    if not spec.torch_layouts:
        with_layouts = [s.id for s in _all_specs() if s.torch_layouts]
        raise WeightsError(f"{name} is a PyTorch checkpoint, and {spec.id} has no converter for one; "
                           f"architectures with one: {', '.join(with_layouts)}")
    layout = max(spec.torch_layouts, key=lambda t: sum(k in state for keys in t.layers(model).values() for k in keys))
    try:
        values = checkpoints.convert_state(model, state, layout.layers(model))
        target = model
    except WeightsError:
        body = {k: v for k, v in state.items() if not k.startswith(layout.head)}
        if len(body) == len(state):  # no classifier to skip: the mismatch is in the base
            raise
        target = base_model(model, spec)
        try:
            values = checkpoints.convert_state(target, body, layout.layers(target))
        except WeightsError as error:
            raise WeightsError(f"{name} does not fit {spec.id} ({layout.name} names): {error}") from None
    checkpoints.assign(target, values)


def _loads_completely(model: keras.Model, path: Path) -> bool:
    """Loads a `.weights.h5` file into the whole model; False when it does not fit every layer.

    Keras raises for mismatched shapes but only warns ("Skipping ... retain their freshly-initialized
    weights") for layers the file lacks, e.g. a base-only file in a model with a head."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception:
            return False
    skipped = [w for w in caught if "freshly-initialized" in str(w.message)]
    for w in caught:
        if w not in skipped:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return not skipped


def _weighted_layer_count(model: keras.Model) -> int:
    return sum(1 for layer in model.layers if layer.weights)


def _load_legacy_h5(model: keras.Model, spec: ArchSpec, path: Path) -> None:
    """keras.applications' format: layer i of the file goes to weighted layer i of the model."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("layer_names", [])]
        in_file = sum(1 for n in names if len(group[n].attrs.get("weight_names", [])) > 0)
    base = base_model(model, spec)
    if in_file == _weighted_layer_count(model):
        model.load_weights(path)
    elif in_file == _weighted_layer_count(base):
        base.load_weights(path)
    else:
        raise WeightsError(
            f"{path.name} holds {in_file} weighted layers but {spec.id} has {_weighted_layer_count(model)} "
            f"(this model) or {_weighted_layer_count(base)} (its base): it was written for another architecture"
        )


def _copy_by_name(source: keras.Model, model: keras.Model, spec: ArchSpec, path: Path) -> None:
    """A saved `.keras` model lends every layer of the base it has under the same name and shapes."""
    base_layers = [layer for layer in base_model(model, spec).layers if layer.weights]
    missing = []
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            other = None
        shapes = [tuple(w.shape) for w in layer.weights]
        if other is None or [tuple(w.shape) for w in other.weights] != shapes:
            missing.append(layer)
            continue
        layer.set_weights(other.get_weights())
    missing_in_base = [layer.name for layer in missing if layer in base_layers]
    if missing_in_base:
        raise WeightsError(
            f"{path.name} lacks {len(missing_in_base)} layer(s) of the {spec.id} base with matching shapes "
            f"(first: {missing_in_base[0]}): it was saved from another architecture"
        )
