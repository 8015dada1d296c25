"""The architecture registry: one spec per architecture, as data.

A spec says how to build a model and everything the rest of tltoolkit needs to know about it without
building it: its stages (where freezing can stop and where features can be cut), input sizes,
preprocessing, the feature layer, downloadable weights, and the exact parameter and MAC counts we
build, next to the published reference they are checked against.

Family modules register their specs at import time (`tltoolkit.architectures` imports them all);
tests iterate over `all_specs()`, so a new entry is tested the moment it is registered.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable, Mapping

from tltoolkit.errors import TltoolkitError

PREPROCESSING_MODES = ("caffe", "tf", "torch", "scale", "none")
"""How raw 0..255 RGB pixels become model input (keras.applications' `preprocess_input` modes):
`caffe` RGB->BGR minus the ImageNet mean; `tf` x/127.5-1; `torch` x/255 minus mean, over std;
`scale` x/255; `none` the model takes raw pixels."""

HEAD = "head"  # the pseudo-stage after the last stage: `freeze-until head` freezes the whole base
NONE = "none"  # freeze nothing


class ArchitectureError(TltoolkitError, ValueError):
    """An unknown architecture, stage or option; the message is one line naming what would work."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """A published number and what it counts.

    counts: `total` (Keras count_params, BN moving statistics included), `trainable` (torchvision's
    convention: no BN statistics), `approx` (a paper's rounded value, e.g. 0.85M: checked to the
    digits given), `derived` (no count is published: an exact count derived from the paper's layer
    table, the source says how; checked against the total) or `gmacs` (multiply-accumulates,
    billions, checked to the digits given).
    """

    value: float
    counts: str
    source: str


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """One downloadable weights file per head variant, as keras.applications publishes them."""

    url: str  # the include_top file (None where only a no-top file exists)
    file_hash: str  # md5 or sha256 of that file, as `keras.utils.get_file` checks it
    notop_url: str
    notop_hash: str
    num_classes: int = 1000
    top1: float | None = None  # published ImageNet top-1 accuracy (fraction) of these weights
    source: str = ""


@dataclasses.dataclass(frozen=True)
class TorchLayout:
    """Where a PyTorch checkpoint's tensors go in our model (see `tltoolkit.architectures.checkpoints`).

    layers(model) -> {Keras layer name: [checkpoint keys, in Keras weight order]} for every weighted
    layer of `model`; head: key prefixes of the checkpoint's classifier (skipped for a new head)."""

    name: str  # whose key names these are: "timm", "torchvision"
    layers: Callable
    head: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    id: str
    family: str
    builder: Callable  # builder(include_top, num_classes, input_shape, pooling, **options) -> Model
    stages: tuple[tuple[str, str], ...]  # (stage name, first layer name), in model.layers order
    base_output: str  # last layer of the last stage: what a no-top model ends with before pooling
    penultimate: str  # the feature layer of the include_top model (what a cache stores by default)
    default_size: int
    min_size: int
    preprocessing: str
    params: int  # exact count_params() we build: include_top, default classes, default size
    trainable_params: int
    macs: float  # GMACs we count analytically at the default size (include_top)
    reference_params: Reference
    reference_macs: Reference | None = None
    channels: int = 3
    num_classes: int = 1000  # the classifier size of the reference model
    weights: Mapping[str, WeightsFile] = dataclasses.field(default_factory=dict)
    keras_application: str | None = None  # keras.applications name whose weights load into ours
    paper: str = ""
    options: tuple[str, ...] = ()  # builder keyword options beyond the common ones
    torch_layouts: tuple[TorchLayout, ...] = ()  # how timm/torchvision checkpoints load (checkpoints.py)
    # Not registered but derived from a built model (`keras:NAME`, a saved `.keras`; see bases.py): stages
    # from its graph (`stages.graph_stages`), base_output and penultimate its last layer, no top.
    derived: bool = False

    def __post_init__(self):
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(f"{self.id}: preprocessing {self.preprocessing!r} not in {PREPROCESSING_MODES}")
        names = [s for s, _ in self.stages]
        if len(set(names)) != len(names) or HEAD in names or NONE in names:
            raise ValueError(f"{self.id}: stage names must be unique and not {HEAD!r}/{NONE!r}: {names}")

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.stages)

    @property
    def default_input_shape(self) -> tuple[int, int, int]:
        return (self.default_size, self.default_size, self.channels)


KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_IO = "keras.io/api/applications"


def keras_imagenet_weights(folder: str, name: str, file_hash: str, notop_hash: str, top1: float,
                           source: str = KERAS_IO) -> dict[str, WeightsFile]:
    """keras.applications' published ImageNet files, `<folder>/<name>_weights_tf_dim_ordering_tf_kernels[_notop].h5`."""
    base = f"{KERAS_APPLICATIONS_URL}{folder}/{name}_weights_tf_dim_ordering_tf_kernels"
    return {"imagenet": WeightsFile(f"{base}.h5", file_hash, f"{base}_notop.h5", notop_hash, top1=top1, source=source)}


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    if spec.id in _REGISTRY:
        raise ValueError(f"architecture {spec.id!r} is registered twice")
    _REGISTRY[spec.id] = spec
    return spec


def close_matches(word: str, choices) -> str:
    found = difflib.get_close_matches(word, list(choices), n=5, cutoff=0.5)
    return f"close matches: {', '.join(found)}" if found else "see `tltoolkit models`"


def get_spec(arch: str) -> ArchSpec:
    _load_families()
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise ArchitectureError(
            f"unknown architecture {arch!r}; {close_matches(arch, _REGISTRY)}"
        ) from None


def all_specs(family: str | None = None) -> list[ArchSpec]:
    _load_families()
    return [s for s in _REGISTRY.values() if family is None or s.family == family]


def list_architectures(family: str | None = None) -> list[str]:
    return [s.id for s in all_specs(family)]


def _load_families():
    # Family modules register themselves on import; importing here (not at module top) keeps the
    # registry importable from the family modules without a cycle.
    from tltoolkit.architectures import families  # noqa: F401


def resolve_input_shape(spec: ArchSpec, input_shape) -> tuple[int, int, int]:
    """Validates a user's input shape against the spec; None means the default size."""
    if input_shape is None:
        return spec.default_input_shape
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != spec.channels:
        raise ArchitectureError(
            f"{spec.id}: input_shape must be (height, width, {spec.channels}); received {input_shape}"
        )
    if any(d is not None and d < spec.min_size for d in shape[:2]):
        raise ArchitectureError(
            f"{spec.id}: input must be at least {spec.min_size}x{spec.min_size}; received {input_shape}"
        )
    return shape
