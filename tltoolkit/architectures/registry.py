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
from tltoolkit.preprocessing_modes import PREPROCESSING_MODES

DATASETS = ("imagenet", "cifar10", "cifar100")
"""What published weights are trained on: `weights="DATASET"` picks an architecture's default weights for
it, `"DATASET:TAG"` a named one (`imagenet:a1_in1k`, `cifar100:chenyaofo`)."""

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


IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)  # torch mode, on 0..1 pixels
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # caffe mode, on 0..255 pixels
# The modes that take x/255 minus a per-channel mean, over a std: (mean, std) of RGB on 0..1. The CIFAR
# values are chenyaofo/pytorch-cifar-models' training transforms (CIFAR-10's std is the widely copied
# 0.2023/0.1994/0.2010, not the dataset's per-pixel std).
RGB_MEAN_STD = {
    "torch": (IMAGENET_MEAN_RGB, IMAGENET_STD_RGB),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5070, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761)),
}
MEAN_STD = {  # per mode: (mean, std) in the checkpoints' own terms (RGB on 0..1; caffe: BGR on 0..255)
    **RGB_MEAN_STD,
    "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "caffe": (CAFFE_MEAN_BGR, (1.0, 1.0, 1.0)),
    "scale": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What published weights were trained and evaluated with. `mode` (one of PREPROCESSING_MODES) is what
    the model's preprocessing layer applies; the rest is the evaluation recipe of the published top-1
    (resize the short side to input_size / crop_fraction with `interpolation`, centre-crop input_size)."""

    mode: str
    input_size: int = 224
    crop_fraction: float | None = None  # None: not published
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.mode not in PREPROCESSING_MODES:
            raise ValueError(f"preprocessing mode {self.mode!r} not in {PREPROCESSING_MODES}")

    @property
    def mean_std(self):
        return MEAN_STD.get(self.mode)

    @property
    def identity(self) -> str:
        """Names the preprocessing in feature-cache keys: two recipes never share features."""
        return f"{self.mode}/{self.input_size}/{self.crop_fraction}/{self.interpolation}"


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """One downloadable weights file per head variant, as keras.applications publishes them."""

    url: str  # the include_top file (None where only a no-top file exists)
    file_hash: str  # md5 or sha256 of that file, as `keras.utils.get_file` checks it
    notop_url: str
    notop_hash: str
    num_classes: int = 1000
    top1: float | None = None  # published ImageNet top-1 accuracy (fraction) of these weights
    source: str = ""  # where the top-1 is published
    licence: str = ""  # of the weights, where published ("" where not)
    preprocessing: Preprocessing | None = None  # None: the spec's mode
    origin: str = "keras.applications"
    tag: str = "keras"
    dataset: str = "imagenet"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A published PyTorch checkpoint (timm safetensors or torchvision `.pth`), converted into our layout
    by the spec's `torch_layouts` on first use and cached as a `.weights.h5` (weights.py)."""

    tag: str  # timm's pretrained tag (tv_in1k, a1_in1k, ...) or the publisher's name: `DATASET:TAG` selects it
    url: str
    # sha256 of the file, or its leading hex digits as torchvision names its files (resnet18-f37072fd.pth);
    # None where no hash is published (the Hugging Face Hub files): the download is then checked by
    # structure only, i.e. by converting it (every tensor present, with the right shape).
    file_hash: str | None
    origin: str  # timm or torchvision
    licence: str
    preprocessing: Preprocessing
    top1: float | None
    source: str  # where the top-1 is published, and how it was measured
    num_classes: int = 1000
    dataset: str = "imagenet"  # one of DATASETS: what it was trained on and what `top1` is measured on
    filename: str | None = None  # the name in the Keras cache where the URL has none (a Google Drive link)

    @property
    def fname(self) -> str:
        """The file's name in the Keras cache: `filename`, else the URL's, except that every Hugging Face Hub
        file is called model.safetensors, so those are `<model>.<tag>.safetensors` (the repository's name)."""
        if self.filename:
            return self.filename
        name = self.url.rsplit("/", 1)[-1]
        if "/resolve/" in self.url:
            return self.url.split("/resolve/")[0].rsplit("/", 1)[-1] + ".safetensors"
        return name


@dataclasses.dataclass(frozen=True)
class TorchLayout:
    """Where a PyTorch checkpoint's tensors go in our model (see `tltoolkit.architectures.checkpoints`).

    layers(model) -> {Keras layer name: [checkpoint keys, in Keras weight order]} for every weighted
    layer of `model`; head: key prefixes of the checkpoint's classifier (skipped for a new head);
    optional: key prefixes of parts a model may be built without (GoogLeNet's auxiliary classifiers,
    an option): their tensors load where `layers(model)` maps them and are skipped where it does not."""

    name: str  # whose key names these are: "timm", "torchvision"
    layers: Callable
    head: tuple[str, ...]
    optional: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    id: str
    family: str
    # builder(spec, include_top, num_classes, input_shape, pooling, **options) -> Model: it receives this spec
    # (no builder looks itself up in the registry).
    builder: Callable
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
    # `DATASET` (the best-documented default per dataset) and `DATASET:TAG` for the others (DATASETS; see
    # weights.weights_entry).
    weights: Mapping[str, WeightsFile | Checkpoint] = dataclasses.field(default_factory=dict)
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
                           source: str = KERAS_IO, licence: str = "",
                           preprocessing: Preprocessing | None = None) -> dict[str, WeightsFile]:
    """keras.applications' published ImageNet files, `<folder>/<name>_weights_tf_dim_ordering_tf_kernels[_notop].h5`."""
    base = f"{KERAS_APPLICATIONS_URL}{folder}/{name}_weights_tf_dim_ordering_tf_kernels"
    return {"imagenet": WeightsFile(f"{base}.h5", file_hash, f"{base}_notop.h5", notop_hash, top1=top1, source=source,
                                    licence=licence, preprocessing=preprocessing)}


TORCHVISION_URL = "https://download.pytorch.org/models/"
HF_TIMM_URL = "https://huggingface.co/timm/{model}.{tag}/resolve/main/model.safetensors"
TIMM_RESULTS = "timm results-imagenet.csv"
TV_LICENCE = "BSD-3-Clause"  # torchvision's weights, as timm's model cards record them
TIMM_LICENCE = "Apache-2.0"


def torchvision_checkpoint(tag: str, fname: str, weights_enum: str, top1: float, resize: int = 256,
                           input_size: int = 224, mode: str = "torch") -> Checkpoint:
    """A torchvision ImageNet file (`download.pytorch.org/models/FNAME`, FNAME `name-<sha256 prefix>.pth`),
    evaluated as torchvision's transforms do: resize to `resize`, centre-crop `input_size`, bilinear.
    `mode` "tf" where torchvision's builder sets transform_input=True for the weights (GoogLeNet): the
    model then turns its ImageNet-normalised input into x/127.5 - 1 first."""
    version = "IMAGENET1K_V2" if tag == "tv2_in1k" else "IMAGENET1K_V1"
    return Checkpoint(tag=tag, url=TORCHVISION_URL + fname, file_hash=fname.rsplit("-", 1)[1].split(".")[0],
                      origin="torchvision", licence=TV_LICENCE,
                      preprocessing=Preprocessing(mode, input_size, round(input_size / resize, 4), "bilinear"),
                      top1=top1, source=f"torchvision {weights_enum}.{version} meta acc@1")


def timm_checkpoint(model: str, tag: str, top1: float | None, crop_fraction: float, test_size: int = 288,
                    mode: str = "torch", input_size: int = 224, interpolation: str = "bicubic") -> Checkpoint:
    """A timm-trained file on the Hugging Face Hub (no published hash); preprocessing from its pretrained_cfg
    (`mode` "tf" for mean = std = 0.5), top-1 from timm's results table (measured at `test_size`)."""
    return Checkpoint(tag=tag, url=HF_TIMM_URL.format(model=model, tag=tag), file_hash=None, origin="timm",
                      licence=TIMM_LICENCE, preprocessing=Preprocessing(mode, input_size, crop_fraction, interpolation),
                      top1=top1, source=f"{TIMM_RESULTS} {model}.{tag} at {test_size}px")


def checkpoint_weights(*entries: Checkpoint, default: str | None = None) -> dict[str, Checkpoint]:
    """`DATASET:TAG` for each entry; an entry tagged `default` (when given) is plain `DATASET` instead."""
    defaults = {e.dataset: e for e in entries if e.tag == default}
    return {**defaults, **{f"{e.dataset}:{e.tag}": e for e in entries if e.tag != default}}


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
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise ArchitectureError(
            f"unknown architecture {arch!r}; {close_matches(arch, _REGISTRY)}"
        ) from None


def all_specs(family: str | None = None) -> list[ArchSpec]:
    return [s for s in _REGISTRY.values() if family is None or s.family == family]


def list_architectures(family: str | None = None) -> list[str]:
    return [s.id for s in all_specs(family)]


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
