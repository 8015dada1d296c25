"""Comparing architectures the way the course does: accuracy against operations and memory.

For each architecture: parameters and GMACs at the default size (the registry's pinned counts, checked
against built models by the registry tests), activation memory per image (the sum of every layer's
output, float32) and forward latency (batch 1) and throughput (a larger batch) measured on this
machine with random weights: a few warm-up calls, then the median of timed calls of a compiled
forward pass. ImageNet top-1 is the published number of the registry's weights, with its source.

`quick=True` builds and times the models at a small input (64x64, or the architecture's minimum) and
batch 4, so a handful of full-size architectures finish in well under a minute on 2 CPU cores; the
activation memory is then at that size (the `input` column says which).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd

from tltoolkit.errors import TltoolkitError

QUICK_SIZE = 64
QUICK_BATCH = 4
BATCH = 32
WARMUP_CALLS = 2
TIMED_CALLS = 3  # VGG16 at batch 32 takes ~15 s a call on 2 CPU cores


def compare(archs, quick: bool = False, timed_calls: int | None = None, batch_size: int | None = None) -> pd.DataFrame:
    """One row per architecture: id, params, GMACs, input, activation_MB, latency_ms (batch 1),
    throughput (images/s at `batch_size`), batch, top1 (fraction or NaN), top1_source."""
    from tltoolkit.architectures import get_spec

    if not archs:
        raise TltoolkitError("name the architectures to compare, e.g. --compare vgg16 googlenet resnet50")
    specs = [get_spec(arch) for arch in dict.fromkeys(archs)]  # unknown ids fail before any build
    timed_calls = timed_calls or TIMED_CALLS
    batch_size = batch_size or (QUICK_BATCH if quick else BATCH)
    return pd.DataFrame([_measure(spec, quick, timed_calls, batch_size) for spec in specs])


def _measure(spec, quick, timed_calls, batch_size) -> dict:
    import keras

    from tltoolkit.architectures import build
    from tltoolkit.architectures.profile import activation_bytes

    size = max(QUICK_SIZE, spec.min_size) if quick else spec.default_size
    keras.utils.clear_session(free_memory=True)  # one model at a time in memory
    model = build(spec.id, input_shape=(size, size, spec.channels))
    published = [w for w in spec.weights.values() if w.top1 is not None and w.dataset == "imagenet"]
    best = max(published, key=lambda w: w.top1) if published else None
    return {
        "id": spec.id,
        "params": spec.params,
        "GMACs": spec.macs,
        "input": f"{size}x{size}",
        "activation_MB": activation_bytes(model) / 2**20,
        "latency_ms": 1000 * _median_seconds(model, 1, size, spec.channels, timed_calls),
        "throughput": batch_size / _median_seconds(model, batch_size, size, spec.channels, timed_calls),
        "batch": batch_size,
        "top1": best.top1 if best else np.nan,
        "top1_source": best.source if best else "",
    }


def _median_seconds(model, batch, size, channels, calls) -> float:
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False))
    return median_seconds(forward, tf.random.uniform((batch, size, size, channels), 0, 255, seed=0), calls)


def median_seconds(function, inputs, calls: int, warmup: int = WARMUP_CALLS) -> float:
    """The median wall time of `function(inputs)` (a tensor out) over `calls`, after `warmup` calls
    (tracing and allocation)."""
    for _ in range(warmup):
        function(inputs).numpy()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function(inputs).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def comparison_figure(table: pd.DataFrame):
    """The accuracy-vs-operations bubble chart: x = GMACs, y = ImageNet top-1 (or parameters where a
    model has no published top-1), bubble area proportional to parameters."""
    from matplotlib.figure import Figure

    with_top1 = table["top1"].notna().all()
    y = table["top1"] * 100 if with_top1 else table["params"] / 1e6
    figure = Figure(figsize=(8, 5.5))
    axes = figure.add_subplot()
    area = 2000 * table["params"] / table["params"].max()
    colours = [f"C{i % 10}" for i in range(len(table))]
    axes.scatter(table["GMACs"], y, s=area, c=colours, alpha=0.5, edgecolors="black", linewidths=0.6)
    for row, value, size in zip(table.itertuples(index=False), y, area):
        # just above the bubble: a marker's size is its area in points^2
        axes.annotate(f"{row.id} ({row.params / 1e6:.1f}M)", (row.GMACs, value), xytext=(0, size ** 0.5 / 2 + 3),
                      textcoords="offset points", ha="center", fontsize=8)
    axes.set_xlabel("operations (GMACs per image at the default size)")
    axes.set_ylabel("ImageNet top-1 accuracy (%)" if with_top1 else "parameters (millions)")
    if with_top1:
        axes.set_title("Accuracy vs operations (bubble area = parameters)")
    else:
        missing = ", ".join(table.loc[table["top1"].isna(), "id"])
        axes.set_title("Parameters vs operations (bubble area = parameters)")
        figure.text(0.01, 0.01, f"no published ImageNet top-1 for {missing}, so the y axis is parameters",
                    fontsize=8, color="dimgray")
    axes.margins(0.15)
    axes.grid(alpha=0.3)
    return figure
