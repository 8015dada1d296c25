"""Stages of a built model: layer ranges by position, freezing, trainable counts per freeze point.

A stage is the contiguous run of `model.layers` from its first layer up to the next stage's first
layer. Stages are found by the position of their first layer's (exact, unique) name, never by name
prefix: `block1`/`block14` and `mixed1`/`mixed10` collide, and some inner layers are unnamed.
Keras 3 orders `model.layers` topologically, so "every layer before stage S" is exactly what runs
before S.
"""

from __future__ import annotations

import dataclasses

import keras

from tltoolkit.architectures.registry import HEAD, NONE, ArchitectureError, close_matches


@dataclasses.dataclass(frozen=True)
class StageRange:
    name: str
    start: int  # index in model.layers of the stage's first layer
    stop: int  # one past its last layer

    def layers(self, model: keras.Model) -> list:
        return model.layers[self.start:self.stop]


def stage_ranges(model: keras.Model, stages) -> list[StageRange]:
    """Each (stage, first layer) resolved to its layer range; what follows the last stage is `head`.

    Layers before the first stage (the input, and any preprocessing a caller put in front) belong to
    no stage and stay frozen whenever anything is frozen.
    """
    index = {layer.name: i for i, layer in enumerate(model.layers)}
    starts = []
    for stage, first in stages:
        if first not in index:
            raise ArchitectureError(f"stage {stage!r}: layer {first!r} is not in model {model.name!r}")
        starts.append(index[first])
    if starts != sorted(starts):
        raise ArchitectureError(f"stages of {model.name!r} are out of layer order: {list(zip(stages, starts))}")
    names = [stage for stage, _ in stages]
    ends = starts[1:] + [None]
    ranges = [StageRange(n, s, e) for n, s, e in zip(names, starts, ends)]
    # The last stage ends where the base ends: at its output layer if the model has a head.
    return ranges


def split_last_stage(model: keras.Model, ranges: list[StageRange], base_output: str) -> list[StageRange]:
    """Closes the last stage at `base_output` and adds the `head` range (possibly empty)."""
    index = {layer.name: i for i, layer in enumerate(model.layers)}
    end = index[base_output] + 1 if base_output in index else len(model.layers)
    last = ranges[-1]
    return ranges[:-1] + [StageRange(last.name, last.start, end), StageRange(HEAD, end, len(model.layers))]


def freeze_index(ranges: list[StageRange], until: str) -> int:
    """Index of the first trainable layer for `--freeze-until until`."""
    if until == NONE:
        return 0
    for r in ranges:
        if r.name == until:
            return r.start
    valid = [r.name for r in ranges] + [NONE]
    raise ArchitectureError(
        f"unknown stage {until!r}; valid stages: {', '.join(valid)} ({close_matches(until, valid)})"
    )


def freeze_until(model: keras.Model, ranges: list[StageRange], until: str) -> int:
    """Freezes every layer before stage `until`; that stage and all after it train.

    Frozen BatchNormalization layers run in inference mode in Keras 3 (trainable=False implies it),
    so their moving statistics stay those of the pretrained weights. Keras applies `trainable`
    changes at the next `compile()`: callers must (re)compile after this. Returns the index of the
    first trainable layer.
    """
    first = freeze_index(ranges, until)
    model.trainable = True
    for i, layer in enumerate(model.layers):
        layer.trainable = i >= first
    return first


def trainable_count(model: keras.Model) -> int:
    return sum(int(v.numpy().size) for v in model.trainable_weights)


def trainable_counts_per_stage(model: keras.Model, ranges: list[StageRange]) -> dict[str, int]:
    """The trainable parameter count if frozen until each stage (and `none`), without touching the model.

    Computed from per-layer trainable-variable counts: the count at stage S is the sum over layers
    from S's first layer on.
    """
    per_layer = [sum(int(v.numpy().size) for v in layer.trainable_weights) for layer in model.layers]
    suffix = [0] * (len(per_layer) + 1)
    for i in range(len(per_layer) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + per_layer[i]
    counts = {NONE: suffix[0]}
    for r in ranges:
        counts[r.name] = suffix[r.start]
    return counts
