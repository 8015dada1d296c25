"""Every registered architecture, checked against its spec: a new entry is tested on registration."""

import math

import keras
import numpy as np
import pytest

from tltoolkit.architectures import all_specs, build
from tltoolkit.architectures.profile import count_macs
from tltoolkit.architectures.registry import DATASETS, HEAD, Checkpoint, WeightsFile
from tltoolkit.architectures.stages import spec_stage_ranges, trainable_count

SPECS = all_specs()


def significant_digits(value: float) -> int:
    digits = f"{value:.10g}".replace(".", "").lstrip("0").split("e")[0]
    return max(1, len(digits.rstrip("0")))


def decimals(value: float) -> int:
    text = f"{value:.10g}"
    return len(text.split(".")[1]) if "." in text else 0


def test_registry_covers_the_zoo():
    ids = {s.id for s in SPECS}
    expected = {
        "lenet5", "alexnet", "zfnet", "nin", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet",
        "inception_v3", "inception_v4", "inception_resnet_v2", "resnet18", "resnet34", "resnet50",
        "resnet101", "resnet152", "resnet50v2", "resnet101v2", "resnet152v2", "resnext50_32x4d",
        "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "se_resnet50", "densenet121",
        "densenet169", "densenet201", "resnet20_cifar", "resnet32_cifar", "resnet44_cifar",
        "resnet56_cifar", "resnet110_cifar", "wrn28_10_cifar",
        # the variants torchvision's and timm's checkpoints need
        "resnet50_v1_5", "resnet101_v1_5", "resnet152_v1_5", "se_resnet50_v1_5",
        "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    }
    assert expected <= ids, f"missing: {sorted(expected - ids)}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.id)
def test_full_size_build_matches_spec(spec):
    keras.backend.clear_session()
    model = build(spec.id)
    assert model.name == spec.id
    assert tuple(model.input.shape[1:]) == spec.default_input_shape
    assert model.count_params() == spec.params
    assert trainable_count(model) == spec.trainable_params
    gmacs = count_macs(model) / 1e9
    assert gmacs == pytest.approx(spec.macs, abs=1e-4)

    ref = spec.reference_params
    if ref.counts in ("total", "derived"):
        assert spec.params == ref.value
    elif ref.counts == "trainable":
        assert spec.trainable_params == ref.value
    else:
        assert ref.counts == "approx"
        n = significant_digits(ref.value)
        assert float(f"{spec.trainable_params:.{n}g}") == ref.value, (spec.trainable_params, ref.value)
    if spec.reference_macs is not None:
        assert spec.reference_macs.counts == "gmacs"
        assert round(gmacs, decimals(spec.reference_macs.value)) == spec.reference_macs.value

    ranges = spec_stage_ranges(model, spec)
    assert [r.name for r in ranges] == [*spec.stage_names, HEAD]
    assert ranges[0].start == 1, "the first stage starts right after the input"
    assert all(r.stop > r.start for r in ranges[:-1]), "no stage is empty"
    assert model.layers[ranges[-2].stop - 1].name == spec.base_output
    model.get_layer(spec.penultimate)
    keras.backend.clear_session()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.id)
def test_small_input_forward_shapes(spec):
    keras.backend.clear_session()
    size = max(spec.min_size, 32)
    shape = (size, size, spec.channels)
    images = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")

    classifier = build(spec.id, num_classes=7, input_shape=shape)
    probabilities = np.asarray(classifier(images))
    assert probabilities.shape == (2, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    features = build(spec.id, include_top=False, pooling="avg", input_shape=shape)
    channels = features.output.shape[-1]
    assert features(images).shape == (2, channels)

    feature_map = build(spec.id, include_top=False, input_shape=shape)
    assert feature_map.layers[-1].name == spec.base_output
    maps = feature_map(images)
    assert len(maps.shape) == 4 and maps.shape[-1] == channels
    keras.backend.clear_session()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.id)
def test_specs_are_well_formed(spec):
    assert spec.min_size <= spec.default_size
    assert spec.paper, "public builders cite their paper"
    assert spec.reference_params.source
    for name, entry in spec.weights.items():
        assert entry.dataset in DATASETS and name in (entry.dataset, f"{entry.dataset}:{entry.tag}")
        assert entry.num_classes == {"imagenet": 1000, "cifar10": 10, "cifar100": 100}[entry.dataset]
        assert entry.top1 is None or (0 < entry.top1 < 1 and entry.source)
        if isinstance(entry, WeightsFile):
            assert entry.url.endswith(".h5") and entry.notop_url.endswith(".h5")
            assert len(entry.file_hash) in (32, 64) and len(entry.notop_hash) in (32, 64)
            assert spec.keras_application, "published .h5 weights come from keras.applications"
        else:
            assert isinstance(entry, Checkpoint) and spec.torch_layouts, "a checkpoint needs a layout to load"
            assert entry.url.startswith("https://") and entry.origin and entry.licence
            # A whole sha256, the prefix a file is named by (torchvision's resnet18-f37072fd.pth), or
            # none published (the Hub's model.safetensors, GitHub files, RobustBench's Google Drive file:
            # checked by structure); torchvision publishes one for every file.
            assert (entry.file_hash is None and entry.origin != "torchvision"
                    or len(entry.file_hash) == 64
                    or entry.url.rsplit("/", 1)[-1].rsplit(".", 1)[0].endswith(f"-{entry.file_hash}"))
    assert {e.dataset for e in spec.weights.values()} <= set(spec.weights), "`DATASET` names each default"
    assert math.isfinite(spec.macs) and spec.macs > 0
