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
from tltoolkit.architectures.registry import DATASETS, ArchSpec, Checkpoint, WeightsFile
from tltoolkit.errors import one_line

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


def is_published(weights) -> bool:
    """Whether `weights` names published weights: `DATASET` or `DATASET:TAG` (registry.DATASETS)."""
    return isinstance(weights, str) and weights.split(":", 1)[0] in DATASETS


def published_name(tag: str) -> str:
    """A tag as `weights=` takes it: `tv_in1k` is ImageNet's (`imagenet:tv_in1k`); `cifar100`,
    `cifar100:chenyaofo`, `imagenet:a1_in1k` stay as they are."""
    return tag if is_published(tag) else f"{IMAGENET}:{tag}"


def weights_entry(spec: ArchSpec, name: str) -> WeightsFile | Checkpoint:
    """The published weights `name` (`DATASET`, `DATASET:TAG`) of `spec`."""
    entry = _find_entry(spec, name)
    if entry is not None:
        return entry
    if not spec.weights:
        available = [s.id for s in _all_specs() if s.weights]
        raise WeightsError(f"{spec.id} has no published {name!r} weights; architectures with them: "
                           f"{', '.join(available)} (or pass a weights file path)")
    raise WeightsError(f"{spec.id} has no published {name!r} weights; its tags: {', '.join(weights_tags(spec))} "
                       f"(or pass a weights file path)")


def _find_entry(spec: ArchSpec, name: str) -> WeightsFile | Checkpoint | None:
    if name in spec.weights:
        return spec.weights[name]
    return {f"{entry.dataset}:{entry.tag}": entry for entry in spec.weights.values()}.get(name)


def weights_tags(spec: ArchSpec) -> list[str]:
    """What `weights=` accepts for `spec`: each dataset's default (with its tag) and each `DATASET:TAG`."""
    return [f"{name} ({entry.tag})" if name in DATASETS else name for name, entry in spec.weights.items()]


def preprocessing_mode(spec: ArchSpec, weights) -> str:
    """The preprocessing mode the weights were trained with: a tag's own; for a PyTorch checkpoint file,
    that of the spec's checkpoints for its reference classes (ImageNet's; CIFAR-10's for the CIFAR
    nets: a CIFAR-100 file takes --preprocessing cifar100); else the spec's (keras.applications files,
    our own files, random init)."""
    if is_published(weights):
        entry = _find_entry(spec, weights)  # an unknown tag is refused where the weights load
        if entry is not None and entry.preprocessing is not None:
            return entry.preprocessing.mode
    elif weights is not None and Path(weights).expanduser().is_file() and checkpoints.is_checkpoint(
            Path(weights).expanduser()):
        modes = {e.preprocessing.mode for e in spec.weights.values()
                 if isinstance(e, Checkpoint) and e.num_classes == spec.num_classes}
        if len(modes) == 1:
            return modes.pop()
    return spec.preprocessing


def fetch(spec: ArchSpec, entry: WeightsFile, with_top: bool) -> Path:
    """The published keras.applications file of `entry`: from the Keras cache, or downloaded and checked."""
    url, file_hash = (entry.url, entry.file_hash) if with_top else (entry.notop_url, entry.notop_hash)
    return download(url, file_hash)


def download(url: str, file_hash: str | None, fname: str | None = None) -> Path:
    """`url` in the Keras cache as `fname` (default: the URL's), downloaded once by `keras.utils.get_file`
    and checked against `file_hash`: md5 or sha256, a sha256 prefix (torchvision's file names), or None
    (nothing published to check)."""
    folder = keras_cache_dir()
    fname = fname or url.rsplit("/", 1)[-1]
    target = folder / fname
    if target.exists():
        # Checked here rather than by get_file: on a mismatch it re-downloads and, offline,
        # deletes the user's file when the download fails.
        check_hash(target, file_hash, url)
        return target
    # get_file falls back to /tmp/.keras when the folder is missing; create it so the file lands
    # where the error messages say.
    folder.mkdir(parents=True, exist_ok=True)
    whole = file_hash if file_hash is not None and len(file_hash) in (32, 64) else None
    try:
        path = Path(keras.utils.get_file(fname, origin=url, file_hash=whole, cache_subdir="models",
                                         cache_dir=str(folder.parent)))
        check_hash(path, file_hash, url)
    except Exception as error:  # get_file raises bare Exceptions for network failures
        # A download that failed its hash check stays behind; it was not there before.
        target.unlink(missing_ok=True)
        raise WeightsError(
            f"could not download {fname} ({one_line(error)}); download {url} and put it in {folder}/ "
            f"(or pass the file's path as the weights)"
        ) from error
    return path


def check_hash(path: Path, file_hash: str | None, url: str) -> None:
    if file_hash is None:
        return
    algorithm = _hash_algorithm(file_hash)
    if not file_digest(path, algorithm).startswith(file_hash):
        raise WeightsError(
            f"{path} does not match the published {algorithm} hash of {path.name} ({file_hash}): "
            f"it is damaged or another file; replace it with the file from {url}"
        )


def checkpoint_source(entry: Checkpoint) -> Path:
    """The checkpoint file itself, in the Keras cache (downloaded and checked once)."""
    return download(entry.url, entry.file_hash, entry.fname)


def published_id(entry: Checkpoint) -> str:
    """Names a checkpoint tag's weights in feature-cache keys: the source file's sha256 (what the converted
    file is named by) and the tag's preprocessing recipe, so two tags never share features."""
    digest = file_digest(checkpoint_source(entry), "sha256")
    return f"{entry.dataset}:{entry.tag}:sha256:{digest}:{entry.preprocessing.identity}"


def converted_checkpoint(spec: ArchSpec, entry: Checkpoint) -> Path:
    """The `.weights.h5` of `entry` in our layout, next to its source file in the Keras cache and named by
    the source's sha256: converted once (the reference classifier, all or nothing), loaded directly after."""
    source = checkpoint_source(entry)
    target = source.with_name(f"{spec.id}.{entry.tag}.{file_digest(source, 'sha256')[:16]}.weights.h5")
    if not target.exists():
        convert_file(spec, source, target, entry.num_classes)
    return target


def convert_file(spec: ArchSpec, source: Path, target: Path, num_classes: int | None = None) -> keras.Model:
    """Converts the PyTorch checkpoint `source` into a `.weights.h5` of `spec`'s classifier for `num_classes`
    (default: the reference's), written atomically; returns the model."""
    from tltoolkit.data.files import atomic_path

    model = spec.builder(spec, include_top=True, num_classes=num_classes or spec.num_classes, input_shape=None,
                         pooling=None)
    load_checkpoint(model, spec, checkpoints.read_state_dict(source), source.name, whole=True)
    with atomic_path(target, suffix=".weights.h5") as temporary:
        model.save_weights(temporary)
    return model


def _all_specs():
    from tltoolkit.architectures.registry import all_specs

    return all_specs()


def load_weights(model: keras.Model, spec: ArchSpec, weights) -> Path:
    """Loads `weights` ("imagenet", "DATASET:TAG" or a file path) into `model`, built from `spec`; returns
    the file (for a PyTorch checkpoint tag, its converted `.weights.h5`).

    The whole model is loaded when the file was written for the same head; otherwise only the base
    is, and the new classifier keeps its fresh initialisation.
    """
    if is_published(weights):
        entry = weights_entry(spec, weights)
        if isinstance(entry, Checkpoint):
            path = converted_checkpoint(spec, entry)
        else:
            path = fetch(spec, entry, has_reference_top(model, spec, entry.num_classes))
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
        raise WeightsError(f"{path.name} does not fit {spec.id}: {one_line(error)}") from error
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


def load_checkpoint(model: keras.Model, spec: ArchSpec, state: dict, name: str, whole: bool = False) -> None:
    """Converts a PyTorch state dict into `model`: the whole model when the checkpoint's head fits,
    else (unless `whole`) the base alone, the checkpoint's classifier skipped; all or nothing."""
    if not spec.torch_layouts:
        with_layouts = [s.id for s in _all_specs() if s.torch_layouts]
        raise WeightsError(f"{name} is a PyTorch checkpoint, and {spec.id} has no converter for one; "
                           f"architectures with one: {', '.join(with_layouts)}")
    layout = max(spec.torch_layouts, key=lambda t: sum(k in state for keys in t.layers(model).values() for k in keys))
    try:
        values = checkpoints.convert_state(model, state, layout.layers(model), layout.optional)
        target = model
    except WeightsError:
        body = {k: v for k, v in state.items() if not k.startswith(layout.head)}
        if whole or len(body) == len(state):  # no classifier to skip: the mismatch is in the base
            raise
        target = base_model(model, spec)
        try:
            values = checkpoints.convert_state(target, body, layout.layers(target), layout.optional)
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
