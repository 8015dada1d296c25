"""Parity with the networks the published checkpoints come from: timm's and torchvision's own models.

Each reference is built with random weights and non-trivial BatchNorm statistics, saved in its source's
own format (timm: a safetensors state dict; torchvision: `torch.save`), loaded by `build(ID, weights=FILE)`
(detected by content, converted on the fly) and compared on the same preprocessed input: the logits, and
the features at every stage boundary. Small inputs where the architecture allows; VGG's classifier reads
a 7x7 map, so timm's vgg11_bn (whose fc1 is a 7x7 conv) runs at 224, unmodified, and torchvision's VGGs
at 64 with their first Linear sized for the 2x2 map (their pooling to 7x7 removed).
"""

import inspect
import re

import keras
import numpy as np
import pytest

from tests.torch_reference import randomize_batch_norm, save_safetensors, timm, torch, torchvision
from tltoolkit.architectures import build, get_spec
from tltoolkit.architectures.registry import all_specs
from tltoolkit.architectures.registry import MEAN_STD, Checkpoint
from tltoolkit.architectures.stages import spec_stage_ranges

RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")  # after the stem's pool: maxpool (pool0 in legacy SENet)
DENSENET_STAGES = ("features.pool0", "features.denseblock1", "features.transition1", "features.denseblock2",
                   "features.transition2", "features.denseblock3", "features.transition3", "features.denseblock4",
                   "features.norm5")

# (our id, source, the source's model name, input size)
CASES = [
    ("resnet18", "torchvision", "resnet18", 64),
    ("resnet34", "timm", "resnet34", 64),
    ("resnet50_v1_5", "torchvision", "resnet50", 64),
    ("resnet101_v1_5", "timm", "resnet101", 64),
    ("resnet152_v1_5", "torchvision", "resnet152", 64),
    ("resnext50_32x4d", "timm", "resnext50_32x4d", 64),
    ("resnext101_32x8d", "torchvision", "resnext101_32x8d", 64),
    ("wide_resnet50_2", "torchvision", "wide_resnet50_2", 64),
    ("wide_resnet101_2", "timm", "wide_resnet101_2", 64),
    ("se_resnet50_v1_5", "timm", "seresnet50", 64),
    ("se_resnet50", "timm", "legacy_seresnet50", 64),
    ("densenet121", "torchvision-legacy", "densenet121", 64),
    ("densenet169", "timm", "densenet169", 64),
    ("densenet201", "torchvision", "densenet201", 64),
    ("vgg11", "torchvision", "vgg11", 64),
    ("vgg11_bn", "timm", "vgg11_bn", 224),
    ("vgg13", "torchvision", "vgg13", 64),
    ("vgg13_bn", "torchvision", "vgg13_bn", 64),
    ("vgg16", "torchvision", "vgg16", 64),
    ("vgg16_bn", "torchvision", "vgg16_bn", 64),
    ("vgg19", "torchvision", "vgg19", 64),
    ("vgg19_bn", "torchvision", "vgg19_bn", 64),
]


def reference(source: str, name: str, size: int):
    """The source's network with random weights, and its parameter count as published (before any resizing)."""
    torch.manual_seed(0)
    if source == "timm":
        model = timm.create_model(name, pretrained=False)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    count = sum(p.numel() for p in model.parameters())
    if name.startswith("vgg") and size < 224:  # the classifier reads the 2x2 map as it is
        model.avgpool = torch.nn.Identity()
        model.classifier[0] = torch.nn.Linear(512 * (size // 32) ** 2, 4096)
    return randomize_batch_norm(model), count


def save(model, source: str, path):
    if source == "timm":
        return save_safetensors(model, path.with_suffix(".safetensors"))
    state = model.state_dict()
    if source == "torchvision-legacy":  # torchvision's 2017 DenseNet files: `norm.1`, `conv.2`, ...
        state = {re.sub(r"(denselayer\d+\.(?:norm|conv))(\d)", r"\1.\2", k): v for k, v in state.items()}
    torch.save(state, path.with_suffix(".pth"))
    return path.with_suffix(".pth")


def torch_stage_modules(model, arch: str) -> list[str]:
    if arch.startswith("vgg"):
        return [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, torch.nn.MaxPool2d)]
    if arch.startswith("densenet"):
        return list(DENSENET_STAGES)
    return ["maxpool" if hasattr(model, "maxpool") else "pool0", *RESNET_STAGES]


def torch_outputs(model, modules: list[str], x: np.ndarray):
    found = {}
    named = dict(model.named_modules())
    hooks = [named[name].register_forward_hook(lambda _m, _i, out, name=name: found.__setitem__(name, out))
             for name in modules]
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    for hook in hooks:
        hook.remove()
    stages = [found[name].numpy() for name in modules]
    if modules[-1] == "features.norm5":  # DenseNet's forward applies the final ReLU functionally
        stages[-1] = np.maximum(stages[-1], 0)
    return logits, stages


def keras_outputs(model, spec, x: np.ndarray):
    boundaries = [model.layers[r.stop - 1].output for r in spec_stage_ranges(model, spec)[:-1]]
    predictions = model.get_layer("predictions")
    probe = keras.Model(model.input, [*boundaries, predictions.input])
    *stages, features = probe(x.transpose(0, 2, 3, 1))
    kernel, bias = predictions.get_weights()
    return np.asarray(features) @ kernel + bias, [np.asarray(s) for s in stages]


@pytest.mark.parametrize("arch, source, name, size", CASES, ids=[c[0] for c in CASES])
def test_converted_checkpoint_computes_what_its_source_network_does(tmp_path, arch, source, name, size):
    keras.backend.clear_session()
    torch_model, count = reference(source, name, size)
    spec = get_spec(arch)
    assert spec.trainable_params == count, "the variant registered is the checkpoint's network"
    path = save(torch_model, source, tmp_path / name)
    x = np.random.default_rng(1).normal(size=(2, 3, size, size)).astype("float32")
    expected_logits, expected_stages = torch_outputs(torch_model, torch_stage_modules(torch_model, arch), x)
    del torch_model

    ours = build(arch, weights=str(path), input_shape=(size, size, 3))
    logits, stages = keras_outputs(ours, spec, x)
    assert len(stages) == len(expected_stages) == len(spec.stages)
    for stage, mine, theirs in zip(spec.stage_names, stages, expected_stages):
        theirs = theirs.transpose(0, 2, 3, 1)
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(mine, theirs, atol=1e-4 * scale, err_msg=f"{arch} stage {stage}")
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)
    np.testing.assert_array_equal(np.argmax(logits, 1), np.argmax(expected_logits, 1))


def _torchvision_weights(entry: Checkpoint):
    enum, version = re.match(r"torchvision (\w+)\.(\w+) meta", entry.source).groups()
    return torchvision.models.get_weight(f"{enum}.{version}")


def _model_input_mean_std(weights, transform):
    """The mean and std the network's first layer sees the pixels (on 0..1) normalised by: the transform's,
    unless torchvision's builder sets transform_input for these weights (GoogLeNet), which renormalises."""
    builder = torchvision.models.get_model_builder(
        next(name for name in torchvision.models.list_models() if torchvision.models.get_model_weights(name)
             is type(weights)))
    mean, std = tuple(transform.mean), tuple(transform.std)
    if "transform_input" not in inspect.signature(inspect.signature(builder).return_annotation).parameters:
        return mean, std
    model = builder(transform_input=True, init_weights=False)  # what the builder sets for these weights
    pixels = torch.tensor([[0.0, 1.0]] * 3).reshape(1, 3, 1, 2)  # black and white, per channel
    normalised = (pixels - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
    out = model._transform_input(normalised).detach().numpy()[0, :, 0, :]
    black, white = out[:, 0], out[:, 1]
    scale = 1 / (white - black)
    return tuple(float(v) for v in -black * scale), tuple(float(v) for v in scale)


CHECKPOINTS = [(spec.id, entry) for spec in (get_spec(a) for a, *_ in CASES)
               for entry in spec.weights.values() if isinstance(entry, Checkpoint)]


@pytest.mark.parametrize("arch, entry", CHECKPOINTS, ids=[f"{a}.{e.tag}" for a, e in CHECKPOINTS])
def test_tags_carry_what_their_publishers_record(arch, entry):
    """URL, top-1, preprocessing and licence as torchvision's weight enums and timm's pretrained cfgs say."""
    mean, std = MEAN_STD[entry.preprocessing.mode]
    if entry.origin == "torchvision":
        weights = _torchvision_weights(entry)
        assert weights.url == entry.url
        assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] / 100 == pytest.approx(entry.top1, abs=1e-9)
        transform = weights.transforms()
        assert transform.crop_size == [entry.preprocessing.input_size]
        assert round(entry.preprocessing.input_size / transform.resize_size[0], 4) == entry.preprocessing.crop_fraction
        assert transform.interpolation.value == entry.preprocessing.interpolation
        np.testing.assert_allclose(_model_input_mean_std(weights, transform), (mean, std), atol=1e-6)
    else:  # the timm pretrained cfg that publishes this file: on the Hub, or at its URL (legacy models)
        cfg = next(cfg for cfg in map(timm.models.get_pretrained_cfg, timm.list_pretrained())
                   if entry.url in (cfg.url, f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"))
        assert cfg.license == entry.licence.lower()
        assert cfg.input_size == (3, entry.preprocessing.input_size, entry.preprocessing.input_size)
        assert cfg.crop_pct == entry.preprocessing.crop_fraction
        assert cfg.interpolation == entry.preprocessing.interpolation
        assert tuple(cfg.mean) == mean and tuple(cfg.std) == std


# Our ids without weights -> how timm or torchvision would name the architecture.
UNPUBLISHED = {"lenet5": r"(^|_)le_?net", "zfnet": r"zf_?net", "nin": r"(^|_)nin($|_|\.)|network_in_network"}


def test_architectures_without_weights_have_none_in_timm_or_torchvision():
    """What `tltoolkit models` says of them ("no public checkpoint"): neither package has the network at all."""
    assert {s.id for s in all_specs() if not s.weights} == set(UNPUBLISHED), "check the new one and list it here"
    names = timm.list_models() + torchvision.models.list_models()
    for arch, pattern in UNPUBLISHED.items():
        assert not [n for n in names if re.search(pattern, n)], arch
