"""PyTorch checkpoints read without torch (safetensors, torch zip and legacy .pth) and converted into Keras."""

import pickle
import sys
import zipfile

import keras
import numpy as np
import pytest

from tests.torch_reference import randomize_batch_norm, save_safetensors, torch, torchvision
from tltoolkit.architectures import build
from tltoolkit.architectures.checkpoints import WeightsError, convert_state, load_torch_state, read_state_dict

SIZE = 64


def tiny_torch():
    """Every conversion rule once: conv with bias, BN, a grouped conv, a depthwise conv, flatten -> linear."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False),
        torch.nn.Conv2d(8, 16, 3, padding=1, groups=8),  # depthwise, multiplier 2
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 5, 6))
    return randomize_batch_norm(model)


def tiny_keras():
    layers = keras.layers
    inputs = keras.Input((4, 5, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(epsilon=1e-5, name="bn")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(8, 3, padding="same", groups=4, use_bias=False, name="grouped")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="depthwise")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(6, name="fc")(x)
    return keras.Model(inputs, x)


TINY_LAYOUT = {"conv": ["0.weight", "0.bias"], "bn": ["1.weight", "1.bias", "1.running_mean", "1.running_var"],
               "grouped": ["3.weight"], "depthwise": ["4.weight", "4.bias"], "fc": ["6.weight", "6.bias"]}


def _nchw_batch(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_torch()
    torch.save(model.state_dict(), folder / "tiny.pth")
    torch.save(model.state_dict(), folder / "tiny_legacy.pth", _use_new_zipfile_serialization=False)
    save_safetensors(model, folder / "tiny.bin")  # the suffix says nothing: detected by content
    return model, folder


@pytest.mark.parametrize("name", ["tiny.pth", "tiny_legacy.pth", "tiny.bin"])
def test_every_format_reads_the_state_dict_and_converts_exactly(tiny_files, name):
    model, folder = tiny_files
    state = read_state_dict(folder / name)
    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value)
        assert state[key].dtype == value.dtype

    ours = tiny_keras()
    load_torch_state(ours, state, TINY_LAYOUT)
    x = _nchw_batch((2, 3, 4, 5))
    np.testing.assert_allclose(np.asarray(ours(x.transpose(0, 2, 3, 1))), _torch_out(model, x), atol=1e-5)


def test_wrappers_and_module_prefixes_are_stripped(tiny_files, tmp_path):
    model, _ = tiny_files
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "checkpoint.pth")
    assert read_state_dict(tmp_path / "checkpoint.pth").keys() == model.state_dict().keys()


@pytest.mark.parametrize("legacy", [False, True])
def test_a_training_checkpoint_loads_its_state_dict_past_numbers_and_scalar_tensors(tiny_files, tmp_path, legacy):
    """As akamaster's trainer.py saves: a DataParallel model's state, the epoch (int), the best accuracy (a
    float, or a 0-d tensor as torch 0.4 made it)."""
    model, _ = tiny_files
    path = tmp_path / "model.th"
    torch.save({"epoch": 200, "state_dict": torch.nn.DataParallel(model).state_dict(), "best_prec1": torch.tensor(91.7),
                "best_prec5": 99.6}, path, _use_new_zipfile_serialization=not legacy)
    state = read_state_dict(path)
    assert state.keys() == model.state_dict().keys()
    np.testing.assert_array_equal(state["6.weight"], model.state_dict()["6.weight"].numpy())


def test_code_inside_a_training_checkpoint_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": {}, "best_prec1": _RunsCode(marker)}, protocol=2)
    with pytest.raises(WeightsError, match="refused") as error:
        read_state_dict(_malicious_zip(tmp_path / "model.th", payload))
    assert "\n" not in str(error.value) and not marker.exists()


def test_first_mismatch_is_named_and_nothing_is_assigned(tiny_files):
    model, folder = tiny_files
    state = read_state_dict(folder / "tiny.pth")
    ours = tiny_keras()
    before = ours.get_weights()
    cases = [
        ({k: v for k, v in state.items() if k != "1.running_var"}, "lacks 1.running_var (for layer bn)"),
        ({**state, "7.weight": state["6.weight"]}, "first: 7.weight"),
        ({**state, "4.weight": state["4.weight"][:8]}, "4.weight has shape (8, 1, 3, 3), which does not fit depthwise"),
    ]
    for broken, message in cases:
        with pytest.raises(WeightsError, match=None) as error:
            load_torch_state(ours, broken, TINY_LAYOUT)
        assert message in str(error.value) and "\n" not in str(error.value)
        for a, b in zip(ours.get_weights(), before):
            np.testing.assert_array_equal(a, b)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _malicious_zip(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"fc.weight": _RunsCode(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if kind == "zip":
        _malicious_zip(path, payload)
    else:
        path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + payload)
    with pytest.raises(WeightsError) as error:
        read_state_dict(path)
    message = str(error.value)
    assert "posix.system" in message or "os.system" in message, message
    assert "refused" in message and "\n" not in message
    with pytest.raises(WeightsError):
        build("resnet18", weights=str(path), input_shape=(SIZE, SIZE, 3))
    assert not marker.exists()


def test_not_a_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(WeightsError, match="neither a safetensors file nor a torch checkpoint"):
        read_state_dict(path)


def test_missing_safetensors_package_names_the_extra(tiny_files, monkeypatch):
    _, folder = tiny_files
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # as if the package were not installed
    with pytest.raises(WeightsError, match=r'pip install "tltoolkit\[weights\]"'):
        read_state_dict(folder / "tiny.bin")


TORCHVISION_OPTIONS = {"googlenet": {"aux_logits": True, "init_weights": True}}  # as published: with aux heads


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
    """name -> (torchvision's network with random weights and BN statistics, the folder holding its state
    dict as NAME.pth and NAME.safetensors), made once."""
    made = {}

    def get(name):
        if name not in made:
            folder = tmp_path_factory.mktemp(name)
            torch.manual_seed(0)
            model = randomize_batch_norm(getattr(torchvision.models, name)(weights=None,
                                                                             **TORCHVISION_OPTIONS.get(name, {})))
            torch.save(model.state_dict(), folder / f"{name}.pth")
            save_safetensors(model, folder / f"{name}.safetensors")
            made[name] = model, folder
        return made[name]
    return get


@pytest.fixture(scope="module")
def resnet18_files(torchvision_files):
    return torchvision_files("resnet18")


def _logits(model, x):
    """Our softmax classifier's logits: the Dense before its activation."""
    predictions = model.get_layer("predictions")
    pre = keras.Model(model.input, predictions.input)
    kernel, bias = predictions.get_weights()
    return np.asarray(pre(x)) @ kernel + bias


@pytest.mark.parametrize("name", ["resnet18.pth", "resnet18.safetensors"])
def test_build_takes_a_torchvision_or_timm_file_directly(resnet18_files, name):
    reference, folder = resnet18_files
    x = _nchw_batch((2, 3, SIZE, SIZE))
    ours = build("resnet18", weights=str(folder / name), input_shape=(SIZE, SIZE, 3))
    np.testing.assert_allclose(_logits(ours, x.transpose(0, 2, 3, 1)), _torch_out(reference, x), atol=1e-4)


def test_a_new_head_or_no_top_loads_the_base_only(resnet18_files):
    reference, folder = resnet18_files
    path = str(folder / "resnet18.safetensors")
    x = _nchw_batch((2, 3, SIZE, SIZE))
    with torch.no_grad():
        features = torch.nn.Sequential(*list(reference.children())[:-2])(torch.from_numpy(x)).numpy()
    expected = features.transpose(0, 2, 3, 1)
    no_top = build("resnet18", weights=path, include_top=False, input_shape=(SIZE, SIZE, 3))
    np.testing.assert_allclose(np.asarray(no_top(x.transpose(0, 2, 3, 1))), expected, atol=1e-4)
    new_head = build("resnet18", weights=path, num_classes=3, input_shape=(SIZE, SIZE, 3))
    base = keras.Model(new_head.input, new_head.get_layer("conv5_block2_out").output)
    np.testing.assert_allclose(np.asarray(base(x.transpose(0, 2, 3, 1))), expected, atol=1e-4)


def test_a_checkpoint_of_another_architecture_is_refused_and_the_model_restored(resnet18_files):
    _, folder = resnet18_files
    ours = build("resnet34", input_shape=(SIZE, SIZE, 3))
    before = ours.get_weights()
    from tltoolkit.architectures.weights import load_weights

    with pytest.raises(WeightsError, match="lacks layer1.2.conv1.weight") as error:
        load_weights(ours, _spec("resnet34"), str(folder / "resnet18.pth"))
    assert "\n" not in str(error.value)
    for a, b in zip(ours.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_an_architecture_without_a_converter_says_which_have_one(resnet18_files):
    _, folder = resnet18_files
    with pytest.raises(WeightsError, match="has no converter for one; architectures with one: .*resnet18"):
        build("nin", weights=str(folder / "resnet18.pth"))


def test_convert_state_reports_an_uncovered_layer(tiny_files):
    _, folder = tiny_files
    layout = {k: v for k, v in TINY_LAYOUT.items() if k != "fc"}
    with pytest.raises(WeightsError, match="no checkpoint tensors are mapped to layer fc"):
        convert_state(tiny_keras(), read_state_dict(folder / "tiny.pth"), layout)


def _spec(arch):
    from tltoolkit.architectures import get_spec

    return get_spec(arch)


def _find_layer(model, name):
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            found = _find_layer(layer, name)
            if found is not None:
                return found
    return None


# (arch, its checkpoint file, the smallest image size it takes, --freeze-until, a layer of the frozen stem and
# the tensor it was converted from, an export format to finish with)
FINETUNE = [
    ("resnet18", "resnet18.safetensors", 32, "conv5", "conv1_conv", "conv1.weight", None),
    ("alexnet", "alexnet.pth", 63, "block5", "block1_conv", "features.0.weight", "tflite"),
    ("googlenet", "googlenet.pth", 32, "inception5b", "conv1_conv", "conv1.conv.weight", None),
]


@pytest.mark.parametrize("arch, fname, size, freeze_until, stem, key, export", FINETUNE, ids=[c[0] for c in FINETUNE])
def test_finetune_takes_the_checkpoint_file_through_both_phases(torchvision_files, tmp_path, monkeypatch, arch, fname,
                                                                size, freeze_until, stem, key, export):
    """As a user with the source file would run it: `finetune --weights FILE`, phase 1 and 2, then export."""
    from tests.runs import write_class_folders
    from tltoolkit.architectures import load_model
    from tltoolkit.cli import main

    reference, folder = torchvision_files(arch)
    write_class_folders(tmp_path / "data", per_class=6)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = main(["finetune", "--base", arch, "--data", str(tmp_path / "data"), "--image-size", str(size),
                 "--weights", str(folder / fname), "--freeze-until", freeze_until, "--epochs", "1",
                 "--fine-tune-epochs", "1", "--augment", "none", "--out", str(tmp_path / "run")])
    assert code == 0
    model = load_model(tmp_path / "run" / "model.keras")
    # The stem stayed frozen through phase 2: it still holds the checkpoint's tensor, converted.
    expected = reference.state_dict()[key].numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(_find_layer(model, stem).get_weights()[0], expected)
    assert model.output.shape[-1] == 3
    if export:
        out = tmp_path / f"model.{export}"
        assert main(["export", "--model", str(tmp_path / "run"), "--format", export, "--out", str(out)]) == 0
        assert out.stat().st_size > 0
