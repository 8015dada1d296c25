"""What trains: `--freeze-until` resolved once (`resolve_freeze`), and the growth policy's candidates.

`--freeze-until auto` decides by trying (see `finetune.py`): the head alone, then the last stage, the
last two, ... up to the whole network, each trained on the training split and scored on validation,
within a budget; the best is kept (a costlier candidate only where it beats the cheaper one by more than
the validation split's noise). The budget is counted in epochs of the full model (`budget_epochs`:
the time budget converted once, with the epoch's estimated cost), so a run tries the same candidates
for the same epochs on a busy machine as on an idle one. Where the budget allows no trial (a very large folder), for
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
# A small folder's phase 1 takes a second or two: its trials get at least this many full-model epochs
# (a fair trial and an early stop for each candidate), unless they would take longer than MAX_FLOOR_SECONDS.
MIN_POLICY_EPOCHS = 80
MAX_FLOOR_SECONDS = 300.0
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


def budget_epochs(policy_budget: float, phase1_seconds: float, epoch_seconds: float) -> int:
    """The trials' budget in full-model training epochs: `policy_budget` x phase 1's cost over an epoch's
    (both measured on the same machine, so their ratio does not move with its load); at least
    MIN_POLICY_EPOCHS where those take under MAX_FLOOR_SECONDS."""
    epoch_seconds = max(epoch_seconds, 1e-9)
    floor = min(MIN_POLICY_EPOCHS, MAX_FLOOR_SECONDS / epoch_seconds)
    return int(max(policy_budget * phase1_seconds / epoch_seconds, floor))


def trial_epochs(left: int, recipes) -> int | None:
    """Epochs the next candidate may train with `left` epochs of the budget left; `recipes`: its recipe
    and those of the candidates after it. Its share is in proportion to its fair trial (warm-up and one
    patience: the from-scratch recipe's is longer), at least that fair trial, at most its recipe's
    maximum; None (not tried) when its fair trial does not fit. A candidate that stops early leaves its
    unused epochs to the next."""
    recipe = recipes[0]
    if recipe.fair_trial > left:
        return None
    share = left * recipe.fair_trial // max(sum(r.fair_trial for r in recipes), 1)
    return min(recipe.epochs, max(share, recipe.fair_trial))


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
