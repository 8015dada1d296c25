import pytest

from tltoolkit.errors import TltoolkitError
from tltoolkit.training.policy import DEFAULT_THRESHOLDS, choose_stages, stages_from

VGG = ("block1", "block2", "block3", "block4", "block5")


@pytest.mark.parametrize("count, until, trained", [
    (0, "head", ()), (99, "head", ()), (100, "block5", ("block5",)), (999, "block5", ("block5",)),
    (1_000, "block4", ("block4", "block5")), (9_999, "block4", ("block4", "block5")), (10_000, "none", VGG)])
def test_default_thresholds(count, until, trained):
    decision = choose_stages(count, VGG)
    assert (decision.freeze_until, decision.trained_stages) == (until, trained)
    assert stages_from(decision.freeze_until, VGG) == trained


def test_reason_reads_like_the_report():
    assert choose_stages(1_840, ("conv1", "conv2", "conv3", "conv4", "conv5"), (100, 1_000, 100_000)).reason == (
        "1,840 images/class ≥ 1,000: training conv4 and conv5 and the head")
    assert choose_stages(150, VGG).reason == "150 images/class ≥ 100: training block5 and the head"
    assert choose_stages(12, VGG).reason == "12 images/class < 100: training the head only"


def test_thresholds_can_be_overridden_and_are_checked():
    assert choose_stages(5, VGG, (2, 4, 8)).trained_stages == ("block4", "block5")
    assert DEFAULT_THRESHOLDS == (100, 1_000, 10_000)
    for bad in [(10, 5, 20), (1, 2), (0, 1, 2), (1, 1, 2), ("a", 2, 3)]:
        with pytest.raises(TltoolkitError, match="policy_thresholds"):
            choose_stages(5, VGG, bad)


def test_a_single_stage_base_trains_everything_it_has():
    assert choose_stages(5_000, ("conv1",)).trained_stages == ("conv1",)
