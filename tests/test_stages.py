"""Freezing by stage: the trainable parameter count at each freeze point is pinned (torchvision's
`n_trn_params_per_layer` idea), and freezing really freezes."""

import keras
import numpy as np
import pytest

from tltoolkit.architectures import ArchitectureError, build, get_spec
from tltoolkit.architectures.stages import (
    freeze_until, spec_stage_ranges, stage_ranges, trainable_count, trainable_counts_per_stage)

# Pinned from keras.applications (its layers[index:] summed at the reference doc's stage indices),
# an independent source. VGG16 at 224: block5 is 3 x (3*3*512*512 + 512) = 7,079,424 and the head
# fc1 + fc2 + predictions is 102,764,544 + 16,781,312 + 4,097,000 = 123,642,856.
VGG16_TRAINABLE = {
    "none": 138_357_544,
    "block1": 138_357_544,
    "block2": 138_318_824,
    "block3": 138_097_384,
    "block4": 136_622_056,
    "block5": 130_722_280,
    "head": 123_642_856,
}


@pytest.fixture(scope="module")
def vgg16():
    return build("vgg16")


def test_vgg16_trainable_count_at_each_freeze_point(vgg16):
    ranges = spec_stage_ranges(vgg16, get_spec("vgg16"))
    assert trainable_counts_per_stage(vgg16, ranges) == VGG16_TRAINABLE
    for stage, expected in VGG16_TRAINABLE.items():
        freeze_until(vgg16, ranges, stage)
        assert trainable_count(vgg16) == expected, stage
    freeze_until(vgg16, ranges, "none")


def test_freeze_until_block5_trains_block5_and_the_head(vgg16):
    ranges = spec_stage_ranges(vgg16, get_spec("vgg16"))
    freeze_until(vgg16, ranges, "block5")
    trainable = {layer.name for layer in vgg16.layers if layer.trainable and layer.weights}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3", "fc1", "fc2", "predictions"}
    freeze_until(vgg16, ranges, "none")


@pytest.mark.parametrize("arch,stage,expected", [
    ("resnet50", "conv5", 17_025_000),
    ("resnet50", "head", 2_049_000),
    ("densenet121", "conv5", 3_185_128),
    ("inception_v3", "mixed9", 13_163_880),
])
def test_pinned_trainable_counts(arch, stage, expected):
    keras.backend.clear_session()
    model = build(arch)
    ranges = spec_stage_ranges(model, get_spec(arch))
    freeze_until(model, ranges, stage)
    assert trainable_count(model) == expected
    assert trainable_counts_per_stage(build(arch), ranges)[stage] == expected


def test_frozen_batch_norm_runs_in_inference_mode():
    model = build("resnet18", include_top=False, input_shape=(32, 32, 3))
    ranges = spec_stage_ranges(model, get_spec("resnet18"))
    freeze_until(model, ranges, "conv5")
    frozen_bn = model.get_layer("conv2_block1_1_bn")
    training_bn = model.get_layer("conv5_block1_1_bn")
    frozen_before = frozen_bn.moving_mean.numpy().copy()
    training_before = training_bn.moving_mean.numpy().copy()
    model(np.random.default_rng(0).normal(5, 3, (4, 32, 32, 3)).astype("float32"), training=True)
    np.testing.assert_array_equal(frozen_bn.moving_mean.numpy(), frozen_before)
    assert not np.allclose(training_bn.moving_mean.numpy(), training_before)


def test_unknown_stage_lists_the_valid_ones(vgg16):
    ranges = spec_stage_ranges(vgg16, get_spec("vgg16"))
    with pytest.raises(ArchitectureError, match="valid stages: block1, block2, block3, block4, block5, head, none"):
        freeze_until(vgg16, ranges, "block6")


def test_keras_application_freezes_by_layer_name():
    model = build("keras:MobileNetV2", weights=None, include_top=False, input_shape=(32, 32, 3))
    first = freeze_until(model, stage_ranges(model, []), "block_16_expand")
    assert model.layers[first].name == "block_16_expand"
    assert all(not layer.trainable for layer in model.layers[:first])
    assert trainable_count(model) == sum(
        sum(int(np.prod(w.shape)) for w in layer.trainable_weights) for layer in model.layers[first:])
