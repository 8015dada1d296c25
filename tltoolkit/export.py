"""Exporting a trained classifier for serving, and proving the export works.

The exported model takes raw uint8 RGB images of ANY size, `[B, H, W, 3]` (TFLite: resize the input
tensor to the image's size), and returns [class probabilities `[B, classes]`, rejection score `[B]`]
at the model's temperature (`rejection.scored_model`; TFLite does not keep the outputs' order: tell
them apart by rank); `tta` averages both over the test-time augmentation views inside the graph. Its front end is a Keras `Resizing`
layer applying the run's resize policy: `center_crop` takes the largest centred window with the
model's aspect ratio, then resizes it (bilinear); `stretch` ignores the aspect ratio; `pad` letterboxes
with black. Unlike the training pipeline it does not antialias large reductions (TFLite's builtin ops
have no antialiased resize): give it images no more than ~2x the model's input size for the closest
match with training, or expect small differences on big photos.

`labels.txt` (one class name per line, in output order) travels with the model: inside a SavedModel
folder, beside a `.keras`, `.tflite` or `.onnx` file. So does a serving card (`serving.json` inside a
SavedModel folder, `NAME.tflite.json` beside `NAME.tflite`, and so on): what a server needs that the
graph cannot say — the outputs' order and meaning, the score kind and the threshold to answer "unknown"
below, the temperature already applied, the TTA inside, the model's input size and resize policy.

Every export is loaded back with its own runtime (Keras in safe mode, `tf.saved_model.load`, the TFLite
interpreter, onnxruntime) and compared with the Keras serving model on a few images, each at every size
of `verification_sizes` (the model's size, half of it, 2x, 4x and a non-square 1.5x by 3x); the export
fails on the largest probability difference above `TOLERANCES`, naming the size where it occurred.

int8 TFLite: pixels and activations are int8, calibrated on up to `REPRESENTATIVE_IMAGES` of the run's
training images, each resized to one of the verification sizes; the front end's float arithmetic on the
image's height and width (the crop or pad box) stays float. The converter's default quantises that
arithmetic too, with ranges from the calibration images' sizes, so larger images get a wrong crop box.
Measured by `python -m tests.int8_drift` (the export tests' 32x32 run; framed images whose class depends
on the crop), the default differed from Keras by 0.25 at 64x64 and 0.83 at 100x300 (another top-1
label), though 0.004 at 32x32; this export stays within 0.005 at every size from 16x16 to 3000x4000. So
one int8 file serves images of any size, as the other formats do: no resizing before calling it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from tltoolkit._keras_internals import tflite_ops
from tltoolkit.errors import TltoolkitError, one_line
from tltoolkit.inference.tta import check_tta

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float16", "int8", "dynamic")
SUFFIXES = {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx", "savedmodel": ""}
# Largest absolute probability difference from the Keras model accepted by the verification. float
# formats differ by float32 rounding (TFLite and ONNX Runtime fuse and reorder ops); float16 weights by
# their 3 significant digits; dynamic and int8 quantise weights (and int8 activations) to 8 bits.
TOLERANCES = {None: 1e-4, "float16": 1e-2, "dynamic": 0.05, "int8": 0.1}
EXACT_FORMATS_TOLERANCE = 1e-5  # keras and savedmodel run the same TF kernels
VERIFY_IMAGES = 6
# (height, width) factors of the model's input size that every export is verified at, and int8 calibrated at
VERIFY_SCALES = ((1, 1), (0.5, 0.5), (2, 2), (4, 4), (1.5, 3))
REPRESENTATIVE_IMAGES = 100


@dataclasses.dataclass
class ExportResult:
    path: Path
    labels: Path
    format: str
    quantize: str | None
    bytes: int
    images: int  # images the verification ran, each at every size of `sizes`
    sizes: list[tuple[int, int]]
    max_difference: float  # largest |export - keras| probability
    worst_size: tuple[int, int]  # where it occurred
    top1_agreement: float  # share of images (at all sizes) whose top class agrees
    tolerance: float
    tta: str = "none"
    rejection: dict | None = None  # the model's stored settings (rejection.rejection_of): the threshold to apply
    card: Path | None = None  # the serving card (`serving_card`)

    def rejection_line(self) -> str:
        if self.rejection is None:
            return "its second output is the maximum softmax probability (the model stores no threshold)"
        found = self.rejection
        return (f"its second output is the {found['score']} score: reject below {found['threshold']:.6g} (kept "
                f"{found['coverage']:.0%} of the validation images)")

    def summary(self) -> str:
        what = self.format + (f" ({self.quantize})" if self.quantize else "") + (
            f" with {self.tta} TTA inside" if self.tta != "none" else "")
        return (f"exported {what} to {self.path} ({self.bytes / 1e6:.2f} MB), labels in {self.labels}, serving "
                f"card in {self.card}; verified "
                f"on {self.images} images at sizes {', '.join(map(_hxw, self.sizes))}: max probability (and score) difference "
                f"{self.max_difference:.2e} at {_hxw(self.worst_size)} (tolerance {self.tolerance:g}), top-1 "
                f"agreement {self.top1_agreement:.0%}; {self.rejection_line()}")


def _hxw(size) -> str:
    return "x".join(map(str, size))


def serving_model(classifier, tta: str = "none"):
    """The classifier behind a resizing front end: uint8 `[B, H, W, 3]` of any size -> [probabilities,
    rejection score] (`rejection.scored_model`: the model's temperature and score kind), with `tta`'s
    views averaged inside the graph. Built from core Keras layers and tltoolkit's registered ones, so
    the `.keras` file loads in safe mode. The head's standardisation is folded into its first Dense
    layer (`fold_standardisation`, in place)."""
    import keras

    from tltoolkit.heads import fold_standardisation
    from tltoolkit.inference.tta import load_size
    from tltoolkit.inference.views import view_layers
    from tltoolkit.rejection import scored_model

    height, width = load_size(classifier.image_size, check_tta(tta))
    inputs = keras.Input((None, None, 3), dtype="uint8", name="image")
    # training=False is stored in the graph: Keras' image preprocessing layers default to training=True,
    # which would otherwise put every later layer (dropout, batch norm) in training mode on `model(x)`.
    x = keras.layers.Resizing(height, width, crop_to_aspect_ratio=classifier.resize == "center_crop",
                              pad_to_aspect_ratio=classifier.resize == "pad", name="resize")(inputs, training=False)
    if "int" in str(classifier.model.inputs[0].dtype):
        # The model casts its input to integers, which truncates: +0.5 makes that the pipeline's
        # rounding (bilinear resizing never leaves 0..255, so this cannot overflow).
        x = keras.layers.Rescaling(1.0, offset=0.5, name="round")(x)
    fold_standardisation(classifier.model)  # the same function, quantised better
    scored = scored_model(classifier.model)  # after the fold: it copies the classifier's Dense layer
    if tta == "none":
        outputs = scored(x, training=False)
    else:
        views, mean = view_layers(tta, classifier.image_size)
        probabilities, scores = scored(views(x), training=False)
        outputs = [mean(probabilities), mean(scores)]
    return keras.Model(inputs, outputs, name=f"{classifier.model.name}_serving")


def export(model_or_run, fmt: str, out, quantize: str | None = None, force: bool = False, data=None,
           verify_images: int = VERIFY_IMAGES, tta: str = "none") -> ExportResult:
    """Exports a run directory or `.keras` file (or a loaded Classifier) to `out` in `fmt`, writes
    labels.txt with it, verifies it and returns what was measured. `data` (class folders or a manifest)
    supplies images for int8 calibration and verification when the run has no snapshot.parquet. `tta`:
    the test-time augmentation views averaged inside the exported graph (`inference.tta`)."""
    from tltoolkit.inference.classifier import Classifier, load_classifier
    from tltoolkit.rejection import rejection_of

    if fmt not in FORMATS:
        raise TltoolkitError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise TltoolkitError(f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZATIONS)}")
    if quantize is not None and fmt != "tflite":
        raise TltoolkitError("--quantize applies to tflite exports; drop it or use --format tflite")
    check_tta(tta)
    if fmt == "onnx":
        _require_onnx()
    out = Path(out).expanduser()
    if SUFFIXES[fmt] and out.suffix != SUFFIXES[fmt]:
        raise TltoolkitError(f"a {fmt} export is a file ending in {SUFFIXES[fmt]}; got --out {out}")
    if fmt == "savedmodel" and out.suffix in (".keras", ".tflite", ".onnx", ".h5"):
        raise TltoolkitError(f"a savedmodel export is a folder; got --out {out}, which looks like a file name")
    classifier = model_or_run if isinstance(model_or_run, Classifier) else load_classifier(model_or_run)
    labels_path = out / "labels.txt" if fmt == "savedmodel" else out.parent / "labels.txt"
    labels_text = "".join(f"{name}\n" for name in classifier.class_names)
    card_path = out / "serving.json" if fmt == "savedmodel" else out.with_name(out.name + ".json")
    _check_targets(out, fmt, labels_path, labels_text, force, card_path)
    card_text = json.dumps(serving_card(classifier, fmt, quantize, tta), indent=2) + "\n"

    sizes = verification_sizes(classifier.image_size)
    if quantize == "int8":
        images = sample_images(classifier, data, REPRESENTATIVE_IMAGES, synthetic=False)
        calibration = [resize_image(image, sizes[i % len(sizes)]) for i, image in enumerate(images)]
    else:
        images, calibration = sample_images(classifier, data, verify_images), None
    serving = serving_model(classifier, tta)
    checked = [resize_image(image, size) for image in images[:verify_images] for size in sizes]
    # Before writing: the ONNX exporter also needs a model that has been called.
    expected = _keras_runner(serving)(checked)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = {"keras": _write_keras, "savedmodel": _write_savedmodel, "tflite": _write_tflite,
              "onnx": _write_onnx}[fmt]
    writer(serving, out, quantize, calibration, {"labels.txt": labels_text, "serving.json": card_text})
    if fmt != "savedmodel":
        from tltoolkit.data.files import atomic_write_bytes

        atomic_write_bytes(labels_path, labels_text.encode("utf-8"))
        atomic_write_bytes(card_path, card_text.encode("utf-8"))

    tolerance = EXACT_FORMATS_TOLERANCE if fmt in ("keras", "savedmodel") else TOLERANCES[quantize]
    difference, worst, agreement = verify(fmt, out, checked, expected, tolerance)
    return ExportResult(out, labels_path, fmt, quantize, _size(out), len(checked) // len(sizes), sizes,
                        difference, worst, agreement, tolerance, tta, rejection_of(classifier.model), card_path)


def serving_card(classifier, fmt: str, quantize: str | None, tta: str) -> dict:
    """What a server needs beside the graph: the outputs in order, the score kind and the threshold to
    answer "unknown" below (None when the model stores none: the score is then the maximum softmax
    probability at the model's temperature), the temperature the graph already applies, the TTA inside."""
    from tltoolkit.calibration import temperature_of
    from tltoolkit.inference.predict import unknown_answer
    from tltoolkit.rejection import DEFAULT_SCORE, rejection_of

    stored = rejection_of(classifier.model) or {}
    return {"format": fmt, "quantize": quantize, "tta": tta,
            "input": {"dtype": "uint8", "layout": "[batch, height, width, 3] RGB of any size",
                      "model_size": list(classifier.image_size), "resize": classifier.resize},
            "outputs": ["probabilities [batch, classes], in labels.txt order", "score [batch]: higher is more like "
                        "the training classes"],
            "labels": list(classifier.class_names),
            "temperature": float(stored.get("temperature", temperature_of(classifier.model))),
            "score": stored.get("score", DEFAULT_SCORE),
            "reject_below": None if stored.get("threshold") is None else float(stored["threshold"]),
            "coverage": None if stored.get("coverage") is None else float(stored["coverage"]),
            "unknown_answer": unknown_answer(classifier.class_names)}


def verification_sizes(image_size) -> list[tuple[int, int]]:
    """The (height, width) sizes every export is checked at: `VERIFY_SCALES` of the model's input size."""
    height, width = image_size
    return [(max(1, round(height * h)), max(1, round(width * w))) for h, w in VERIFY_SCALES]


def resize_image(image: np.ndarray, size) -> np.ndarray:
    """`image` resized to `size` (antialiased bilinear, as a camera or an image library would), uint8."""
    import tensorflow as tf

    resized = tf.image.resize(image, size, antialias=True).numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def verify(fmt: str, path: Path, images, expected, tolerance: float) -> tuple[float, tuple[int, int], float]:
    """Runs the export at `path` with its runtime on `images` and compares with `expected` (the Keras
    model's (probabilities [1, classes], score [1]) per image). Returns the largest difference (of a
    probability, or of the score relative to max(1, |score|): the energy score is a logit's size), the
    image size where it occurred and the top-1 agreement; a one-line TltoolkitError naming that size
    when the difference exceeds `tolerance`."""
    (actual, actual_scores), (expected, expected_scores) = (
        [np.concatenate(part) for part in zip(*outputs)] for outputs in (_runner(fmt, path)(images), expected))
    per_image = np.maximum(np.abs(actual - expected).max(axis=1),
                           np.abs(actual_scores - expected_scores) / np.maximum(1.0, np.abs(expected_scores)))
    worst = int(per_image.argmax())
    difference, size = float(per_image[worst]), tuple(images[worst].shape[:2])
    if difference > tolerance:
        raise TltoolkitError(f"the {fmt} export at {path} differs from the Keras model by {difference:.3g} on a "
                             f"{_hxw(size)} image (tolerance {tolerance:g}; checked at "
                             f"{', '.join(dict.fromkeys(_hxw(i.shape[:2]) for i in images))}); it was written but "
                             f"should not be trusted")
    return difference, size, float((actual.argmax(1) == expected.argmax(1)).mean())


def _require_onnx():
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        raise TltoolkitError("ONNX export needs tf2onnx and onnxruntime: pip install 'tltoolkit[onnx]'") from None


def _check_targets(out: Path, fmt: str, labels_path: Path, labels_text: str, force: bool, card_path: Path) -> None:
    for target in (out, card_path):
        if target.exists() and not force:
            raise TltoolkitError(f"{target} already exists; pass --force to replace it or choose another --out")
    if out.exists() and out.is_dir() != (fmt == "savedmodel"):
        kind = "folder" if out.is_dir() else "file"
        raise TltoolkitError(f"--out {out} is an existing {kind}; a {fmt} export cannot replace it, choose another path")
    if (labels_path.parent != out and labels_path.exists() and not force
            and labels_path.read_text(encoding="utf-8") != labels_text):
        raise TltoolkitError(f"{labels_path} exists with other labels; export into another folder or pass --force")


def sample_images(classifier, data=None, count: int = VERIFY_IMAGES, synthetic: bool = True) -> list[np.ndarray]:
    """Up to `count` uint8 images at their own sizes: the run's training images (snapshot.parquet),
    else the usable images of `data`, else (with `synthetic`) seeded random images of several sizes."""
    import pandas as pd

    from tltoolkit.pipeline import decode_image_file

    paths = []
    snapshot = classifier.run_dir / "snapshot.parquet" if classifier.run_dir else None
    if snapshot is not None and snapshot.is_file():
        table = pd.read_parquet(snapshot)
        train = table[table["split"] == "train"] if "split" in table.columns else table
        paths = [p for p in (train if len(train) else table)["path"] if os.path.isfile(p)]
    if not paths and data is not None:
        from tltoolkit.data import scan

        paths = scan(data, check=False).usable()["path"].tolist()
    if paths:
        chosen = np.random.default_rng(0).permutation(len(paths))[:count]
        return [decode_image_file(paths[i]) for i in sorted(chosen)]
    if not synthetic:
        raise TltoolkitError(f"int8 calibration needs real images: {classifier.source} has no snapshot.parquet with "
                             f"existing training images; pass --data with images like the training data")
    height, width = classifier.image_size
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height + 7 * i, width + 13 * (i % 3), 3), dtype=np.uint8) for i in range(count)]


# -- writers: each writes to a temporary path beside `out`, then renames it into place ----------------

def _replace(temporary: Path, out: Path) -> None:
    """Renames `temporary` onto `out`; an existing folder (only reached with --force) goes first."""
    if out.is_dir():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(temporary, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, out)


def _write_keras(serving, out, quantize, calibration, files):
    from tltoolkit.data.files import atomic_path

    with atomic_path(out, suffix=".keras") as temporary:  # Keras insists on the suffix
        serving.save(temporary)


def _write_savedmodel(serving, out, quantize, calibration, files):
    from tltoolkit.data.files import staging_folder

    with staging_folder(out.parent, out.name) as staging:
        target = staging / "model"
        serving.export(str(target), format="tf_saved_model", verbose=False)
        for name, text in files.items():  # inside the folder: one rename commits the set
            (target / name).write_text(text, encoding="utf-8")
        _replace(target, out)


def _write_tflite(serving, out, quantize, calibration, files):
    import tensorflow as tf

    from tltoolkit.data.files import atomic_write_bytes

    with tempfile.TemporaryDirectory() as folder:
        serving.export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        try:
            flat = _convert_int8(converter, calibration) if quantize == "int8" else converter.convert()
        except Exception as error:  # the converter raises ConverterError and plain exceptions
            raise TltoolkitError(f"TFLite conversion failed: {one_line(error)}") from None
    atomic_write_bytes(out, flat)


def _convert_int8(converter, calibration) -> bytes:
    """int8 pixels and activations, calibrated on `calibration` (ops without an int8 kernel stay float),
    with the float arithmetic on the image's height and width kept float: quantised, its ranges would
    be those of the calibration images' sizes, and larger images would get a wrong crop box."""
    import tensorflow as tf

    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    with warnings.catch_warnings():  # the debugger's tf.lite.Interpreter deprecation notice
        warnings.simplefilter("ignore")
        # The converter's own selective quantisation: calibrate once, then quantise all but the denylisted ops.
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                             debug_dataset=converter.representative_dataset)
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=_size_arithmetic(debugger.calibrated_model) + _head_ops(debugger.calibrated_model))
        return debugger.get_nondebug_quantized_model()


def _head_ops(flat: bytes) -> list[str]:
    """The output names of the classifier head's ops (pooling, standardisation, Dense layers, softmax):
    a few thousand multiply-adds, kept float so that neither the pooled features nor the logits are
    rounded to 8 bits (the base's convolutions, nearly all of the compute, stay int8)."""
    from tltoolkit.heads import HEAD_LAYER_PREFIX, PREDICTIONS

    interpreter = _interpreter(model_content=flat)
    names = [tensor["name"] for tensor in interpreter.get_tensor_details() if tensor["dtype"] == np.float32]
    return [name for name in names if f"/{PREDICTIONS}" in name or f"/{HEAD_LAYER_PREFIX}" in name]


def _size_arithmetic(flat: bytes) -> list[str]:
    """The output names of the float ops in the TFLite model `flat` that compute on the input's shape
    (through SHAPE) and constants, never on its pixels."""
    interpreter = _interpreter(model_content=flat)
    tensors = {tensor["index"]: tensor for tensor in interpreter.get_tensor_details()}
    from_pixels = {detail["index"] for detail in interpreter.get_input_details()}
    names = []
    for op in tflite_ops(interpreter):
        if op["op_name"] != "SHAPE" and from_pixels.intersection(op["inputs"]):
            from_pixels.update(op["outputs"])
        else:
            names += [tensors[i]["name"] for i in op["outputs"] if tensors[i]["dtype"] == np.float32]
    return names


def _write_onnx(serving, out, quantize, calibration, files):
    from tltoolkit.data.files import atomic_path

    with atomic_path(out, suffix=".onnx") as temporary:
        serving.export(temporary, format="onnx", verbose=False)


# -- loading an export back ------------------------------------------------------------------------------

def _runner(fmt: str, path: Path):
    """A function: list of uint8 images -> list of (probabilities [1, classes], score [1]), one image at
    a time (their sizes differ), with the runtime that serves `fmt`."""
    if fmt == "keras":
        from tltoolkit.architectures import load_model

        return _keras_runner(load_model(path))
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda images: [_as_outputs(loaded.serve(image[None])) for image in images]
    if fmt == "tflite":
        return _tflite_runner(path)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: [_as_outputs(session.run(None, {name: image[None]})) for image in images]


def _as_outputs(outputs) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, score) of an export's two outputs, told apart by rank (TFLite does not keep their
    order), as float32 arrays."""
    probabilities, score = sorted((np.asarray(o, np.float32) for o in outputs), key=np.ndim, reverse=True)
    return probabilities, score


def _keras_runner(model):
    """The Keras model as a compiled graph, as `predict` and a SavedModel run it (eager execution
    fuses fewer ops, so it differs from any graph by float rounding, ~1e-5)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    return lambda images: [_as_outputs(forward(image[None])) for image in images]


def _interpreter(**source):
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice, not the user's concern
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(**source)


def _tflite_runner(path):
    interpreter = _interpreter(model_path=str(path))
    (input_detail,), output_details = interpreter.get_input_details(), interpreter.get_output_details()

    def run(images):
        outputs = []
        for image in images:
            interpreter.resize_tensor_input(input_detail["index"], [1, *image.shape])
            interpreter.allocate_tensors()
            interpreter.set_tensor(input_detail["index"], image[None])
            interpreter.invoke()
            outputs.append(_as_outputs(interpreter.get_tensor(d["index"]) for d in output_details))
        return outputs

    return run


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
