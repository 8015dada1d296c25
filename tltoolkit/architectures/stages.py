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

from tltoolkit._keras_internals import nodes_by_depth, producer
from tltoolkit.architectures.registry import HEAD, NONE, ArchitectureError, close_matches
from tltoolkit.errors import TltoolkitError, one_line

PENULTIMATE = "penultimate"  # the layer a classifier reads: the base's feature vector


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


def cut_points(model: keras.Model) -> list[int]:
    """Indices in `model.layers` of the layers whose output is the single live tensor of the graph:
    nothing after them reads anything computed before them, so their output alone determines the
    rest (a valid feature-cache cut; a residual block's inner layers are not)."""
    if isinstance(model, keras.Sequential):
        return list(range(len(model.layers)))
    operations = model.operations  # model.layers plus non-layer ops, in the same topological order
    position = {id(op): i for i, op in enumerate(operations)}
    last_read = list(range(len(operations)))
    for nodes in nodes_by_depth(model).values():
        for node in nodes:
            reader = position.get(id(node.operation))
            for tensor in node.input_tensors:
                source = position.get(id(producer(tensor)))
                if reader is not None and source is not None:
                    last_read[source] = max(last_read[source], reader)
    for tensor in model.outputs:
        last_read[position[id(producer(tensor))]] = len(operations)
    layer_index = {id(layer): i for i, layer in enumerate(model.layers)}
    cuts, read_later = [], -1
    for i, op in enumerate(operations):
        if id(op) in layer_index and _single_output(op) and read_later <= i:
            cuts.append(layer_index[id(op)])
        read_later = max(read_later, last_read[i])
    return cuts


def _single_output(layer) -> bool:
    try:
        return not isinstance(layer.output, (list, tuple, dict))
    except (AttributeError, ValueError):  # a layer called several times has no single output
        return False


def _output_shape(layer) -> tuple:
    return tuple(getattr(layer.output, "shape", ()))


def _area(layer) -> int | None:
    shape = _output_shape(layer)
    return shape[1] * shape[2] if len(shape) == 4 and None not in shape[1:3] else None


def graph_stages(model: keras.Model) -> tuple[tuple[str, str], ...]:
    """`stage1`..`stageN` of a model we did not register, derived from its graph.

    A new stage begins at each downsampling: a cut point (`cut_points`) whose feature map has at most
    half the area of the current stage's (a "valid" convolution's trim is no drop). The stage starts
    at the first layer with trainable weights that computes at the new size, or rather right after the
    narrowest cut point (fewest channels, the latest on a tie) of the run of consecutive cut points
    before that layer: the previous block's output, so an inverted-residual block (MobileNetV2,
    EfficientNet) starts with its expansion and a pooling layer (VGG, DenseNet's transitions) ends
    the stage before. VGG16 gives block1..block5 and ResNet50 conv1..conv5 exactly (by trainable
    parameters). Returns (stage name, first layer name) pairs, as registered specs have them.
    """
    layers = model.layers
    cuts = cut_points(model)
    cut_set = set(cuts)
    trainable = [i for i, layer in enumerate(layers) if layer.trainable_weights]
    if not trainable:
        return ()

    def boundary(first: int, floor: int) -> int:
        """The index the stage whose first trained layer is `first` starts at."""
        end = max(c for c in cuts if c < first)
        run = [end]
        while run[-1] - 1 in cut_set and run[-1] - 1 >= floor:
            run.append(run[-1] - 1)
        return min(run, key=lambda c: (_output_shape(layers[c])[-1:], -c)) + 1

    starts = [boundary(trainable[0], 0)]
    previous_first, level, previous_cut = trainable[0], _area(layers[0]), 0
    for c in cuts[1:]:
        area = _area(layers[c])
        if area is not None and level is not None and 2 * area <= level:
            level = area
            first = next((i for i in trainable if i > previous_cut and _area(layers[i]) == area), None)
            if first is not None and first > previous_first:
                start = boundary(first, previous_first)
                if start > starts[-1]:
                    starts.append(start)
                    previous_first = first
        previous_cut = c
    return tuple((f"stage{k}", layers[start].name) for k, start in enumerate(starts, start=1))


def check_cut_layer(model: keras.Model, name: str, starts: bool = False) -> int:
    """The index of layer `name` when its output is a valid cut (`cut_points`), or with `starts` when the
    output of the layer before it is (everything from `name` on trains; the frozen part ends in one
    tensor). Otherwise a one-line error listing the valid layers."""
    cuts = cut_points(model)
    valid = [c + 1 for c in cuts if c + 1 < len(model.layers)] if starts else cuts[1:]  # not the input
    names = [model.layers[i].name for i in valid]
    if name in names:
        return valid[names.index(name)]
    known = any(layer.name == name for layer in model.layers)
    what = "is inside a block: later layers also read tensors from before it" if known else "is not a layer of it"
    if known and starts:
        what = "starts inside a block: layers after it also read tensors from before it"
    shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
    kind = "layers to train from" if starts else "cut layers"
    raise ArchitectureError(f"{name!r} of {model.name!r} {what}; valid {kind}: {shown}")


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


# -- model surgery: where to cut, and what follows the cut --------------------------------------------

def cut_layer(model, spec, layer: str) -> str:
    """The name of the layer whose output `layer` means: `penultimate` is the spec's feature layer (a
    derived spec's: the base's output); a stage name is that stage's last layer (so `block4` is
    block4's output, the input of block5); any other name must be a layer whose output alone
    determines the rest (`cut_points`)."""
    if layer == PENULTIMATE:
        return model.layers[-1].name if spec.derived else spec.penultimate
    ranges = {r.name: r for r in spec_stage_ranges(model, spec) if r.name in spec.stage_names}
    if layer in ranges:
        return model.layers[ranges[layer].stop - 1].name
    try:
        return model.layers[check_cut_layer(model, layer)].name
    except TltoolkitError as error:
        raise TltoolkitError(f"{spec.id} has no stage {layer!r} (stages: {PENULTIMATE}, "
                             f"{', '.join(spec.stage_names)}), and as a layer: {error}") from None


def tail_model(model, cut: str, name: str | None = None):
    """The part of `model` after layer `cut`, as a Functional model taking `cut`'s output (cached
    features) and sharing `model`'s layers: cache block4, then train block5 + head on the cache.

    Raises when a layer after the cut also reads a tensor from before it (e.g. a cut inside a
    residual block): those features alone do not determine the rest.
    """
    try:
        features = model.get_layer(cut).output
    except ValueError:
        raise TltoolkitError(f"{model.name} has no layer {cut!r}") from None
    try:
        return keras.Model(features, model.outputs, name=name or f"{model.name}_after_{cut}")
    except ValueError as error:
        raise TltoolkitError(f"{model.name} cannot be cut at {cut}: the layers after it also read earlier "
                             f"tensors ({one_line(error, 160)}); cut at a stage boundary") from error
