"""AlexNet, GoogLeNet, Inception-v4, the CIFAR ResNets and WRN-28-10 against the PyTorch networks their public
checkpoints come from: each reference is built with random weights and non-trivial BatchNorm
statistics, saved in its source's own format, loaded by `build(ID, weights=FILE)` and compared on the
same input (NCHW for torch, NHWC for Keras): logits, and the features at every stage boundary."""

import shutil

import keras
import numpy as np
import pytest

from tests.test_checkpoints import _torch_out
from tests.test_torch_parity import test_tags_carry_what_their_publishers_record as check_published_tag
from tests.torch_reference import AkamasterResNet, RobustBenchWideResNet, save_safetensors, timm, torch, torchvision
from tltoolkit.architectures import build, get_spec
from tltoolkit.architectures.bases import resolve_base
from tltoolkit.architectures.preprocessing import preprocessing_layer
from tltoolkit.architectures.registry import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from tltoolkit.architectures.resnet_cifar import AKAMASTER, RESNETS, RESNETS_B
from tltoolkit.architectures.stages import spec_stage_ranges, trainable_count
from tltoolkit.architectures.weights import WeightsError, weights_entry

TOLERANCE = 1e-4  # of the largest magnitude compared (or absolute, below 1): float32 rounding grows with it


class CifarResNet(torch.nn.Module):
    """chenyaofo/pytorch-cifar-models' CifarResNet (the network of its CIFAR checkpoints): a 3x3
    stem of 16, three stages of torchvision BasicBlocks (16, 32, 64; 1x1-conv-BN downsample where
    the shape changes), global average pooling and `fc`; the same module names, so the same keys."""

    def __init__(self, blocks: int, num_classes: int = 10):
        super().__init__()
        resnet = torchvision.models.resnet
        self.conv1 = resnet.conv3x3(3, 16)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.relu = torch.nn.ReLU(inplace=True)
        stages, width = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            downsample = None
            if stride != 1 or width != planes:
                downsample = torch.nn.Sequential(resnet.conv1x1(width, planes, stride), torch.nn.BatchNorm2d(planes))
            stages.append(torch.nn.Sequential(resnet.BasicBlock(width, planes, stride, downsample),
                                              *(resnet.BasicBlock(planes, planes) for _ in range(blocks - 1))))
            width = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# arch: (reference network, how its source saves it, input size, {stage: torch module at its end}).
# Sizes are small where the architecture allows, and chosen so that ceil-mode pooling (GoogLeNet at
# 100: a 25-pixel map), adaptive pooling and the 1x7 / 3x1 kernels (Inception-v4 at 139) all matter.
CASES = {
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), "pth", 224,
                {"block1": "features.2", "block2": "features.5", "block3": "features.7", "block4": "features.9",
                 "block5": "features.12"}),
    "googlenet": (lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True), "pth", 100,
                  {"conv1": "maxpool1", "conv2": "maxpool2", "inception3b": "maxpool3", "inception4e": "maxpool4",
                   **{name: name for name in ("inception3a", "inception4a", "inception4b", "inception4c",
                                              "inception4d", "inception5a", "inception5b")}}),
    "inception_v4": (lambda: timm.create_model("inception_v4", pretrained=False), "safetensors", 139,
                     {"stem": "features.5", "inception_a": "features.9", "reduction_a": "features.10",
                      "inception_b": "features.17", "reduction_b": "features.18", "inception_c": "features.21"}),
    "resnet20_cifar_b": (lambda: CifarResNet(3), "pth", 32,
                         {"conv1": "relu", "conv2": "layer1", "conv3": "layer2", "conv4": "layer3"}),
    "resnet20_cifar": (lambda: AkamasterResNet(3), "akamaster", 32,
                       {"conv1": "relu", "conv2": "layer1", "conv3": "layer2", "conv4": "layer3"}),
    "wrn28_10_cifar": (RobustBenchWideResNet, "pth", 32,
                       {"conv1": "conv1", "conv2": "block1", "conv3": "block2", "conv4": "block3", "post": "relu"}),
}


def random_reference(make, seed: int = 0):
    """`make()`'s network with He-initialised conv and linear weights and random BatchNorm (every
    statistic and affine parameter different, gamma around 1). Small-std initialisations (GoogLeNet's,
    timm's) or small gammas shrink the signal of these deep non-residual stacks until their deep
    features no longer depend on the input, and a comparison there would prove nothing."""
    torch.manual_seed(seed)
    model = make()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm2d):
                for statistic, low in ((module.running_mean, -0.5), (module.running_var, 0.5),
                                       (module.weight, 0.5), (module.bias, -0.5)):
                    statistic.uniform_(low, low + 1)
    return model.eval()


def assert_depends_on_input(arrays: np.ndarray, what: str):
    """The two samples' outputs differ: the comparison is not of a constant."""
    spread = np.abs(arrays[0] - arrays[1]).max() / np.abs(arrays).max()
    assert spread > 0.01, f"{what}: the reference's output hardly depends on its input ({spread:.1e})"


def assert_close(got, want, what: str):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    error = np.abs(got - want).max() / max(1.0, np.abs(want).max())
    assert error <= TOLERANCE, f"{what}: off by {error:.1e} of its largest value"


def save_reference(model, kind: str, folder):
    if kind == "safetensors":
        return save_safetensors(model, folder / "model.safetensors")
    if kind == "akamaster":  # its trainer.py: a DataParallel model's state and its best accuracy, torch 0.4's format
        path = folder / "model.th"
        torch.save({"state_dict": torch.nn.DataParallel(model).state_dict(), "best_prec1": torch.tensor(91.73)},
                   path, _use_new_zipfile_serialization=False)
        return path
    torch.save(model.state_dict(), folder / "model.pth")
    return folder / "model.pth"


def logits(model, name="predictions"):
    """The logits of our softmax classifier `name`: its Dense before the activation."""
    dense = model.get_layer(name)
    kernel, bias = dense.get_weights()
    before = keras.Model(model.input, dense.input)
    return lambda x: np.asarray(before(x)) @ kernel + bias


def torch_features(model, modules: dict[str, str], x) -> dict[str, np.ndarray]:
    """Each named module's output (NHWC) for input `x` (NCHW), and the logits under "logits"."""
    found, handles = {}, []
    for stage, path in modules.items():
        def hook(_module, _inputs, output, stage=stage):
            found[stage] = output.detach().clone().numpy().transpose(0, 2, 3, 1)
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    found["logits"] = _torch_out(model, x)
    for handle in handles:
        handle.remove()
    return found


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """arch -> (its random reference network, the file its source would save), built once."""
    made = {}

    def get(arch):
        if arch not in made:
            make, kind, *_ = CASES[arch]
            reference = random_reference(make)
            made[arch] = reference, save_reference(reference, kind, tmp_path_factory.mktemp(arch))
        return made[arch]
    return get


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, references):
    arch = request.param
    _, _, size, modules = CASES[arch]
    reference, path = references(arch)
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype("float32")
    ours = build(arch, weights=str(path), input_shape=(size, size, 3))
    yield arch, reference, ours, x, modules, path
    keras.backend.clear_session()


def test_logits_and_every_stage_match_the_reference(converted):
    arch, reference, ours, x, modules, _ = converted
    assert trainable_count(ours) == sum(p.numel() for p in reference.parameters()) == get_spec(arch).trainable_params
    expected = torch_features(reference, modules, x)
    ranges = spec_stage_ranges(ours, get_spec(arch))[:-1]
    assert {r.name for r in ranges} == set(modules), "every stage boundary is compared"
    ends = [ours.layers[r.stop - 1].output for r in ranges]
    stage_outputs = keras.Model(ours.input, ends)(x.transpose(0, 2, 3, 1))
    for r, got in zip(ranges, stage_outputs):
        assert_depends_on_input(expected[r.name], f"{arch} {r.name}")
        assert_close(got, expected[r.name], f"{arch} {r.name}")
    assert_depends_on_input(expected["logits"], f"{arch} logits")
    assert_close(logits(ours)(x.transpose(0, 2, 3, 1)), expected["logits"], f"{arch} logits")


def test_the_base_alone_takes_the_checkpoint_without_its_classifier(converted):
    """What finetune builds: no top, so the checkpoint's classifier (and GoogLeNet's aux heads) are skipped."""
    arch, _, ours, x, _, path = converted
    spec = get_spec(arch)
    nhwc = x.transpose(0, 2, 3, 1)
    base = build(arch, weights=str(path), include_top=False, input_shape=nhwc.shape[1:])
    features = keras.Model(ours.input, ours.get_layer(spec.base_output).output)(nhwc)
    np.testing.assert_allclose(np.asarray(base(nhwc)), np.asarray(features), atol=1e-6)


TAGGED = [(arch, entry) for arch in ("alexnet", "googlenet", "inception_v4") for entry in get_spec(arch).weights.values()]


@pytest.mark.parametrize("arch, entry", TAGGED, ids=[f"{arch}.{entry.tag}" for arch, entry in TAGGED])
def test_tags_carry_what_their_publishers_record(arch, entry):
    check_published_tag(arch, entry)


# (arch, weights, its reference network, input size, classes, the mean and std its publisher normalises by)
PUBLISHED_FILES = [
    ("inception_v4", "imagenet", lambda: timm.create_model("inception_v4", pretrained=False), 139, 1000,
     ((0.5,) * 3, (0.5,) * 3)),  # timm's pretrained_cfg: Inception preprocessing
    ("resnet20_cifar_b", "cifar100", lambda: CifarResNet(3, num_classes=100), 32, 100,
     ((0.5070, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761))),  # chenyaofo's CIFAR-100 transforms
    ("resnet56_cifar_b", "cifar10:chenyaofo", lambda: CifarResNet(9), 32, 10,
     ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))),
    ("resnet32_cifar", "cifar10", lambda: AkamasterResNet(5), 32, 10,
     (IMAGENET_MEAN_RGB, IMAGENET_STD_RGB)),  # akamaster's trainer.py normalises CIFAR-10 by ImageNet's
    ("wrn28_10_cifar", "cifar10:robustbench", RobustBenchWideResNet, 32, 10,
     ((0.0,) * 3, (1.0,) * 3)),  # RobustBench's models take [0, 1] pixels; Standard does not normalise
]
SAVED_AS = {"timm": "safetensors", AKAMASTER: "akamaster"}  # as each origin publishes its files; others torch.save


@pytest.mark.parametrize("arch, weights, make, size, classes, mean_std", PUBLISHED_FILES,
                         ids=[f"{c[0]}.{c[1]}" for c in PUBLISHED_FILES])
def test_a_tag_converts_its_published_file_once_and_preprocesses_as_its_publisher(
        tmp_path, monkeypatch, arch, weights, make, size, classes, mean_std):
    """As a user with the published file in the Keras cache (offline): `weights=TAG` converts it once,
    caches the conversion, and on raw pixels, through the tag's preprocessing layer, computes what the
    source network does on the pixels normalised as its publisher does."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    entry = weights_entry(get_spec(arch), weights)
    reference = random_reference(make)
    (tmp_path / "models").mkdir()
    shutil.move(save_reference(reference, SAVED_AS.get(entry.origin, "pth"), tmp_path),
                tmp_path / "models" / entry.fname)
    pixels = np.random.default_rng(4).uniform(0, 255, (2, 3, size, size)).astype("float32")
    mean, std = (np.array(v, "float32")[:, None, None] for v in mean_std)
    expected = _torch_out(reference, (pixels / 255 - mean) / std)

    ours = build(arch, weights=weights, num_classes=classes, input_shape=(size, size, 3))
    assert [p.name.split(".")[0] for p in (tmp_path / "models").glob("*.weights.h5")] == [arch]
    mode = resolve_base(arch, weights=weights).preprocessing
    assert mode == entry.preprocessing.mode
    assert_depends_on_input(expected, f"{arch} logits")
    assert_close(logits(ours)(preprocessing_layer(mode)(pixels.transpose(0, 2, 3, 1))), expected, f"{arch} logits")


@pytest.fixture(scope="module")
def googlenet_with_aux(tmp_path_factory):
    """torchvision's GoogLeNet as its published file holds it: with both aux heads (and in the
    pre-zip format of older torchvision files, so both formats are covered here)."""
    reference = random_reference(lambda: torchvision.models.googlenet(weights=None, aux_logits=True,
                                                                       init_weights=True), seed=1)
    path = tmp_path_factory.mktemp("googlenet_aux") / "googlenet.pth"
    torch.save(reference.state_dict(), path, _use_new_zipfile_serialization=False)  # torch < 1.6's format
    return reference, path


def test_googlenet_file_with_aux_heads_loads_them_too(googlenet_with_aux):
    reference, path = googlenet_with_aux
    x = np.random.default_rng(1).normal(size=(2, 3, 224, 224)).astype("float32")
    ours = build("googlenet", weights=str(path), aux_logits=True)
    expected = torch_features(reference, {"aux1": "inception4a", "aux2": "inception4d"}, x)
    nhwc = x.transpose(0, 2, 3, 1)
    assert_close(logits(ours)(nhwc), expected["logits"], "googlenet logits")
    for aux, block in (("aux1", "inception4a"), ("aux2", "inception4d")):
        with torch.no_grad():  # eval mode: the aux head's dropout is off, as in Keras' inference
            want = getattr(reference, aux)(torch.from_numpy(expected[aux].transpose(0, 3, 1, 2))).numpy()
        got = logits(ours, f"{aux}_predictions")
        assert_depends_on_input(want, aux)
        assert_close(got(nhwc), want, aux)


def test_googlenet_file_with_aux_heads_converts_into_the_classifier_without_them(googlenet_with_aux, tmp_path):
    """What the tag's convert-once does with torchvision's file: the aux heads (optional) are skipped."""
    from tltoolkit.cli import main

    reference, path = googlenet_with_aux
    out = tmp_path / "googlenet.weights.h5"
    assert main(["weights", "convert", str(path), "--arch", "googlenet", "--tag", "tv_in1k", "--out", str(out)]) == 2
    assert main(["weights", "convert", str(path), "--arch", "googlenet", "--out", str(out)]) == 0
    x = np.random.default_rng(5).normal(size=(2, 3, 100, 100)).astype("float32")
    ours = build("googlenet", weights=str(out), input_shape=(100, 100, 3))
    assert_close(logits(ours)(x.transpose(0, 2, 3, 1)), _torch_out(reference, x), "googlenet logits")


def test_googlenet_preprocessing_is_what_transform_input_computes(googlenet_with_aux):
    """torchvision runs its GoogLeNet weights with transform_input=True, which turns ImageNet-
    normalised input back into x/127.5 - 1: what googlenet's preprocessing layer makes of raw pixels."""
    reference, path = googlenet_with_aux
    assert resolve_base("googlenet", weights=str(path)).preprocessing == "tf"
    reference.transform_input = True
    try:
        pixels = np.random.default_rng(2).uniform(0, 255, (2, 3, 64, 64)).astype("float32")
        mean = np.array(IMAGENET_MEAN_RGB, "float32")[:, None, None]
        std = np.array(IMAGENET_STD_RGB, "float32")[:, None, None]
        expected = _torch_out(reference, (pixels / 255 - mean) / std)
    finally:
        reference.transform_input = False
    ours = build("googlenet", weights=str(path), aux_logits=True, input_shape=(64, 64, 3))
    tf_mode = preprocessing_layer(get_spec("googlenet").preprocessing)(pixels.transpose(0, 2, 3, 1))
    assert_depends_on_input(expected, "googlenet logits")
    assert_close(logits(ours)(tf_mode), expected, "googlenet logits")


@pytest.mark.parametrize("arch", sorted(RESNETS_B))
def test_cifar_variants_count_what_the_checkpoints_network_counts(arch):
    depth = RESNETS_B[arch][0]
    for classes in (10, 100):
        reference = CifarResNet((depth - 2) // 6, classes)
        extra_classes = (classes - 10) * 65  # fc 64 -> classes, with bias
        assert sum(p.numel() for p in reference.parameters()) == get_spec(arch).trainable_params + extra_classes


def test_a_cifar100_checkpoint_loads_whole_into_100_classes(tmp_path):
    reference = random_reference(lambda: CifarResNet(3, num_classes=100), seed=2)
    path = save_reference(reference, "pth", tmp_path)
    x = np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype("float32")
    ours = build("resnet20_cifar_b", weights=str(path), num_classes=100)
    assert_close(logits(ours)(x.transpose(0, 2, 3, 1)), _torch_out(reference, x), "resnet20_cifar_b logits")
    # A checkpoint file is taken to be of the reference dataset (CIFAR-10): --preprocessing cifar100 for this one.
    assert resolve_base("resnet20_cifar_b", weights=str(path)).preprocessing == "cifar10"


@pytest.mark.parametrize("arch", sorted(RESNETS))
def test_option_a_nets_count_what_akamasters_network_counts(arch):
    reference = AkamasterResNet((RESNETS[arch][0] - 2) // 6)
    assert sum(p.numel() for p in reference.parameters()) == get_spec(arch).trainable_params


def test_option_a_zero_channels_go_where_akamasters_go():
    """Half before the input's channels and half after: appended zeros would shift the identity channels."""
    reference = random_reference(lambda: AkamasterResNet(3), seed=3)
    x = np.random.default_rng(6).normal(size=(2, 16, 32, 32)).astype("float32")
    want = _torch_out(reference.layer2[0].shortcut, x).transpose(0, 2, 3, 1)
    pad = build("resnet20_cifar").get_layer("conv3_block1_0_pad")
    np.testing.assert_array_equal(np.asarray(pad(x.transpose(0, 2, 3, 1))), want)


@pytest.mark.parametrize("arch, make, kind, other", [
    ("resnet20_cifar", lambda: CifarResNet(3), "pth", "lacks linear.weight"),  # chenyaofo's option-B file
    ("resnet20_cifar_b", lambda: AkamasterResNet(3), "akamaster", "downsample"),  # akamaster's option-A file
])
def test_each_cifar_variant_refuses_the_others_file_in_one_line(tmp_path, arch, make, kind, other):
    path = save_reference(random_reference(make), kind, tmp_path)
    with pytest.raises(WeightsError, match=other) as error:
        build(arch, weights=str(path))
    assert "\n" not in str(error.value)
