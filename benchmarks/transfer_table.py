"""Does transfer help? Accuracy on held-out digits 5-9 after training on n images per class, four ways.

    .venv/bin/python benchmarks/transfer_table.py [--n 5 20 100 all] [--seeds 0 1 2] [--quick]

Data (embedded, real, offline; see data/README.md): the pool is `data/digits59` (digits 5-9, ~143
images per class, never seen by the backbone); every model is scored on the 178 held-out images of
`data/digits59-test`, which no run sees in training. For each n and seed, the seed draws n images per
class from the pool (`all`: the whole pool, the seed then only changes initialisation and order).
Every run trains on all its n images (`val_split` 0: with 5 images per class there is nothing to spare
for validation), for a fixed number of epochs (no early stopping), with `--augment none`, through
the Python API (`tltoolkit.finetune`) in this one process, each run in its own temporary folder; the
feature caches are shared.

Methods, on `resnet20_cifar` (32x32, stages conv1..conv4):
- head:    the embedded backbone (trained on digits 0-4), `--freeze-until head`: the head on cached features.
- conv4:   the backbone, `--freeze-until conv4`: the head, then conv4 + head fine-tuned (from the cut cache).
- full:    the backbone, `--freeze-until none`: the head, then everything fine-tuned.
- scratch: `--weights none`, everything trains from random initialisation (BatchNormalization
           statistics trained, one learning rate for all layers, no head-only phase).
- init:    (diagnostic, not in the default grid) the scratch recipe started from the backbone's weights.
The fine-tuning methods use finetune's defaults otherwise (phase-2 learning rate 1e-4, x0.3 per
earlier stage, frozen BatchNormalization statistics).

Prints and writes (atomically, after every n, so an interrupted grid leaves the rows it measured,
marked partial) a Markdown table: test accuracy mean +- std over seeds [min-max], and the mean wall
time of a run (the whole `finetune` call: scan, extraction of what the caches lack, both phases,
saving the run; evaluation not included).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = "resnet20_cifar"
BACKBONE = ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5"
POOL = ROOT / "data" / "digits59"
TEST = ROOT / "data" / "digits59-test"
METHODS = ("head", "conv4", "full", "scratch", "init")
TITLES = {"head": "head only (cached features)", "conv4": "conv4 + head fine-tuned",
          "full": "full fine-tune", "scratch": "from scratch", "init": "backbone init, scratch recipe"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", nargs="+", default=["5", "20", "100", "all"],
                        help="training images per class: numbers and/or 'all' (default: 5 20 100 all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS[:4]),
                        help="default: head conv4 full scratch; init is the diagnostic below")
    parser.add_argument("--head-epochs", type=int, default=40, help="phase 1, the head on cached features")
    parser.add_argument("--fine-tune-epochs", type=int, default=10, help="phase 2 of conv4 and full")
    parser.add_argument("--scratch-epochs", type=int, default=20, help="all layers, from random init")
    parser.add_argument("--scratch-learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--min-steps", type=int, default=0,
                        help="raise each phase's epochs to give at least this many optimizer steps (small n "
                             "gets few steps per epoch: 2 at n=5, batch 16); default 0: fixed epochs")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/transfer_table.md "
                                                     "(transfer_table-quick.md with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: n 5, seed 0, 2 epochs per phase (numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.seeds = ["5"], [0]
        args.head_epochs = args.fine_tune_epochs = args.scratch_epochs = 2
    name = "transfer_table-quick.md" if args.quick else "transfer_table.md"
    args.out = args.out or ROOT / "benchmarks" / "results" / name
    for n in args.n:
        if n != "all" and not (n.isdigit() and int(n) > 0):
            parser.error(f"--n takes positive numbers or 'all', got {n!r}")
    return args


def pool_files() -> dict[str, list[Path]]:
    classes = {folder.name: sorted(folder.glob("*.png")) for folder in sorted(POOL.iterdir()) if folder.is_dir()}
    if not classes or not all(classes.values()):
        raise SystemExit(f"{POOL} has no class folders of PNGs; make them with `python tools/make_sample_data.py`")
    return classes


def write_manifest(path: Path, classes: dict[str, list[Path]], n: str, seed: int) -> str:
    """A manifest of n images per class drawn by `seed`, all in the training split; returns the row's
    label (`all` with its range of images per class).
    Manifests may only name images under their own folder: a link to the pool sits beside them."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for label, files in classes.items():
        if n != "all" and int(n) > len(files):
            raise SystemExit(f"--n {n} exceeds the {len(files)} images of class {label} in {POOL}")
        chosen = files if n == "all" else [files[i] for i in sorted(rng.choice(len(files), int(n), replace=False))]
        rows += [(f"pool/{label}/{f.name}", label, "train") for f in chosen]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(path, index=False)
    sizes = [len(files) for files in classes.values()]
    return f"all ({min(sizes)}–{max(sizes)})" if n == "all" else n


def config_for(method: str, manifest: Path, out: Path, cache: Path, seed: int, args) -> dict:
    config = {"base": BASE, "data": str(manifest), "out": str(out), "cache_dir": str(cache), "seed": seed,
              "augment": "none", "val_split": 0.0, "batch_size": args.batch_size, "weights": str(BACKBONE),
              "epochs": args.head_epochs, "fine_tune_epochs": args.fine_tune_epochs,
              "min_head_steps": 0}  # one pass per epoch: --min-steps raises both phases alike
    if method == "head":
        config.update(freeze_until="head", fine_tune_epochs=0)
    elif method == "conv4":
        config.update(freeze_until="conv4")
    elif method == "full":
        config.update(freeze_until="none")
    else:  # scratch, and init: the same recipe from the backbone's weights (is it the init or the recipe?)
        config.update(weights="none" if method == "scratch" else str(BACKBONE), freeze_until="none", epochs=0,
                      fine_tune_epochs=args.scratch_epochs, fine_tune_learning_rate=args.scratch_learning_rate,
                      stage_lr_decay=1.0, bn="train")
    steps_per_epoch = -(-rows(manifest) // args.batch_size)
    for key in ("epochs", "fine_tune_epochs"):
        if config[key]:
            config[key] = max(config[key], -(-args.min_steps // steps_per_epoch))
    # Fixed epochs: without validation, early stopping would watch the training loss.
    config["patience"] = max(config["epochs"], config["fine_tune_epochs"]) + 1
    return config


def rows(manifest: Path) -> int:
    return sum(1 for _ in manifest.open()) - 1  # less the header


def run_one(method, manifest, work, cache, seed, args) -> tuple[float, float]:
    """(test accuracy, wall seconds of the finetune call)."""
    import tltoolkit
    from tltoolkit.evaluate import evaluate  # tltoolkit.evaluate is shadowed by its module once imported

    out = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=work))
    lines = []
    started = time.perf_counter()
    tltoolkit.finetune(config_for(method, manifest, out, cache, seed, args), progress=False, echo=lines.append)
    seconds = time.perf_counter() - started
    evaluation = evaluate(out, str(TEST))
    return float(evaluation.comparison["accuracy"].iloc[0]), seconds


def cell(accuracies: list[float], seconds: list[float]) -> str:
    mean = statistics.fmean(accuracies)
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return f"{mean:.3f} ± {spread:.3f} [{min(accuracies):.3f}–{max(accuracies):.3f}], {statistics.fmean(seconds):.0f} s"


def table(results: dict, args, command: str, complete: bool, total_seconds: float) -> str:
    header = "| images/class | " + " | ".join(TITLES[m] for m in args.methods) + " |"
    lines = ["# Transfer-learning table: resnet20_cifar, digits 5-9" + ("" if complete else " (PARTIAL)"), "",
             f"Command: `{command}`", "",
             f"Machine: {os.cpu_count()} CPU core(s), {platform.machine()}, no GPU used; "
             f"{total_seconds / 60:.1f} min in all.", "",
             f"Test accuracy on the {count_test()} held-out images of data/digits59-test: mean ± std over seeds "
             f"{', '.join(map(str, args.seeds))} [min–max], then the mean wall time of one finetune run. "
             f"Epochs: head {args.head_epochs}, fine-tune {args.fine_tune_epochs}, scratch {args.scratch_epochs} "
             f"(learning rate {args.scratch_learning_rate:g})"
             + (f", each raised to at least {args.min_steps} steps" if args.min_steps else "")
             + f"; batch {args.batch_size}; augment none; no validation split (fixed epochs).", "", header, "|" + " --- |" * (len(args.methods) + 1)]
    for label, by_method in results.items():
        lines.append(f"| {label} | " + " | ".join(cell(*by_method[m]) if m in by_method else "—"
                                                  for m in args.methods) + " |")
    if not complete:
        lines += ["", "PARTIAL: the grid was interrupted; only the runs above were measured (a row's last "
                  "cells may have fewer seeds)."]
    return "\n".join(lines) + "\n"


def count_test() -> int:
    return sum(1 for _ in TEST.glob("*/*.png"))


def write_atomically(path: Path, text: str) -> None:
    from tltoolkit.data.files import atomic_path

    with atomic_path(path) as temporary:
        Path(temporary).write_text(text)


def main(argv=None) -> None:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/transfer_table.py", *(sys.argv[1:] if argv is None else argv)])
    classes = pool_files()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices: each run builds new models on purpose
    with tempfile.TemporaryDirectory(prefix="tltoolkit-transfer-") as work:
        grid(args, command, classes, Path(work))
    print()
    print(args.out.read_text(), end="")
    print(f"(written to {args.out})")


def grid(args, command, classes, work: Path) -> None:
    cache = work / "cache"
    (work / "pool").symlink_to(POOL, target_is_directory=True)
    results: dict = {}
    started = time.perf_counter()
    for n in args.n:
        for seed in args.seeds:
            manifest = work / f"n{n}-seed{seed}.csv"
            row = results.setdefault(write_manifest(manifest, classes, n, seed), {})
            for method in args.methods:
                accuracy, seconds = run_one(method, manifest, work, cache, seed, args)
                accuracies, times = row.setdefault(method, ([], []))
                accuracies.append(accuracy)
                times.append(seconds)
                print(f"n={n} seed={seed} {method:8s} test accuracy {accuracy:.3f}  {seconds:5.1f} s", flush=True)
            complete = n == args.n[-1] and seed == args.seeds[-1]
            write_atomically(args.out, table(results, args, command, complete, time.perf_counter() - started))


if __name__ == "__main__":
    main()
