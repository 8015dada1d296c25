"""One feature cache for `extract` and `finetune` (issue 17): the same features under one key, on real
files, the embedded digits backbone (resnet20_cifar) and the real CLI."""

import json
import os
from pathlib import Path

import pytest

from tests.images import pattern, write_image
from tltoolkit.cli import main
from tltoolkit.features.extractor import feature_extractor
from tltoolkit.training.finetune import finetune

ROOT = Path(__file__).resolve().parents[1]
ARCH = "resnet20_cifar"
BACKBONE = str(ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5")
IMAGES = 12


def write_data(root) -> str:
    for c, name in enumerate(("cats", "dogs")):
        for i in range(IMAGES // 2):
            write_image(os.path.join(root, name, f"{i}.png"), pattern(36, 40, seed=c * 100 + i))
    return str(root)


def quiet(*_):
    pass


def settings(tmp, data, **kwargs):
    return {"base": ARCH, "weights": BACKBONE, "data": data, "out": str(tmp / "run"), "cache_dir": str(tmp / "cache"),
            "batch_size": 8, "seed": 0, "augment": "none", "epochs": 1, "fine_tune_epochs": 0, "freeze_until": "head",
            **kwargs}


def extract(tmp, data, capsys, *flags) -> str:
    """`tltoolkit extract` into `tmp/out`; returns its stderr (the 'computed N of M' line)."""
    assert main(["extract", "--base", ARCH, "--weights", BACKBONE, "--data", data, "--out", str(tmp / "out"),
                 "--cache-dir", str(tmp / "cache"), "--quiet", *flags]) == 0
    return capsys.readouterr().err


def entries(cache) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(cache).glob("*/spec.json"))]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep sys.stderr pytest's across main() calls
    return tmp_path, write_data(tmp_path / "data")


def test_extract_then_finetune_plan_has_nothing_to_extract(env, capsys):
    tmp, data = env
    assert f"computed {IMAGES} of {IMAGES}" in extract(tmp, data, capsys)
    plan = finetune(settings(tmp, data), plan=True, progress=False, echo=quiet)
    assert plan["misses"] == 0
    key = json.loads((tmp / "out" / "_extract.json").read_text())["cache_key"]
    assert f"cache: {IMAGES} hits, 0 to extract ({key})" in plan["plan"]


def test_finetune_then_extract_computes_nothing(env, capsys):
    tmp, data = env
    run = finetune(settings(tmp, data), progress=False, echo=quiet)
    assert run["extracted"] == IMAGES
    capsys.readouterr()
    assert f"computed 0 of {IMAGES}" in extract(tmp, data, capsys)
    assert len(entries(tmp / "cache")) == 1


def test_the_penultimate_entry_documents_the_cut_and_pooling_computed(env, capsys):
    tmp, data = env
    extract(tmp, data, capsys)
    meta = json.loads((tmp / "out" / "_extract.json").read_text())
    [spec] = entries(tmp / "cache")
    # resnet20_cifar's penultimate avg_pool is the global average of the last stage's output.
    assert (meta["layer"], meta["pooling"]) == (spec["cut"], spec["pooling"]) == ("conv4_block3_out", "avg")
    assert meta["feature_shape"] == [64]


def test_phase_2_cut_cache_reuses_extracts_float32_stage_entry(env, capsys):
    tmp, data = env
    assert f"computed {IMAGES} of {IMAGES}" in extract(tmp, data, capsys, "--layer", "conv3")
    run = finetune(settings(tmp, data, freeze_until="conv4", fine_tune_epochs=1), progress=False, echo=quiet)
    [note] = [n for n in run["notes"] if n.startswith("phase 2 (conv4) trains from the cached output of")]
    assert note.endswith(f"computed 0 of {IMAGES} images")
    assert sorted(e["dtype"] for e in entries(tmp / "cache")) == ["float32", "float32"]  # no float16 copy


@pytest.mark.parametrize("arch, size, cut", [("lenet5", 32, "fc1"), ("nin", 64, "block4_mlp1")])
def test_a_penultimate_that_is_no_pooling_keeps_the_top_model(arch, size, cut):
    spec = feature_extractor(arch, image_size=size).spec
    assert (spec.cut, spec.pooling) == (cut, None)


def test_extract_float16_stage_reads_phase_2s_cut_cache(env, capsys):
    """The other way (a guard: this held before issue 17 too): phase 2's float16 entry serves extract."""
    tmp, data = env
    finetune(settings(tmp, data, freeze_until="conv4", fine_tune_epochs=1), progress=False, echo=quiet)
    capsys.readouterr()
    assert f"computed 0 of {IMAGES}" in extract(tmp, data, capsys, "--layer", "conv3", "--dtype", "float16")
