"""Stages of a built model: layer ranges by position, freezing, trainable counts per freeze point.

A stage is the contiguous run of `model.layers` from its first layer up to the next stage's first
layer. Stages are found by the position of their first layer's (exact, unique) name, never by name
prefix: `block1`/`block14` and `mixed1`/`mixed10` collide, and some inner layers are unnamed.
Keras 3 orders `model.layers` topologically, so "every layer before stage S" is exactly what runs
before S.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from tltoolkit.architectures.registry import HEAD, NONE, ArchitectureError, close_matches


@dataclasses.dataclass(frozen=True)
class StageRange:
    name: str
    start: int  # index in model.layers of the stage's first layer
    stop: int  # one past its last layer

    def layers(self, model: keras.Model) -> list:
        return model.layers[self.start:self.stop]


def stage_ranges(model: keras.Model, stages, base_output: str | None = None) -> list[StageRange]:
    """Each (stage, first layer) resolved to its layer range, then the `head` range (maybe empty).

    The last stage ends at `base_output` (the base's last layer); everything after it is the head.
    Layers before the first stage (the input, and any preprocessing a caller put in front) belong
    to no stage and stay frozen whenever anything is frozen.
    """
    index = {layer.name: i for i, layer in enumerate(model.layers)}
    starts = []
    for stage, first in stages:
        if first not in index:
            raise ArchitectureError(f"stage {stage!r}: layer {first!r} is not in model {model.name!r}")
        starts.append(index[first])
    if starts != sorted(starts):
        raise ArchitectureError(f"stages of {model.name!r} are out of layer order: {list(zip(stages, starts))}")
    head_start = index[base_output] + 1 if base_output in index else len(model.layers)
    ranges = [StageRange(stage, start, stop)
              for (stage, _), start, stop in zip(stages, starts, starts[1:] + [head_start])]
    return ranges + [StageRange(HEAD, head_start, len(model.layers))]


def spec_stage_ranges(model: keras.Model, spec) -> list[StageRange]:
    return stage_ranges(model, spec.stages, spec.base_output)


def freeze_index(model: keras.Model, ranges: list[StageRange], until: str) -> int:
    """Index of the first trainable layer for `--freeze-until until`.

    `until` is a stage name, `head` (train only what follows the base), `none` (train everything)
    or, for models without registered stages, the name of the first layer to train.
    """
    if until == NONE:
        return 0
    for r in ranges:
        if r.name == until:
            return r.start
    for i, layer in enumerate(model.layers):
        if layer.name == until:
            return i
    valid = [r.name for r in ranges] + [NONE]
    raise ArchitectureError(
        f"unknown stage {until!r}; valid stages: {', '.join(valid)} (or a layer name of {model.name!r}; "
        f"{close_matches(until, valid + [layer.name for layer in model.layers])})"
    )


def freeze_until(model: keras.Model, ranges: list[StageRange], until: str) -> int:
    """Freezes every layer before `until`; that stage and all after it train.

    Frozen BatchNormalization layers run in inference mode in Keras 3 (trainable=False implies it),
    so their moving statistics stay those of the pretrained weights. Keras applies `trainable`
    changes at the next `compile()`: callers must (re)compile after this. Returns the index of the
    first trainable layer.
    """
    first = freeze_index(model, ranges, until)
    model.trainable = True
    for i, layer in enumerate(model.layers):
        layer.trainable = i >= first
    return first


def trainable_count(model: keras.Model) -> int:
    return sum(math.prod(v.shape) for v in model.trainable_weights)


def trainable_counts_per_stage(model: keras.Model, ranges: list[StageRange]) -> dict[str, int]:
    """The trainable parameter count if frozen until each stage (and `none`), without touching the model.

    The count at stage S is the sum of trainable variables over the layers from S's first layer on;
    call it on a model as built (every layer trainable).
    """
    per_layer = [sum(math.prod(v.shape) for v in layer.trainable_weights) for layer in model.layers]
    suffix = [0] * (len(per_layer) + 1)
    for i in range(len(per_layer) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + per_layer[i]
    counts = {NONE: suffix[0]}
    for r in ranges:
        counts[r.name] = suffix[r.start]
    return counts
