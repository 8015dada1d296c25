"""Loading a classifier: a run directory or a `.keras` file with its class names, input size and resize
policy; several of them with the same classes as an ensemble."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from tltoolkit.architectures import load_model
from tltoolkit.data import load_class_index
from tltoolkit.data.files import read_json
from tltoolkit.errors import TltoolkitError


@dataclasses.dataclass
class Classifier:
    """A trained model with what it needs to be used: its class names (in output order), input size
    and resize policy."""

    model: object  # keras.Model: uint8 [B, H, W, 3] -> probabilities [B, classes]
    class_names: list[str]
    image_size: tuple[int, int]
    resize: str
    source: str  # the run directory or .keras file it came from
    run_dir: Path | None = None
    base: str | None = None  # the run's --base (its stages name explanation layers); None for a .keras file

    @property
    def name(self) -> str:
        return Path(self.source).name

    @functools.cached_property
    def scored(self):
        """The model returning [probabilities, rejection score] (`rejection.scored_model`); None for a
        model that does not end in a Dense softmax, whose score is then its top probability."""
        from tltoolkit.rejection import scored_model

        try:
            return scored_model(self.model)
        except TltoolkitError:
            return None


def load_classifier(path) -> Classifier:
    """A run directory or a `.keras` file as a Classifier; a one-line TltoolkitError when it is not one."""
    path = Path(path).expanduser()
    if path.is_dir():
        # One set of artefacts, even if a finetune switches to its new set meanwhile (training/run.py).
        files = path / "current" if (path / "current").is_dir() else path
        files = files.resolve()
        missing = [name for name in ("model.keras", "class_index.json") if not (files / name).is_file()]
        if missing:
            raise TltoolkitError(f"{path} is not a run directory: it lacks {', '.join(missing)}; pass the folder "
                                 f"`tltoolkit finetune` wrote or a .keras file")
        model_file, run_dir = files / "model.keras", path
        index = load_class_index(files / "class_index.json")
        config = read_json(files / "config.json", {})
        if not isinstance(config, dict):
            raise TltoolkitError(f"{path / 'config.json'} is not a mapping of settings; restore it from the run's "
                                 f"state.json or re-run finetune")
    elif path.suffix == ".keras" and path.is_file():
        model_file, run_dir, config = path, None, {}
        index = _labels_beside(path)
    else:
        raise TltoolkitError(f"--model {path} is neither a run directory nor a .keras file")
    model = load_model(model_file)  # a broken file: a one-line error
    classes = int(model.output.shape[-1])
    names = sorted(index, key=index.get) if index else [str(i) for i in range(classes)]
    if len(names) != classes:
        raise TltoolkitError(f"{model_file} has {classes} outputs but its class index names {len(names)} classes; "
                             f"the class index belongs to another model")
    size = config.get("image_size") or tuple(model.input.shape[1:3])
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise TltoolkitError(f"{path}: unknown input size {size}; add \"image_size\": [H, W] to config.json")
    return Classifier(model, names, size, config.get("resize", "center_crop"), str(path), run_dir, config.get("base"))


def _labels_beside(model_file: Path) -> dict[str, int] | None:
    labels, index = model_file.parent / "labels.txt", model_file.parent / "class_index.json"
    if labels.is_file():
        names = labels.read_text(encoding="utf-8").splitlines()
        return {name: i for i, name in enumerate(names)}
    return load_class_index(index) if index.is_file() else None


def load_ensemble(paths) -> list[Classifier]:
    """Several classifiers whose class indexes match exactly (same names, same ids)."""
    return _same_classes([load_classifier(path) for path in paths])


def _same_classes(classifiers: list[Classifier]) -> list[Classifier]:
    first = classifiers[0]
    for other in classifiers[1:]:
        if other.class_names != first.class_names:
            raise TltoolkitError(f"cannot ensemble {first.source} and {other.source}: their classes differ "
                                 f"({names_shown(first.class_names)} vs {names_shown(other.class_names)}); ensemble runs "
                                 f"trained on the same class index")
    return classifiers


def names_shown(names, limit=6):
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} classes)" if len(names) > limit else "")


def as_classifiers(model_or_runs) -> list[Classifier]:
    if isinstance(model_or_runs, Classifier):
        return [model_or_runs]
    if isinstance(model_or_runs, (str, os.PathLike)):
        return [load_classifier(model_or_runs)]
    items = list(model_or_runs)
    if not items:
        raise TltoolkitError("no model given; pass a run directory or a .keras file")
    return _same_classes([c if isinstance(c, Classifier) else load_classifier(c) for c in items])
