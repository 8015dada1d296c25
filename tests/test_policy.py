import pytest

from tltoolkit.architectures import build, get_spec
from tltoolkit.errors import TltoolkitError
from tltoolkit.training.policy import DEFAULT_THRESHOLDS, candidates, prior_freeze_point, resolve_freeze

VGG = ("block1", "block2", "block3", "block4", "block5")


@pytest.mark.parametrize("count, until", [
    (0, "head"), (99, "head"), (100, "block5"), (999, "block5"), (1_000, "block4"), (9_999, "block4"),
    (10_000, "none")])
def test_the_prior_follows_the_default_thresholds(count, until):
    assert prior_freeze_point(count, VGG)[0] == until


def test_the_prior_says_why():
    assert prior_freeze_point(1_840, ("conv1", "conv2", "conv3", "conv4", "conv5"), (100, 1_000, 100_000)) == (
        "conv4", "1,840 images/class ≥ 1,000")
    assert prior_freeze_point(12, VGG) == ("head", "12 images/class < 100")


def test_thresholds_can_be_overridden_and_are_checked():
    assert prior_freeze_point(5, VGG, (2, 4, 8))[0] == "block4"
    assert DEFAULT_THRESHOLDS == (100, 1_000, 10_000)
    for bad in [(10, 5, 20), (1, 2), (0, 1, 2), (1, 1, 2), ("a", 2, 3)]:
        with pytest.raises(TltoolkitError, match="policy_thresholds"):
            prior_freeze_point(5, VGG, bad)


def test_auto_tries_the_head_then_one_more_stage_at_a_time():
    assert candidates(VGG) == ["head", "block5", "block4", "block3", "block2", "none"]
    assert candidates(("conv1",)) == ["head", "none"]


@pytest.fixture(scope="module")
def resnet20():
    spec = get_spec("resnet20_cifar")
    return spec, build(spec.id, include_top=False, input_shape=(32, 32, 3))


def test_one_resolution_for_stages_keywords_and_layers(resnet20):
    spec, base = resnet20
    head = resolve_freeze("head", spec, base)
    assert (head.trained_stages, head.first_trained) == ((), None)
    assert head.reason == "--freeze-until head: training the head only"
    everything = resolve_freeze("none", spec, base)
    assert everything.trained_stages == spec.stage_names and everything.first_trained == 0
    conv4 = resolve_freeze("conv4", spec, base, "why")
    assert conv4.trained_stages == ("conv4",) and conv4.reason == "why: training conv4 and the head"
    assert base.layers[conv4.first_trained].name == dict(spec.stages)["conv4"]
    layer = resolve_freeze("conv4_block2_1_conv", spec, base)  # a block's first layer: after a cut point
    assert layer.trained_stages == ("conv4",) and layer.first_trained > conv4.first_trained
    assert "layer conv4_block2_1_conv on (in conv4)" in layer.reason


def test_unknown_or_unusable_names_are_one_line_errors(resnet20):
    spec, base = resnet20
    with pytest.raises(TltoolkitError, match="unknown stage 'block5' for resnet20_cifar; valid: auto, head, none"):
        resolve_freeze("block5", spec, base)
    with pytest.raises(TltoolkitError, match="starts inside a block"):
        resolve_freeze("conv4_block2_2_conv", spec, base)


def test_the_budget_is_epochs_that_do_not_move_with_the_machines_speed():
    """A small folder's trials get the epoch floor whatever an epoch costs (a busy machine, 1.75x slower,
    gets the same budget); above the floor the budget is phase 1's cost over an epoch's, so a machine
    slower at both gets the same epochs too."""
    from tltoolkit.training.policy import MAX_FLOOR_SECONDS, MIN_POLICY_EPOCHS, budget_epochs

    assert budget_epochs(30, 1.0, 2.0) == budget_epochs(30, 1.0, 3.5) == MIN_POLICY_EPOCHS
    assert budget_epochs(30, 10.0, 2.0) == budget_epochs(30, 30.0, 6.0) == 150
    # A big folder's floor is MAX_FLOOR_SECONDS of epochs, not MIN_POLICY_EPOCHS of hour-long ones.
    assert budget_epochs(30, 1.0, 3600.0) == int(max(30 / 3600, MAX_FLOOR_SECONDS / 3600))


def test_trials_get_a_fair_share_or_nothing():
    from tltoolkit.training.config import FinetuneConfig
    from tltoolkit.training.phases import recipe_for
    from tltoolkit.training.policy import trial_epochs

    pretrained = recipe_for(FinetuneConfig(), True)  # warm-up 1, patience 5, at most 50
    scratch = recipe_for(FinetuneConfig(recipe="scratch"), True)  # warm-up 3, patience 20
    assert (pretrained.fair_trial, scratch.fair_trial) == (6, 23)
    assert trial_epochs(60, [pretrained] * 3) == 20  # an equal share among equals
    # In proportion to the fair trials: three pretrained candidates at 80 leave the last, from-scratch
    # one the epochs its longer trial needs.
    assert trial_epochs(80, [pretrained, pretrained, pretrained, scratch]) == 11
    assert trial_epochs(1000, [pretrained] * 2) == 50  # at most the recipe's maximum
    assert trial_epochs(10, [pretrained] * 3) == 6  # at least its fair trial
    assert trial_epochs(20, [scratch]) is None  # not tried when the fair trial does not fit
