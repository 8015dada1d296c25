"""Running a frozen Keras model (the feature extractor) on another CPU runtime or precision, and measuring
what that costs in fidelity against TensorFlow fp32.

    runtime = compile_runtime(extractor.model, "openvino", "bf16", batch_size=32)
    features = runtime(images)              # any number of images: padded/split to the compiled batch
    runtime.identity                        # goes into the feature-cache key: fp32 and bf16 never mix
    fidelity(runtime, extractor.model, images).summary()

`tf` runs the model as one `tf.function` (fp32 only). `openvino` converts that same function with
`openvino.convert_model` (a Keras 3 model converts directly too, but is then called without
`training=False`) and compiles it for the CPU with
- `INFERENCE_PRECISION_HINT` always set: OpenVINO's CPU default is bf16 where the CPU has it, so an
  unset hint would silently run "fp32" in bf16 (measured: 2.4e-3 relative difference on ResNet-20);
- the `LATENCY` hint: one synchronous request then uses every core. (`THROUGHPUT` with one synchronous
  request ran one stream on one core, 0.68x TensorFlow; /work/shared/reference/cpu-runtimes.md.)
- a static batch: `predict` pads the last, smaller batch instead of recompiling for its shape.
int8 is NNCF's post-training quantisation (weights and activations), calibrated on the caller's images;
the operations it leaves in float run in f32. A precision the CPU cannot run natively (OpenVINO's
`OPTIMIZATION_CAPABILITIES` lacks it; `TLTOOLKIT_CPU_CAPABILITIES=FP32,INT8` pretends a CPU without
BF16) is refused rather than emulated slowly (`check_runtime`: callers run it before any other work),
and the precision that actually ran is read back from the compiled model into the identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from tltoolkit.errors import TltoolkitError

RUNTIMES = ("tf", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
INSTALL = "pip install 'tltoolkit[fast-cpu]'"
# OpenVINO's name for the float precision each of ours computes in, and the CPU capability it needs.
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
CAPABILITIES = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}
CAPABILITIES_VARIABLE = "TLTOOLKIT_CPU_CAPABILITIES"


@dataclasses.dataclass(frozen=True)
class RuntimeModel:
    """`predict(images) -> features` on a runtime, and what identifies its features for a cache key."""

    predict: Callable[[np.ndarray], np.ndarray]
    identity: dict

    def __call__(self, images) -> np.ndarray:
        return self.predict(images)


def compile_runtime(model, runtime: str = "tf", precision: str = "fp32", batch_size: int = 32,
                    calibration: Iterable[np.ndarray] | None = None,
                    calibration_hashes: Sequence[str] | None = None, progress: bool = True) -> RuntimeModel:
    """`model` (a functional keras.Model with one image input) on `runtime` at `precision`.

    `batch_size`: the batch OpenVINO compiles for (extraction's batch; any batch size is accepted).
    int8 only: `calibration`, batches of images as the model takes them (a few hundred images of the
    user's own, chosen by the caller), and `calibration_hashes`, one sha256 per image in the same order:
    they go into the identity. `progress`: NNCF's progress bars on stderr (off: silent).
    """
    check_runtime(runtime, precision)
    if precision == "int8" and (calibration is None or calibration_hashes is None):
        raise TltoolkitError("precision int8 needs calibration images and their sha256 hashes")
    if precision != "int8" and (calibration is not None or calibration_hashes is not None):
        raise TltoolkitError(f"calibration images are for precision int8 only, not {precision}")
    if runtime == "tf":
        function = _tf_function(model)
        return RuntimeModel(lambda images: function(images).numpy(), {"runtime": "tf", "precision": "fp32"})
    if batch_size < 1:
        raise TltoolkitError(f"batch size must be positive, got {batch_size}")
    return _openvino(model, precision, batch_size, calibration, calibration_hashes, progress)


def check_runtime(runtime: str, precision: str) -> None:
    """What `compile_runtime` checks before any work, cheap enough to call before scanning a folder or
    creating a cache: known names, the extra installed, a precision the CPU runs natively."""
    if runtime not in RUNTIMES:
        raise TltoolkitError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise TltoolkitError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if runtime == "tf":
        if precision != "fp32":
            raise TltoolkitError(f"precision {precision} runs on OpenVINO: add --runtime openvino "
                                 f"(installed by {INSTALL})")
        return
    _require("openvino", "--runtime openvino")
    if precision == "int8":
        _require("nncf", "--precision int8")
    check_native(precision, cpu_capabilities())


def cpu_capabilities() -> list[str]:
    """OpenVINO's `OPTIMIZATION_CAPABILITIES` of this CPU (FP32, BF16, INT8, ...); the environment
    variable `CAPABILITIES_VARIABLE` (comma-separated) replaces them, to try a CPU without, say, BF16."""
    import os

    override = os.environ.get(CAPABILITIES_VARIABLE)
    if override is not None:
        return [name.strip().upper() for name in override.split(",") if name.strip()]
    return list(_require("openvino", "--runtime openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _tf_function(model):
    """The model as one `tf.function` traced once for every batch size, in inference mode."""
    return traced_for_any_batch(lambda images: model(images, training=False), model)


def traced_for_any_batch(function, model):
    """`function` of a batch of `model`'s inputs as a `tf.function` with one trace for every batch size
    (the last batch is smaller: a second trace would cost a fresh process about a batch's extraction)."""
    import tensorflow as tf

    inputs = model.inputs[0]
    return tf.function(function, input_signature=[tf.TensorSpec((None, *inputs.shape[1:]), inputs.dtype)])


def _require(package: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise TltoolkitError(f"{purpose} needs the {package} package: {INSTALL}") from None


def check_native(precision: str, capabilities: Sequence[str]) -> None:
    """Refuses a precision that the CPU (OpenVINO's `OPTIMIZATION_CAPABILITIES`) cannot run natively."""
    if CAPABILITIES[precision] not in capabilities:
        raise TltoolkitError(f"precision {precision}: this CPU has no native {CAPABILITIES[precision]} "
                             f"(OpenVINO reports {', '.join(capabilities)}); use --precision fp32")


def _openvino(model, precision: str, batch_size: int, calibration, calibration_hashes, progress) -> RuntimeModel:
    from importlib.metadata import version

    import openvino

    core = openvino.Core()
    converted = openvino.convert_model(_tf_function(model))
    identity = {"runtime": "openvino", "precision": precision, "openvino": version("openvino")}
    if precision == "int8":
        converted = _quantized(converted, calibration, calibration_hashes, progress)
        identity.update(nncf=version("nncf"), bias_correction="full", calibration=list(calibration_hashes))
    converted.reshape([batch_size, *model.inputs[0].shape[1:]])
    compiled = core.compile_model(converted, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[precision]})
    ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if ran != INFERENCE_PRECISIONS[precision]:
        raise TltoolkitError(f"precision {precision}: OpenVINO compiled the model in {ran}, not "
                             f"{INFERENCE_PRECISIONS[precision]}; use --precision fp32")
    identity["inference_precision"] = ran
    request = compiled.create_infer_request()

    def infer(images: np.ndarray) -> np.ndarray:
        # Copied: the request reuses its output buffer on the next call.
        return request.infer([images])[compiled.output(0)].copy()

    return RuntimeModel(_in_batches(infer, batch_size), identity)


def _in_batches(infer, batch_size: int):
    """`infer` on exactly `batch_size` images, as a function of any number of images."""

    def predict(images) -> np.ndarray:
        images = np.asarray(images)
        outputs = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            missing = batch_size - len(chunk)
            if missing:
                chunk = np.concatenate([chunk, np.zeros((missing, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(infer(chunk)[:batch_size - missing])
        return np.concatenate(outputs)

    return predict


def _quantized(converted, calibration, hashes, progress: bool):
    """NNCF's post-training int8 quantisation of the converted model, its statistics taken image by
    image (one dataset item per image: `subset_size` then counts images, whatever the caller's batches).
    Full bias correction, not NNCF's fast one: with the fast one a head fit on the embedded ResNet-20's
    int8 features of the animals scored 0.61 as the (fp32) saved model, against 0.81 fit on fp32 ones;
    with the full one 0.78 (`benchmarks/results/cpu_runtime.md`, downstream)."""
    import contextlib
    import io
    import logging
    import sys

    import nncf

    images = [image[None] for batch in calibration for image in np.asarray(batch)]
    if not images or len(images) != len(hashes):
        raise TltoolkitError(f"int8 calibration: {len(images)} images but {len(hashes)} hashes; pass one "
                             "sha256 per calibration image (a few hundred of the user's own)")
    # NNCF draws its progress bars with rich on sys.stdout (the command's output): moved to stderr, or
    # dropped with its log lines when progress is off.
    logger = logging.getLogger("nncf")
    level = logger.level
    try:
        if not progress:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
            return nncf.quantize(converted, nncf.Dataset(images), subset_size=len(images), fast_bias_correction=False)
    finally:
        logger.setLevel(level)


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """How close a runtime's features are to TensorFlow fp32's on the same images."""

    images: int
    cosine_mean: float
    cosine_min: float
    max_relative_difference: float  # largest |features - reference| over the largest |reference|

    def summary(self) -> str:
        return (f"features vs TensorFlow fp32 on {self.images} images: cosine mean {self.cosine_mean:.6f}, "
                f"min {self.cosine_min:.6f}; max difference {self.max_relative_difference:.2e} of the largest feature")


def compare_features(features: np.ndarray, reference: np.ndarray) -> Fidelity:
    """Per-image cosine similarity of the (flattened) features with the reference's, and their largest
    difference relative to the reference's largest value."""
    features = np.asarray(features, np.float64).reshape(len(features), -1)
    reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if features.shape != reference.shape or not len(features):
        raise TltoolkitError(f"features {features.shape} and reference {reference.shape} must be the same "
                             "non-empty shape")
    norms = np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1)
    dots = np.sum(features * reference, axis=1)
    # Two zero vectors agree; one zero vector against a non-zero one does not.
    both_zero = ~features.any(axis=1) & ~reference.any(axis=1)
    cosine = np.where(both_zero, 1.0, dots / np.where(norms > 0, norms, 1.0))
    scale = np.abs(reference).max()
    difference = np.abs(features - reference).max()
    relative = difference / scale if scale else (np.inf if difference else 0.0)
    return Fidelity(len(features), float(cosine.mean()), float(cosine.min()), float(relative))


def fidelity(runtime: RuntimeModel, model, images) -> Fidelity:
    """`runtime`'s features against TensorFlow fp32's (`model` run as `tf.function`) on `images`."""
    reference = compile_runtime(model, "tf", "fp32")(images)
    return compare_features(runtime(images), reference)
