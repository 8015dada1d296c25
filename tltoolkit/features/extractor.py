"""The frozen part of a network as an extraction model, and the `FeatureSpec` that names its features.

The extraction model is raw 0..255 pixels -> [augmentation, for views] -> the architecture's
preprocessing -> the base up to the cut layer -> [global pooling]. It runs as one `tf.function`
(on this 2-core machine `model.predict` on NumPy arrays ran ResNet-50 at ~0.65x the rate of a
`tf.function` call on the same tensors; `predict_on_batch` and a tf.function are on par, see
benchmarks/extraction.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from tltoolkit.architectures.registry import ArchSpec, Checkpoint
from tltoolkit.architectures.stages import PENULTIMATE, cut_layer
from tltoolkit.errors import TltoolkitError
from tltoolkit.heads import GLOBAL_POOLINGS

DTYPES = ("float16", "float32")
TF_FP32 = {"runtime": "tf", "precision": "fp32"}  # tltoolkit.runtimes' identity of the default runtime
CALIBRATION_IMAGES = 300  # int8: images of the user's own that the quantisation's statistics come from
FIDELITY_IMAGES = 32  # off fp32: images the features are compared with TensorFlow fp32's on
KEY_VERSION = 1  # bump when the meaning of stored features changes: every old key then misses
# Penultimate layers that are a global pooling of the last stage's output (every registered avg_pool is
# common.pooled_head's GlobalAveragePooling2D of base_output; VGG's fc2, LeNet's fc1 and NiN's block4_mlp1
# are not): `penultimate` then builds and keys as that stage pooled, the no-top model finetune's phase 1 uses.
POOLED_PENULTIMATE = {"avg_pool": "avg"}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Everything stored features depend on; `key()` hashes it.

    `weights` identifies the weights by content: `imagenet:<published file hash>`, `sha256:<hex>` of a
    weights file, or `random-init:<seed>` for weights=None (the model is then built right after
    `keras.utils.set_random_seed(seed)`, which makes the initialisation reproducible). `cut` is the
    layer whose output is stored; `views` > 0 stores that many augmented views per image, drawn by
    `augmentation` (an `tltoolkit.augment` policy) seeded with `seed`; 0 stores the image as is.
    The random draws follow the order of the images extracted, so a run over the same table
    reproduces its views, while a resumed or incremental run draws fresh (equally valid) views for
    the images it adds. `runtime`: the `tltoolkit.runtimes` identity of the runtime the features were
    computed on (runtime, precision, versions, int8 calibration hashes); None is TensorFlow fp32,
    left out of the key so that every key made before runtimes existed still hits.
    """

    arch: str
    weights: str
    image_size: tuple[int, int]
    resize: str
    preprocessing: str
    cut: str
    pooling: str | None
    dtype: str
    views: int = 0
    augmentation: str | None = None
    seed: int = 0
    runtime: dict | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise TltoolkitError(f"unknown feature dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.views < 0 or (self.views > 0) != (self.augmentation is not None):
            raise TltoolkitError(f"views={self.views} with augmentation={self.augmentation!r}: augmented "
                                 f"views need both a count >= 1 and an augmentation policy")
        if self.runtime == TF_FP32:  # the default, however it was spelled
            object.__setattr__(self, "runtime", None)

    def to_json(self) -> dict:
        data = {**dataclasses.asdict(self), "image_size": list(self.image_size), "key_version": KEY_VERSION}
        if self.runtime is None:
            del data["runtime"]
        return data

    def key(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True)
        return f"{self.arch}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"

    @property
    def view_count(self) -> int:
        """Rows stored per image: the plain image counts as one view."""
        return max(self.views, 1)


@dataclasses.dataclass
class FeatureExtractor:
    """The extraction model and the `FeatureSpec` that keys its features."""

    model: object  # keras.Model: raw pixels in, features out
    spec: FeatureSpec
    base: object  # the full keras.Model the cut was taken from (for `stages.tail_model`)
    augmentation: object = None  # for views: random layers on raw pixels, run in training mode
    runtime: object = None  # a tltoolkit.runtimes.RuntimeModel of `model`, when not TensorFlow fp32

    def __post_init__(self):
        from tltoolkit.runtimes import traced_for_any_batch

        def features(images):
            if self.augmentation is not None:
                images = self.augmentation(images, training=True)
            # The base (BatchNormalization included) always runs in inference mode.
            return self.model(images, training=False)

        self._call = traced_for_any_batch(features, self.model)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.model.output.shape[1:])

    def __call__(self, images) -> np.ndarray:
        if self.runtime is not None:
            return self.runtime(np.asarray(images))
        return self._call(images).numpy()


def feature_extractor(arch, weights=None, image_size=None, layer: str = PENULTIMATE, pooling=None,
                      dtype: str = "float32", resize: str = "center_crop", preprocessing: str | None = None,
                      views: int = 0, augmentation: str | None = None, seed: int = 0, runtime: str = "tf",
                      precision: str = "fp32", calibration=None, batch_size: int = 32,
                      progress: bool = True) -> FeatureExtractor:
    """Builds the extraction model for `arch` and the spec that keys its features.

    `arch`: a registry id, `keras:NAME`, the path of a saved `.keras` base, or the `ArchSpec` that
    `tltoolkit.architectures.bases.resolve_base` made of one of them (see there).
    `weights`: None (random init after `keras.utils.set_random_seed(seed)`: reproducible), `imagenet`
    (a saved model: its own weights) or a weights file. `layer`: `penultimate` (for `keras:NAME` and a
    saved base: their output, average-pooled unless `pooling="max"`; where it is the global pooling of
    the last stage, `POOLED_PENULTIMATE`: that stage pooled on the no-top model, keyed as finetune's
    phase 1 keys it), a stage (its output) or a layer
    name (its output; see `cut_layer`). `pooling`: None keeps a stage's feature map (what a
    later fine-tune of the next stages needs), `avg`/`max` pool it to a vector. `preprocessing`: a
    mode overriding the base's (required for a saved model). `views` > 0: that many views per image
    through the `augmentation` policy, seeded with `seed`. `runtime`/`precision`: what the forward pass
    runs on (`tltoolkit.runtimes.compile_runtime`, compiled for `batch_size` images); int8 calibrates on
    a seeded sample of `CALIBRATION_IMAGES` of `calibration`, a scan's table (the user's own images);
    `progress`: the calibration's progress bars (on stderr).
    """
    import keras

    from tltoolkit.architectures import build
    from tltoolkit.architectures.bases import build_base, cache_name, resolve_base
    from tltoolkit.architectures.preprocessing import preprocessing_layer
    from tltoolkit.pipeline import RESIZE_POLICIES, _image_size

    if pooling not in (None, *GLOBAL_POOLINGS):
        raise TltoolkitError(f"unknown pooling {pooling!r}; use avg, max or none")
    if resize not in RESIZE_POLICIES:
        raise TltoolkitError(f"unknown resize policy {resize!r}; use one of {', '.join(RESIZE_POLICIES)}")
    if views and runtime != "tf":
        raise TltoolkitError(f"--views runs its augmentation on TensorFlow; drop --runtime {runtime} or --views")
    spec = arch if isinstance(arch, ArchSpec) else resolve_base(arch, image_size, preprocessing, weights)
    arch = spec.id
    if layer == PENULTIMATE and pooling is None and not spec.derived and spec.penultimate in POOLED_PENULTIMATE:
        # The same numbers as the top model's pooling layer: one cache entry with finetune's phase 1.
        layer, pooling = spec.stage_names[-1], POOLED_PENULTIMATE[spec.penultimate]
    size = _image_size(image_size or spec.default_size)
    if weights is None:
        keras.utils.set_random_seed(seed)
    if spec.derived:
        model = build_base(spec, weights, size)
    else:
        model = build(arch, weights=weights, include_top=layer == PENULTIMATE, input_shape=(*size, spec.channels))
    cut = cut_layer(model, spec, layer)
    weights_id = _weights_id(model, spec, weights, seed, cut)
    features = model.get_layer(cut).output
    if layer == PENULTIMATE and spec.derived and pooling is None and len(features.shape) == 4:
        pooling = "avg"  # penultimate means a vector: keras.applications' pooling="avg" (a stage keeps its map)
    if pooling and len(features.shape) != 4:
        raise TltoolkitError(f"{arch} layer {cut} outputs vectors already; drop --pooling (it pools feature maps)")
    truncated = keras.Model(model.inputs, features, name=f"{cache_name(spec)}_to_{cut}")

    augment = None
    if views:
        from tltoolkit.augment import augmentation as augmentation_block

        augment = augmentation_block(augmentation, image_size=size, seed=seed)
    inputs = keras.Input((*size, 3), name="pixels")  # RGB pixels, whatever the base takes
    x = preprocessing_layer(preprocessing or spec.preprocessing, channels=spec.channels)(inputs)
    x = truncated(x)
    if pooling:
        x = (keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D)(
            name=f"{pooling}_pool_features")(x)
    extraction = keras.Model(inputs, x, name=f"{cache_name(spec)}_features")
    compiled = None
    if (runtime, precision) != (TF_FP32["runtime"], TF_FP32["precision"]):
        from tltoolkit.runtimes import compile_runtime

        images, hashes = (None, None) if calibration is None else sample_images(
            calibration, CALIBRATION_IMAGES, size, resize, seed)
        compiled = compile_runtime(extraction, runtime, precision, batch_size,
                                   None if images is None else [images], hashes, progress)
    feature_spec = FeatureSpec(arch=cache_name(spec), weights=weights_id, image_size=size, resize=resize,
                               preprocessing=preprocessing or spec.preprocessing, cut=cut, pooling=pooling,
                               dtype=dtype, views=views, augmentation=augmentation if views else None,
                               seed=seed if views else 0,  # random weights: their seed is in the weights id
                               runtime=compiled.identity if compiled else None)
    return FeatureExtractor(extraction, feature_spec, model, augment, compiled)


def runtime_arguments(runtime: str, precision: str, table, batch_size: int, progress: bool = True) -> dict:
    """`feature_extractor`'s runtime arguments for a job over `table` (a scan's table; int8 calibrates
    on a seeded sample of it): what `extract` and `finetune` (phase 1 and its cut cache) pass."""
    calibration = None
    if precision == "int8":  # only the columns sampling needs: what a Ray actor is sent
        calibration = table[[c for c in ("path", "sha256", "label", "status", "decoder") if c in table.columns]]
    return dict(runtime=runtime, precision=precision, batch_size=batch_size, calibration=calibration,
                progress=progress)


def runtime_fidelity(extractor: FeatureExtractor, table, seed: int) -> str:
    """`tltoolkit.runtimes.fidelity` of the extractor's runtime on a seeded sample of `FIDELITY_IMAGES`
    of `table`, held out from the int8 calibration images (all of `table` when none is left: said so)."""
    from tltoolkit.features.local import prepared
    from tltoolkit.runtimes import fidelity

    spec = extractor.spec
    calibration = set(spec.runtime.get("calibration", []))
    held_out = not prepared(table)["sha256"].isin(calibration).all()
    images, _ = sample_images(table, FIDELITY_IMAGES, spec.image_size, spec.resize, seed,
                              calibration if held_out else ())
    summary = fidelity(extractor.runtime, extractor.model, images).summary()
    return summary + ("" if held_out else " (on calibration images: none held out)")


def sample_images(table, count: int, image_size, resize: str, seed: int, exclude=()) -> tuple[np.ndarray, list[str]]:
    """A seeded sample of at most `count` of `table`'s usable images (a scan's table; those whose
    sha256 is in `exclude` left out), decoded as extraction decodes them, and their sha256."""
    from tltoolkit.features.local import prepared
    from tltoolkit.pipeline import image_dataset

    table = prepared(table)
    table = table[~table["sha256"].isin(set(exclude))]
    if table.empty:
        raise TltoolkitError("no images left to sample; pass a scan's table with usable images")
    rows = table.sample(n=min(count, len(table)), random_state=seed).reset_index(drop=True)
    dataset = image_dataset(rows, image_size, 64, resize=resize, dtype="float32", with_labels=False,
                            deterministic=True)
    return np.concatenate([images.numpy() for images in dataset]), rows["sha256"].tolist()


def _weights_id(model, spec, weights, seed: int, cut: str) -> str:
    from tltoolkit.architectures.weights import IMAGENET, file_digest, has_reference_top, is_published, weights_entry

    if weights is None:
        return f"random-init:{seed}"
    if not is_published(weights):
        return f"sha256:{file_digest(weights, 'sha256')}"
    if spec.derived:
        # keras.applications checked its download against the published hash; a saved model's weights
        # are in the file that cache_name hashes. Either way the loaded values name them exactly.
        return f"{IMAGENET}:weights-sha256:{weights_digest(model)}"
    entry = weights_entry(spec, weights)
    with_top = has_reference_top(model, spec, entry.num_classes)
    names = [layer.name for layer in model.layers]
    head = names[names.index(spec.base_output) + 1:]
    up_to_cut = head[:head.index(cut) + 1] if cut in head else []
    if not with_top and any(model.get_layer(name).weights for name in up_to_cut):
        raise TltoolkitError(f"{spec.id}'s {cut} layer is in the classifier, whose ImageNet weights fit only "
                             f"{spec.default_size}x{spec.default_size} input; use --image-size "
                             f"{spec.default_size} or cut at a stage (--layer {spec.stage_names[-1]} --pooling avg)")
    if isinstance(entry, Checkpoint):
        from tltoolkit.architectures.weights import published_id

        return published_id(entry)
    # get_file checked the published hash of the file that was loaded: it names the weights exactly.
    return f"imagenet:{entry.file_hash if with_top else entry.notop_hash}"


def weights_digest(model) -> str:
    """SHA-256 of a model's weight values and shapes, in order."""
    digest = hashlib.sha256()
    for value in model.get_weights():
        digest.update(str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
