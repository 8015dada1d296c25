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


@pytest.mark.parametrize("min_epochs", [1, 3])
def test_the_budget_stops_a_started_candidate_only_after_its_fair_trial(min_epochs):
    """A deadline already passed stops a real fit after `min_epochs` epochs, not before (the policy's
    candidates get their warm-up and one patience however long tracing took)."""
    import time

    import keras
    import numpy as np

    from tltoolkit.training.phases import Deadline

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    deadline = Deadline(time.monotonic() - 1.0, min_epochs)
    history = model.fit(np.zeros((8, 4)), np.zeros(8), epochs=10, verbose=0, callbacks=[deadline])
    assert len(history.epoch) == min_epochs and deadline.hit
