"""The growth policy: how much of the pretrained network to train, from how much labelled data there is.

The course's rule of thumb (little data: train only a new softmax; more: train the later stages too;
a lot: train everything, the weights only initialise), with documented thresholds on the training
images per class (the smallest class decides: it is the one a big network overfits first):

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
HEAD = "head"
NONE = "none"


@dataclasses.dataclass(frozen=True)
class Decision:
    freeze_until: str  # a stage name, `head` or `none`, as `--freeze-until` takes it
    trained_stages: tuple[str, ...]  # the base's stages that train, in order
    reason: str  # one sentence for the report and the console


def check_thresholds(thresholds: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(thresholds)
    if len(values) != 3 or any(not isinstance(v, int) or v < 1 for v in values) or list(values) != sorted(set(values)):
        raise TltoolkitError(f"policy_thresholds must be three increasing positive integers like "
                             f"{list(DEFAULT_THRESHOLDS)}; got {list(values)}")
    return values


def choose_stages(images_per_class: int, stages: Sequence[str],
                  thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> Decision:
    """The stages to train for `images_per_class` training images in the smallest class."""
    low, mid, high = check_thresholds(thresholds)
    stages = tuple(stages)
    if not stages:
        raise TltoolkitError("the base has no stages to choose from; pass --freeze-until with a layer name")
    count = f"{images_per_class:,} images/class"
    if images_per_class < low:
        return Decision(HEAD, (), f"{count} < {low:,}: training the head only")
    if images_per_class >= high:
        return Decision(NONE, stages, f"{count} ≥ {high:,}: training the whole network and the head")
    n = 1 if images_per_class < mid else 2
    trained = stages[-n:]
    bound = f"≥ {low:,}" if n == 1 else f"≥ {mid:,}"
    return Decision(trained[0], trained, f"{count} {bound}: training {' and '.join(trained)} and the head")


def stages_from(freeze_until: str, stages: Sequence[str]) -> tuple[str, ...]:
    """The stages `--freeze-until freeze_until` trains (a layer name inside a stage counts from its stage
    onward only when it is a stage name; otherwise the caller reports the layer)."""
    stages = tuple(stages)
    if freeze_until == HEAD:
        return ()
    if freeze_until == NONE:
        return stages
    return stages[stages.index(freeze_until):] if freeze_until in stages else ()
