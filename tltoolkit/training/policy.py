"""What trains: `--freeze-until` resolved once (`resolve_freeze`), and the growth policy's candidates.

`--freeze-until auto` decides by trying (see `finetune.py`): the head alone, then the last stage, the
last two, ... up to the whole network, each trained on the training split and scored on validation,
within a time budget; the best is kept. Where the budget allows no trial (a very large folder), for
`--plan` and without validation images, the course's rule of thumb decides instead, with documented
thresholds on the training images per class (the smallest class decides: it is the one a big network
overfits first):

    images/class   trains
    < 100          the head only (the base is frozen)
    < 1,000        the last stage and the head
    < 10,000       the last two stages and the head
    >= 10,000      the whole network

Override the thresholds with the config key `policy_thresholds` (three increasing numbers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tltoolkit.errors import TltoolkitError

DEFAULT_THRESHOLDS = (100, 1_000, 10_000)
# A small folder's phase 1 takes a second or two: its trials get at least this long (a few epochs each).
MIN_POLICY_SECONDS = 120.0
AUTO = "auto"
HEAD = "head"
NONE = "none"


@dataclasses.dataclass(frozen=True)
class Decision:
    freeze_until: str  # a stage name, a layer name, `head` or `none`, as `--freeze-until` takes it
    trained_stages: tuple[str, ...]  # the base's stages that train (wholly or in part), in order
    first_trained: int | None  # index in base.layers of the first layer that trains; None: the head only
    reason: str  # one sentence for the report and the console


def check_thresholds(thresholds: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(thresholds)
    if len(values) != 3 or any(not isinstance(v, int) or v < 1 for v in values) or list(values) != sorted(set(values)):
        raise TltoolkitError(f"policy_thresholds must be three increasing positive integers like "
                             f"{list(DEFAULT_THRESHOLDS)}; got {list(values)}")
    return values


def prior_freeze_point(images_per_class: int, stages: Sequence[str],
                       thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> tuple[str, str]:
    """The rule of thumb: (freeze point, why) for `images_per_class` training images in the smallest class."""
    low, mid, high = check_thresholds(thresholds)
    stages = tuple(stages)
    if not stages:
        raise TltoolkitError("the base has no stages to choose from; pass --freeze-until with a layer name")
    count = f"{images_per_class:,} images/class"
    if images_per_class < low:
        return HEAD, f"{count} < {low:,}"
    if images_per_class >= high:
        return NONE, f"{count} ≥ {high:,}"
    n = 1 if images_per_class < mid else 2
    return stages[-n:][0], f"{count} ≥ {low:,}" if n == 1 else f"{count} ≥ {mid:,}"


def candidates(stages: Sequence[str]) -> list[str]:
    """The freeze points auto tries, cheapest first: head, the last stage, the last two, ..., everything."""
    stages = tuple(stages)
    return [HEAD, *reversed(stages[1:]), NONE]


def resolve_freeze(until: str, spec, base, reason: str = "") -> Decision:
    """What `--freeze-until until` trains on `base` (the built base of `spec`): `head`, `none`, a stage
    (it and everything after it), or a layer name after which the frozen part's output is one tensor
    (that layer and everything after it). Unknown names: a one-line error listing what is valid."""
    from tltoolkit.architectures.stages import check_cut_layer, freeze_index, spec_stage_ranges

    ranges = [r for r in spec_stage_ranges(base, spec) if r.name in spec.stage_names]
    if until == HEAD:
        first = None
    elif until == NONE or until in spec.stage_names:
        first = freeze_index(base, ranges, until)
    elif any(layer.name == until for layer in base.layers[1:]):
        first = check_cut_layer(base, until, starts=True)  # the frozen part must end in one tensor
    else:
        valid = ", ".join((AUTO, HEAD, NONE, *spec.stage_names))
        raise TltoolkitError(f"unknown stage {until!r} for {spec.id}; valid: {valid}, or a layer name "
                             f"(`tltoolkit layers {spec.id} --all-layers`)")
    trained = () if first is None else tuple(r.name for r in ranges if r.stop > first)
    if first is None:
        what = "the head only"
    elif until in spec.stage_names or until == NONE:
        what = f"{' and '.join(trained)} and the head"
    else:
        what = f"layer {until} on (in {' and '.join(trained)}) and the head"
    return Decision(until, trained, first, f"{reason or f'--freeze-until {until}'}: training {what}")
