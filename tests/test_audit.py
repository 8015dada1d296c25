"""`tltoolkit audit` and `tltoolkit rank` on real images (the embedded digits and their backbone): planted
defects found, bases ranked in the right order, the cache reused, outputs never half-written, bad input
refused in one line."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from images import plant_defects
from tltoolkit.cli import main
from tltoolkit.errors import TltoolkitError

ROOT = Path(__file__).resolve().parents[1]
BACKBONE = str(ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5")


@pytest.fixture(autouse=True)
def keep_stderr(monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_TF_LOGS", "1")  # keep fd 2 alone so capsys sees the CLI's stderr


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """40 digits of each of 5..9 as a manifest, 5% of the labels flipped, 8 images copied (resized,
    re-encoded as JPEG) into the other split; and the audit of it."""
    from tltoolkit.audit import audit

    folder = tmp_path_factory.mktemp("planted")
    manifest, flipped, copies, _ = plant_defects(ROOT / "data" / "digits59", folder, copies=8, per_class=40)
    cache = folder / "cache"
    result = audit(manifest, "resnet20_cifar", BACKBONE, cache_dir=cache)
    return manifest, flipped, copies, cache, result


def recall_precision(found: set, truth: set) -> tuple[float, float]:
    return len(found & truth) / len(truth), len(found & truth) / max(1, len(found))


@pytest.mark.slow  # trains k-fold heads on real features
def test_audit_finds_planted_copies_across_splits_and_flipped_labels(planted):
    manifest, flipped, copies, _, result = planted
    pairs = result.flagged("near_duplicate")
    recall, precision = recall_precision({frozenset(p) for p in zip(pairs["path"], pairs["other_path"])},
                                         {frozenset(p) for p in copies.items()})
    assert recall >= 0.85 and precision >= 0.85, (recall, precision)
    assert pairs["cross_split"].all(), "every planted copy is in the other split, so leakage is named"
    errors = result.flagged("label_error")
    recall, precision = recall_precision(set(errors["path"]), flipped)
    assert recall >= 0.5 and precision >= 0.75, (recall, precision)
    truth = pd.read_csv(manifest, dtype=str)
    # the suggested label of a found flip is mostly the digit the image really shows (its folder)
    true_digit = errors["path"].map(lambda p: Path(p).parent.name)
    hits = errors[errors["path"].isin(flipped)]
    assert (hits["suggested_label"] == true_digit[hits.index]).mean() >= 0.8
    assert set(result.balance["class"]) == set(truth["label"]) and result.balance["total"].sum() == len(truth)


@pytest.mark.slow  # trains k-fold heads on real features
def test_a_second_audit_computes_no_features(planted):
    from tltoolkit.audit import audit

    manifest, _, _, cache, first = planted
    assert first.folder.computed == len(first.folder.table)
    again = audit(manifest, "resnet20_cifar", BACKBONE, cache_dir=cache)
    assert again.folder.computed == 0
    pd.testing.assert_frame_equal(again.findings, first.findings)


@pytest.mark.slow  # trains k-fold heads on real features
def test_outputs_and_a_clean_manifest_that_scans_without_the_flagged_images(planted, tmp_path):
    from tltoolkit.audit import OUTPUTS, write_audit
    from tltoolkit.data import scan

    manifest, _, copies, _, result = planted
    clean = Path(manifest).parent / "clean.csv"
    written = write_audit(result, tmp_path / "audit", clean)
    assert {p.name for p in written} == {*OUTPUTS, "clean.csv"}
    stored = pd.read_parquet(tmp_path / "audit" / "audit.parquet")
    assert len(stored) == len(result.findings) and set(stored["kind"]) <= {"near_duplicate", "label_error", "outlier"}
    report = (tmp_path / "audit" / "report.md").read_text()
    assert f"| near duplicate pairs | {len(result.flagged('near_duplicate'))} |" in report
    assert f"## Label errors ({len(result.flagged('label_error'))}; sheet: label_errors.png)" in report
    kept = scan(clean, check=True).usable()  # what finetune --data clean.csv reads
    flagged = set(result.flagged("label_error")["path"]) | set(result.flagged("outlier")["path"])
    assert not flagged & set(kept["path"])
    pairs = result.flagged("near_duplicate")
    for a, b in zip(pairs["path"], pairs["other_path"]):
        assert (a in set(kept["path"])) != (b in set(kept["path"])), "one image of each same-label pair stays"
    assert len(kept) < len(result.folder.table)
    assert not list((tmp_path / "audit").glob(".*.tmp")), "no temporary files left behind"
    with pytest.raises(TltoolkitError, match="already holds an audit"):
        write_audit(result, tmp_path / "audit")
    with pytest.raises(TltoolkitError, match="already exists"):
        write_audit(result, tmp_path / "other", clean)


def test_logme_is_the_maximised_evidence_and_prefers_informative_features():
    from tltoolkit.features.scores import logme

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    informative = np.eye(3)[labels] @ rng.normal(size=(3, 8)) + 0.3 * rng.normal(size=(300, 8))
    random = rng.normal(size=(300, 8))
    assert logme(informative, labels) > logme(random, labels) + 0.1

    def evidence(f, y, alpha, beta):  # log p(y | F, alpha, beta) of Bayesian linear regression, per image
        n, d = f.shape
        a = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a, f.T @ y)
        return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * np.sum((y - f @ m) ** 2)
                - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2 - n / 2 * np.log(2 * np.pi)) / n

    grid = np.logspace(-3, 3, 61)
    best = np.mean([max(evidence(informative, (labels == c).astype(float), a, b) for a in grid for b in grid)
                    for c in range(3)])
    assert logme(informative, labels) == pytest.approx(best, abs=0.01)


def test_knn_chooses_k_on_training_images():
    from tltoolkit.features.folder import nearest_neighbours
    from tltoolkit.features.scores import knn_accuracy

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6))
    index, similarity = nearest_neighbours(x, x, 3, same=True)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    brute = unit @ unit.T
    np.fill_diagonal(brute, -np.inf)
    np.testing.assert_array_equal(index, np.argsort(-brute, axis=1)[:, :3])
    np.testing.assert_allclose(similarity, np.sort(brute, axis=1)[:, ::-1][:, :3], rtol=1e-5)
    index, distance = nearest_neighbours(x[:10], x, 4, metric="euclidean")
    brute = np.linalg.norm(x[:10, None] - x[None], axis=-1)
    np.testing.assert_array_equal(index, np.argsort(brute, axis=1)[:, :4])
    np.testing.assert_allclose(distance, np.sort(brute, axis=1)[:, :4], atol=1e-3)
    centres = rng.normal(size=(2, 6)) * 3
    y = rng.integers(0, 2, 120)
    points = centres[y] + rng.normal(size=(120, 6))
    accuracy, k = knn_accuracy(points[:100], y[:100], points[100:], y[100:])
    assert accuracy >= 0.9 and k in (1, 3, 5, 7, 9, 15, 21)


@pytest.mark.slow  # trains k-fold heads on real features
def test_rank_puts_the_digits_backbone_above_the_same_network_with_random_weights(tmp_path, capsys):
    data = tmp_path / "digits"
    for digit in "56789":
        (data / digit).mkdir(parents=True)
        for file in sorted((ROOT / "data" / "digits59" / digit).glob("*.png"))[:30]:
            shutil.copy(file, data / digit)
    out = tmp_path / "rank"
    assert main(["rank", "--data", str(data), "--base", f"resnet20_cifar@{BACKBONE}", "--base", "resnet20_cifar@none",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    table = pd.read_csv(out / "rank.csv")
    assert list(table["base"]) == [f"resnet20_cifar@{BACKBONE}", "resnet20_cifar@none"]
    backbone, random = table.iloc[0], table.iloc[1]
    assert backbone["logme"] > random["logme"] and backbone["knn_accuracy"] >= random["knn_accuracy"]
    assert (table[["knn_s", "probe_s", "logme_s", "extract_ms_per_image"]] > 0).all().all()
    assert (out / "rank.png").stat().st_size > 0 and "| rank | base |" in capsys.readouterr().out


def write_folder(root, classes, count=3):
    from images import write_good_images

    for i, label in enumerate(classes):
        write_good_images(root / label, count, seed=i + 1)
    return root


@pytest.mark.parametrize("command", ["audit", "rank"])
def test_bad_input_is_one_line_and_exit_2(command, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = {
        "an empty folder": (tmp_path / "empty", "resnet20_cifar", "no images in"),
        "one class": (write_folder(tmp_path / "one", ["cats"]), "resnet20_cifar", "only one class"),
        "a base that cannot be built": (write_folder(tmp_path / "two", ["a", "b"]), "no_such_net",
                                        "unknown architecture"),
    }
    for what, (data, base, message) in cases.items():
        code = main([command, "--data", str(data), "--base", base, "--out", str(tmp_path / "out"), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (what, err)
    assert not (tmp_path / "out").exists(), "nothing written"


def test_audit_without_cleanlab_names_the_pip_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # an import of it raises ImportError, as when absent
    data = write_folder(tmp_path / "two", ["a", "b"])
    assert main(["audit", "--data", str(data), "--base", "resnet20_cifar", "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'tltoolkit[audit]'" in capsys.readouterr().err


def test_frozen_baseline_pools_feature_maps_and_needs_two_images():
    from tltoolkit.features.scores import frozen_baseline, knn_accuracy, logme

    rng = np.random.default_rng(2)
    maps, labels = rng.normal(size=(40, 3, 3, 4)), rng.integers(0, 2, 40)
    baseline = frozen_baseline(maps[:30], labels[:30], maps[30:], labels[30:])
    pooled = maps.mean(axis=(1, 2))
    accuracy, k = knn_accuracy(pooled[:30], labels[:30], pooled[30:], labels[30:])
    assert baseline == {"knn_accuracy": round(accuracy, 4), "knn_k": k, "logme": round(logme(pooled[:30], labels[:30]), 4),
                        "images": 30}
    assert frozen_baseline(maps[:1], labels[:1]) is None


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_neighbours_memory_is_bounded_whatever_the_number_of_references(metric, monkeypatch):
    import tracemalloc

    from tltoolkit.features import folder

    monkeypatch.setattr(folder, "BLOCK_SCORES", 1 << 20)  # 174 of these 6000 queries at a time
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 8)).astype("float32")
    brute = -((x[:, None] - x[None]) ** 2).sum(-1) if metric == "euclidean" else \
        (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    np.fill_diagonal(brute, -np.inf)
    tracemalloc.start()
    index, _ = folder.nearest_neighbours(x, x, 5, same=True, metric=metric)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # 2048 queries at a time (before the budget) peaked at 246 MB here.
    assert peak < 40e6, peak
    assert (np.sort(index, 1) == np.sort(np.argsort(-brute, axis=1)[:, :5], 1)).mean() > 0.999
