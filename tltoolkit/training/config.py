"""Every `finetune` setting, defined once: its type, default and help. The CLI's flags, `--config` files
and the Python API's mapping are all read through `resolve_config`, validated once, up front, with
one-line errors; the result is a frozen `FinetuneConfig`.

    config = resolve_config({"base": "vgg16", "data": "./cats"}, {"epochs": 100})
    config.freeze_until, config.image_size            # "auto", None (the base's size)

A setting left at None where the help says "chosen ..." is decided by the run (the head's L2 and
dropout on validation, the recipe from the weights) and the decision is written to the report.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from pathlib import Path

from tltoolkit.data.files import check_output_dir
from tltoolkit.errors import TltoolkitError, one_line
from tltoolkit.heads import POOLINGS
from tltoolkit.preprocessing_modes import PREPROCESSING_HELP
from tltoolkit.runtimes import PRECISIONS, RUNTIMES
from tltoolkit.training.policy import AUTO, DEFAULT_THRESHOLDS, check_thresholds

RECIPES = ("auto", "pretrained", "scratch")
CHOICES = {
    "resize": ("center_crop", "stretch", "pad"),
    "pooling": POOLINGS,
    "class_weight": ("none", "auto"),
    "bn": ("auto", "frozen", "train"),
    "monitor": ("val_loss", "val_accuracy"),
    "strategy": ("auto", "mirrored", "multiworker", "tpu", "none"),
    "recipe": RECIPES,
    "runtime": RUNTIMES,
    "precision": PRECISIONS,
}
REQUIRED = ("base", "data")
IDENTITY = ("base", "weights", "preprocessing", "image_size", "resize", "hidden", "pooling")  # what a re-run may not change


def _setting(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    base: str = _setting(None, "architecture id (see `tltoolkit models`), keras:NAME (any keras.applications "
                               "model, e.g. keras:EfficientNetB0) or a saved .keras base (needs --preprocessing)")
    data: str = _setting(None, "class folders, a CSV/Parquet manifest or tfds:NAME")
    out: str | None = _setting(None, "the run directory (default: runs/DATA-BASE); re-use it to continue on a "
                                     "grown dataset")
    weights: str = _setting("imagenet", "imagenet (default; for a saved .keras base: its own weights), imagenet:TAG "
                                        "(tltoolkit models lists the tags), none (random init, seeded by --seed: trains "
                                        "from scratch) or a weights file (also a timm .safetensors or torchvision .pth)")
    preprocessing: str | None = _setting(None, PREPROCESSING_HELP)
    freeze_until: str = _setting(AUTO, "auto (default: measured on validation, see --policy-budget), a stage (it "
                                       "and all after it train; `tltoolkit layers BASE`), a layer name (the same, "
                                       "from that layer), head (train only the head) or none (train everything)")
    image_size: list[int] | None = _setting(None, "input size: one number or HEIGHTxWIDTH (default: the "
                                                  "architecture's)")
    resize: str = _setting("center_crop", "center_crop (default), stretch or pad")
    batch_size: int = _setting(32, "batch size (default 32)")
    # -- phase 1: the head on cached features
    epochs: int = _setting(500, "phase 1: at most this many epochs of the head on cached features; each setting "
                                "of the sweep stops after --head-patience epochs without improving (default 500)")
    head_patience: int = _setting(20, "phase 1: early-stopping patience in epochs (default 20)")
    learning_rate: float | None = _setting(None, "phase 1's Adam rate (default: chosen on validation from 1e-2)")
    l2: float | None = _setting(None, "L2 weight decay on the head's kernels (default: chosen on validation "
                                      "from 1e-5..1e-1)")
    dropout: float | None = _setting(None, "dropout on the input of each Dense layer of the head (default: 0 for "
                                           "a linear head; with --hidden, chosen on validation from 0, 0.5)")
    hidden: list[int] = _setting((), "hidden Dense layer sizes of the head, comma-separated (default: none)")
    pooling: str = _setting("avg", "avg (default), max, flatten or none")
    label_smoothing: float = _setting(0.0, "label smoothing (default 0)")
    class_weight: str = _setting("none", "auto: weigh classes by inverse frequency (default none)")
    # -- phase 2: stages and head, end to end
    recipe: str = _setting("auto", "phase 2's recipe: pretrained (discriminative: low rates, lower for earlier "
                                   "stages, BatchNorm frozen), scratch (one rate for all layers, BatchNorm trained) "
                                   "or auto (default: scratch when --weights none, else pretrained)")
    fine_tune_epochs: int = _setting(50, "phase 2: at most this many epochs, with early stopping (default 50)")
    fine_tune_learning_rate: float | None = _setting(None, "phase 2's peak rate (default: 1e-4 for the "
                                                           "pretrained recipe, 1e-3 for scratch)")
    stage_lr_decay: float = _setting(0.3, "pretrained recipe: each earlier trained stage learns this much slower "
                                          "(default 0.3)")
    warmup_epochs: int = _setting(1, "phase 2: linear warm-up epochs before the cosine decay (default 1; "
                                     "scratch: at least 3)")
    patience: int = _setting(5, "phase 2: early-stopping patience in epochs (default 5; scratch: at least 20)")
    bn: str = _setting("auto", "BatchNorm in phase 2: frozen (keeps its statistics), train, or auto (default: "
                               "the recipe's: frozen for pretrained, train for scratch)")
    monitor: str = _setting("val_loss", "val_loss (default) or val_accuracy: early stopping and every choice")
    augment: str = _setting("standard", "augmentation in phase 2: none, light, standard (default), strong or "
                                        "layer names")
    refit: bool = _setting(True, "phase 2, when a model from it is kept: train it once more, the same way, on the "
                                 "training and validation images together for as many epochs as its best took "
                                 "(default on; the scores reported and the calibration stay validation's)")
    val_split: float = _setting(0.2, "validation fraction, by content hash: stable as the folder grows "
                                     "(default 0.2)")
    # -- calibration and rejection, on validation
    coverage: float = _setting(0.95, "the share of validation images kept above the rejection threshold: "
                                     "predict answers unknown below it (default 0.95)")
    rejection_score: str = _setting("msp", "the rejection score: msp (the top calibrated probability, default) "
                                           "or energy")
    # -- the growth policy
    policy_budget: float = _setting(30.0, "--freeze-until auto: the time to try freeze points in, as a multiple "
                                          "of phase 1's cost (one forward pass over the training images plus "
                                          "the head), counted in epochs of the full model (at least 80 where "
                                          "they take under 5 minutes); 0: decide by --policy-thresholds alone "
                                          "(default 30)")
    policy_thresholds: list[int] = _setting(DEFAULT_THRESHOLDS, "images/class at which the prior unfreezes the "
                                                                "last stage, two stages, everything")
    # -- where and how
    cache_dir: str | None = _setting(None, "cache folder: the feature entries, the scan cache (DIR/scans) and tfds listings (DIR/tfds) (default: $XDG_CACHE_HOME/tltoolkit/features and $XDG_CACHE_HOME/tltoolkit/scans)")
    rehash: bool = _setting(False, "re-read and re-hash every image instead of trusting the scan cache's "
                                   "size+mtime (for files edited in place with their mtime kept)")
    seed: int = _setting(0, "seed of initialisation, shuffling and augmentation (default 0)")
    strategy: str = _setting("auto", "auto (default: mirrored with several GPUs), mirrored, multiworker "
                                     "(TF_CONFIG), tpu or none")
    runtime: str = _setting("tf", "what computes the frozen base's features (phase 1 and the cut cache) on the "
                                  "CPU: tf (default) or openvino (pip install 'tltoolkit[fast-cpu]'); the saved "
                                  "model runs on TensorFlow")
    precision: str = _setting("fp32", "fp32 (default), bf16 or int8 for those features (needs --runtime openvino "
                                      "and a CPU that runs it natively); the report gives their fidelity to fp32")
    mixed_precision: bool = _setting(False, "float16 compute in phase 2 (for GPUs/TPUs)")
    jit: bool = _setting(False, "XLA-compile training steps")
    cut_cache: bool = _setting(True, "without augmentation, phase 2 trains on a cache of the last frozen stage's "
                                     "output (default on)")

    def to_json(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> "FinetuneConfig":
        return resolve_config(self.to_json(), changes)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


FIELDS = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
DEFAULTS = FinetuneConfig().to_json()


def _kind(name: str):
    """The setting's base type: int, float, str, bool or list (of ints)."""
    hint = typing.get_type_hints(FinetuneConfig)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _convert(name: str, value):
    kind = _kind(name)
    flag = f"--{name.replace('_', '-')}"
    if name == "image_size":
        return image_size(value)
    try:
        if kind is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [_number(int, v) for v in items if str(v).strip()]
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            if value not in (True, False):  # 0 and 1 too; not 5 or [1]
                raise ValueError
            return bool(value)
        if kind is str:
            if not isinstance(value, (str, os.PathLike)):  # base: 5, weights: {}
                raise TypeError
            return os.fspath(value)
        return _number(kind, value)
    except (TypeError, ValueError):
        raise TltoolkitError(f"{flag} takes {'integers' if kind is list else kind.__name__}, got {value!r}") from None


def _number(kind, value):
    """An int or a finite float from a number or its text; never from true/false, 2.7 (an int), nan or inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    number = kind(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError
    if not math.isfinite(number):
        raise ValueError
    return number


def image_size(value) -> list[int] | None:
    """None, 224, "224", "160x224" or [160, 224] -> [height, width] (or None)."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            parts = [int(v) for v in value.lower().replace(",", "x").split("x")]
        elif isinstance(value, (list, tuple)):
            parts = [int(v) for v in value]
        else:
            parts = [int(value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise TltoolkitError(f"--image-size takes one size or HEIGHTxWIDTH like 224 or 160x224, got {value!r}")
    return parts


def resolve_config(*layers) -> FinetuneConfig:
    """The defaults overlaid with each mapping in turn (a config file, then flags; None = "not given"),
    validated. A `FinetuneConfig` passes through."""
    values = dict(DEFAULTS)
    for layer in layers:
        if isinstance(layer, FinetuneConfig):
            layer = layer.to_json()
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in FIELDS:
                close = difflib.get_close_matches(key, FIELDS, n=3)
                hint = f"close matches: {', '.join(close)}" if close else f"known keys: {', '.join(FIELDS)}"
                raise TltoolkitError(f"unknown setting {key!r}; {hint}")
            if value is not None:
                values[key] = _convert(key, value)
    missing = [f"--{k}" for k in REQUIRED if not values[k]]
    if missing:
        raise TltoolkitError(f"missing {', '.join(missing)} (as a flag or a --config key)")
    _validate(values)
    values["data"] = str(values["data"])
    if isinstance(values["weights"], str) and values["weights"].lower() == "none":
        values["weights"] = "none"
    if not values["out"]:  # runs/cats-vgg16: one run directory per data folder and base
        name, base = (_file_name(text) for text in (Path(values["data"].rstrip("/")).name, values["base"]))
        values["out"] = str(Path("runs") / f"{name or 'data'}-{base}")
    values["out"] = str(values["out"])
    for key in ("out", "cache_dir"):
        check_output_dir(values[key], values["data"], f"--{key.replace('_', '-')}")
    values["hidden"] = tuple(values["hidden"])
    values["policy_thresholds"] = tuple(values["policy_thresholds"])
    return FinetuneConfig(**values)


def _validate(values: dict) -> None:
    def flag(key):
        return f"--{key.replace('_', '-')}"

    for key, choices in CHOICES.items():
        if values[key] not in choices:
            raise TltoolkitError(f"{flag(key)} must be one of {', '.join(choices)}, got {values[key]!r}")
    if values["batch_size"] < 1:
        raise TltoolkitError(f"--batch-size must be at least 1, got {values['batch_size']}")
    for key in ("epochs", "head_patience", "fine_tune_epochs", "patience", "warmup_epochs"):
        if values[key] < 0:
            raise TltoolkitError(f"{flag(key)} must be 0 or more, got {values[key]}")
    for key in ("learning_rate", "fine_tune_learning_rate"):
        if values[key] is not None and not values[key] > 0:
            raise TltoolkitError(f"{flag(key)} must be positive, got {values[key]}")
    for key in ("l2", "label_smoothing", "policy_budget"):
        if values[key] is not None and values[key] < 0:
            raise TltoolkitError(f"{flag(key)} must be 0 or more, got {values[key]}")
    if values["dropout"] is not None and not 0 <= values["dropout"] < 1:
        raise TltoolkitError(f"--dropout must be in [0, 1), got {values['dropout']}")
    if not 0 <= values["val_split"] < 1:
        raise TltoolkitError(f"--val-split must be in [0, 1), got {values['val_split']}")
    if not 0 < values["stage_lr_decay"] <= 1:
        raise TltoolkitError(f"--stage-lr-decay must be in (0, 1], got {values['stage_lr_decay']}")
    if any(h < 1 for h in values["hidden"]):
        raise TltoolkitError(f"--hidden sizes must be positive, got {list(values['hidden'])}")
    check_thresholds(values["policy_thresholds"])
    from tltoolkit.augment import policy_names
    from tltoolkit.rejection import check_coverage, check_score  # Keras: imported only once settings are read

    policy_names(values["augment"])

    check_coverage(values["coverage"])
    check_score(values["rejection_score"])


def _file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def add_arguments(parser) -> None:
    """One flag per setting, from the definitions above (default None: a flag not given leaves the
    --config value or the built-in default in place)."""
    for name, field in FIELDS.items():
        flag, kind = f"--{name.replace('_', '-')}", _kind(name)
        if kind is bool:
            # A default-on switch gets its --no- form (--no-cut-cache); a default-off one its plain name.
            if field.default:
                parser.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_const", const=False,
                                    default=None, help=f"turn off: {field.metadata['help']}")
            else:
                parser.add_argument(flag, dest=name, action="store_const", const=True, default=None,
                                    help=field.metadata["help"])
            continue
        parser.add_argument(flag, dest=name, default=None, help=field.metadata["help"],
                            choices=CHOICES.get(name), type=str if kind in (list, str) else kind)


def load_config_file(path) -> dict:
    """A JSON (or, with pyyaml installed, YAML) file with any of the settings (flag names, - or _)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise TltoolkitError(f"cannot read --config {path}: {error.strerror}") from None
    try:
        data = yaml_or_json(text, path.suffix.lower())
    except ValueError as error:
        raise TltoolkitError(f"--config {path} is not valid {error}") from None
    if not isinstance(data, dict):
        raise TltoolkitError(f"--config {path} must hold a mapping of settings like {{\"epochs\": 5}}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def yaml_or_json(text: str, suffix: str):
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError("YAML: pyyaml is not installed (pip install pyyaml), or use JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"YAML ({one_line(error, 120)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"JSON ({error})") from None
