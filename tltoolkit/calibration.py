"""Calibrated probabilities: temperature scaling (Guo et al. 2017, *On Calibration of Modern Neural
Networks*), the expected calibration error and a reliability diagram.

    logits = logits_model(model).predict(val_images)
    t = fit_temperature(logits, val_labels)                 # one scalar, minimises the validation NLL
    calibrated = with_temperature(model, t)                 # softmax(logits / t): every export carries t
    expected_calibration_error(softmax(logits, t), labels)  # before (t=1) and after

The temperature lives inside the model: `with_temperature` rebuilds a classifier ending in
`Dense(softmax)` (directly, or inside nested models, as finetune saves them) so that its `predictions`
Dense layer returns logits (same weights) and a `Temperature` layer after it computes the softmax.
Dividing the logits changes no prediction (the argmax is the same), only the confidence.
"""

from __future__ import annotations

import keras
import numpy as np

from tltoolkit._keras_internals import history, inbound_nodes
from tltoolkit.errors import TltoolkitError

ECE_BINS = 15  # Guo et al.'s choice; also what most reported ECE numbers use
LOG_T_RANGE = (np.log(0.05), np.log(20.0))  # temperatures outside it mean a broken model, not calibration
TEMPERATURE_LAYER = "temperature"


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, "float64") / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logsumexp(z: np.ndarray) -> np.ndarray:
    """log(sum(exp(z))) over the last axis, without overflow."""
    peak = z.max(axis=-1)
    return peak + np.log(np.exp(z - peak[..., None]).sum(axis=-1))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    z = np.asarray(logits, "float64") / temperature
    return float(np.mean(logsumexp(z) - z[np.arange(len(z)), np.asarray(labels, int)]))


def _check_labelled(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = np.asarray(logits, "float64"), np.asarray(labels, int)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise TltoolkitError(f"need [N, classes] scores and N labels, got {logits.shape} and {labels.shape}; "
                             f"calibrate on a non-empty labelled split")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise TltoolkitError(f"labels must be class ids 0..{logits.shape[1] - 1}, got {labels.min()}..{labels.max()}")
    return logits, labels


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of `labels` under softmax(logits / T). The NLL is convex in
    1/T, so it is unimodal in log T: golden-section search over log T finds the minimum without
    derivatives or a starting point (80 steps shrink the bracket below 1e-15). A minimum at the edge of
    `LOG_T_RANGE` (e.g. every validation image right and confident: T -> 0) stops at the edge."""
    logits, labels = _check_labelled(logits, labels)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = LOG_T_RANGE
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = (negative_log_likelihood(logits, labels, np.exp(u)) for u in (a, b))
    for _ in range(80):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(logits, labels, np.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(logits, labels, np.exp(b))
    return float(np.exp((low + high) / 2))


def calibration_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS):
    """Per equal-width confidence bin ((m-1)/M, m/M]: (count, accuracy, mean confidence); empty bins
    have accuracy and confidence NaN. Confidence is the top probability, accuracy whether it is right."""
    probabilities, labels = _check_labelled(probabilities, labels)
    if bins < 1:
        raise TltoolkitError(f"need at least 1 bin, got {bins}")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, correct, minlength=bins) / counts
        mean_confidence = np.bincount(index, confidence, minlength=bins) / counts
    return counts, accuracy, mean_confidence


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of |B|/N * |accuracy(B) - confidence(B)| (Naeini et al. 2015, Guo et al. 2017)."""
    counts, accuracy, confidence = calibration_bins(probabilities, labels, bins)
    used = counts > 0
    return float(np.sum(counts[used] / counts.sum() * np.abs(accuracy[used] - confidence[used])))


def reliability_diagram(probabilities: dict[str, np.ndarray] | np.ndarray, labels: np.ndarray, path,
                        bins: int = ECE_BINS, title: str = "Reliability") -> float:
    """Writes a PNG (atomically) of accuracy per confidence bin against the diagonal, one series per
    entry of `probabilities` (e.g. {"before": p, "after": q}), each labelled with its ECE. Returns the
    last series' ECE."""
    from matplotlib.figure import Figure

    from tltoolkit.reports import save_figure

    series = probabilities if isinstance(probabilities, dict) else {"model": probabilities}
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.add_subplot()
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    width = 1.0 / bins
    centres = (np.arange(bins) + 0.5) * width
    ece = float("nan")
    for i, (name, probs) in enumerate(series.items()):
        counts, accuracy, _ = calibration_bins(probs, labels, bins)
        ece = expected_calibration_error(probs, labels, bins)
        shown = counts > 0
        offset = (i - (len(series) - 1) / 2) * width / len(series)
        axis.bar(centres[shown] + offset, accuracy[shown], width=width / len(series), alpha=0.7,
                 label=f"{name} (ECE {ece:.3f})")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy", title=title)
    axis.legend(loc="upper left", fontsize=8)
    save_figure(figure, path)
    return ece


# -- the temperature inside the model ---------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tltoolkit")
class Temperature(keras.layers.Layer):
    """logits -> softmax(logits / temperature), in float32 (under mixed precision too)."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not temperature > 0:
            raise TltoolkitError(f"a temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def call(self, logits):
        return keras.ops.softmax(keras.ops.cast(logits, "float32") / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def _output_node(model):
    """The layer producing `model`'s output(s) (one call of one layer) and the node of that call."""
    producers = {(id(history(t)[0]), history(t)[1]) for t in model.outputs}
    if len(producers) != 1:
        raise TltoolkitError(f"{model.name} has {len(model.outputs)} outputs from different layers; temperature "
                             f"scaling needs a classifier with one probabilities output")
    operation, node_index, _ = history(model.outputs[0])
    return operation, inbound_nodes(operation)[node_index]


def replace_softmax(model, head=None):
    """`model` rebuilt (sharing every layer but the last) so that its final softmax classifier feeds
    logits to `head` (a layer; None: the logits are the output). The classifier is a `Dense(softmax)`
    layer, directly or inside nested models (each rebuilt), or the logits of an earlier
    `replace_softmax` (a `Temperature` layer or a subclass, which is replaced)."""
    operation, node = _output_node(model)
    (tensor,) = node.input_tensors
    if isinstance(operation, keras.Model):
        outputs = replace_softmax(operation, head)(tensor)
    elif isinstance(operation, Temperature):
        outputs = head(tensor) if head is not None else tensor
    elif isinstance(operation, keras.layers.Dense) and operation.get_config()["activation"] == "softmax":
        dense = keras.layers.Dense.from_config({**operation.get_config(), "activation": "linear"})
        logits = dense(tensor)
        dense.set_weights(operation.get_weights())
        outputs = head(logits) if head is not None else logits
    else:
        raise TltoolkitError(f"{model.name} ends in {type(operation).__name__} {operation.name!r}, not a Dense "
                             f"softmax classifier; temperature scaling needs the logits")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a list of one would warn on every call
    return keras.Model(inputs, outputs, name=model.name)


def logits_model(model):
    """`model` returning the logits its softmax (and temperature) would turn into probabilities."""
    return replace_softmax(model, None)


def with_temperature(model, temperature: float):
    """An equivalent of `model` whose probabilities are softmax(logits / temperature)."""
    return replace_softmax(model, Temperature(temperature, name=TEMPERATURE_LAYER))


def find_layer(model, kind):
    """The first layer of type `kind` in `model` or its nested models, or None."""
    for layer in model.layers:
        found = find_layer(layer, kind) if isinstance(layer, keras.Model) else None
        if found is not None or isinstance(layer, kind):
            return found or layer
    return None


def temperature_of(model) -> float:
    """The temperature a model carries (1.0: none)."""
    layer = find_layer(model, Temperature)
    return layer.temperature if layer is not None else 1.0
