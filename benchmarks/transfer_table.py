"""Does transfer help? Held-out accuracy after training on n images per class, with finetune's defaults.

    .venv/bin/python benchmarks/transfer_table.py [--domains digits59 animals] [--n 5 20 100 all]
        [--seeds 0 1 2] [--methods head conv4 auto full scratch] [--quick]

Data (embedded, real, offline; see data/README.md): each domain's pool (`data/digits59`: digits 5-9,
~143 images per class, never seen by the backbone; `data/animals`: 10 classes of animal silhouettes,
150 per class); every model is scored on the domain's held-out `-test` folder, which no run sees.
For each n and seed, the seed draws n images per class from the pool (`all`: the whole pool, the
seed then only changes the initialisation and order).

Every method is one `tltoolkit.finetune` call with finetune's DEFAULTS (its validation split, epochs,
early stopping, learning rates, BatchNormalization policy), through the Python API in this one
process, each run in its own temporary folder; the feature caches are shared. The only settings
passed are what the method is, and `--augment none` for digits (a flipped digit is not a digit):
- head:    the embedded backbone (trained on digits 0-4), `--freeze-until head`.
- conv4:   the backbone, `--freeze-until conv4` (the last stage and the head train).
- auto:    the backbone, `--freeze-until auto`: the growth policy decides (the decision is shown).
- full:    the backbone, `--freeze-until none`.
- scratch: `--weights none` (freeze-until as finetune defaults it).
So when finetune's defaults change, this table measures the new ones unchanged.

Prints and writes (atomically, after every n, so an interrupted grid leaves the rows it measured,
marked partial) one Markdown table per domain: test accuracy mean ± std over seeds [min–max], and
the mean wall time of a run (the whole `finetune` call; evaluation not included).
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import common

METHODS = {"head": {"freeze_until": "head"}, "conv4": {"freeze_until": "conv4"}, "auto": {"freeze_until": "auto"},
           "full": {"freeze_until": "none"}, "scratch": {"weights": "none"}}
TITLES = {"head": "head only", "conv4": "conv4 + head", "auto": "auto (policy)", "full": "full fine-tune",
          "scratch": "from scratch (--weights none)"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(parser, ["5", "20", "100", "all"], [0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args(argv)
    if args.quick:  # one small row of each method on each domain
        args.n, args.seeds = ["5"], [0]
    return common.finish_arguments(parser, args, "transfer_table")


def table(results: dict, args, command: str, complete: bool, total_seconds: float) -> str:
    lines = common.preamble("Transfer-learning table: resnet20_cifar from the digits 0-4 backbone, finetune defaults",
                            command, complete, total_seconds)
    lines += ["Test accuracy on each domain's held-out folder: mean ± std over seeds "
              f"{', '.join(map(str, args.seeds))} [min–max], then the mean wall time of one finetune run. "
              "Every run is finetune with its defaults; only the method's setting is given (and --augment none "
              "for digits). Where the method leaves --freeze-until to finetune (auto, scratch), its decisions over the seeds are in brackets.", ""]
    for name, rows in results.items():
        domain = common.DOMAINS[name]
        lines += [f"## {domain.title}: `data/{name}`, {common.count_images(domain.test)} test images", "",
                  "| images/class | " + " | ".join(TITLES[m] for m in args.methods) + " |",
                  "|" + " --- |" * (len(args.methods) + 1)]
        for label, by_method in rows.items():
            cells = []
            for method in args.methods:
                if method not in by_method:
                    cells.append("—")
                    continue
                accuracies, seconds, decisions = by_method[method]
                decided = f" ({', '.join(f'{d} ×{c}' for d, c in collections.Counter(decisions).items())})"
                chosen = "freeze_until" not in METHODS[method]  # finetune decided what trains
                cells.append(common.cell(accuracies, seconds) + (decided if chosen else ""))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if not complete:
        lines += ["PARTIAL: the grid was interrupted; only the runs above were measured (a row's last "
                  "cells may have fewer seeds).", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    command = common.command_line("transfer_table", argv)
    for name in args.domains:
        common.pool_files(common.DOMAINS[name])  # before any training: a missing folder fails now
    common.quiet_tensorflow()
    with tempfile.TemporaryDirectory(prefix="tltoolkit-transfer-") as work:
        grid(args, command, Path(work))
    common.show(args.out)


def grid(args, command, work: Path) -> None:
    results: dict = {}
    started = time.perf_counter()
    for name in args.domains:
        domain = common.DOMAINS[name]
        for n in args.n:
            for seed in args.seeds:
                manifest, label = common.manifest_for(work, domain, n, seed)
                row = results.setdefault(name, {}).setdefault(label, {})
                for method in args.methods:
                    run = common.run_finetune(domain, manifest, work, seed, **METHODS[method])
                    accuracies, times, decisions = row.setdefault(method, ([], [], []))
                    accuracies.append(run.accuracy)
                    times.append(run.seconds)
                    decisions.append(run.entry["decision"])
                    print(f"{name} n={n} seed={seed} {method:8s} test accuracy {run.accuracy:.3f}  "
                          f"{run.seconds:5.1f} s  ({run.entry['decision']})", flush=True)
                complete = name == args.domains[-1] and n == args.n[-1] and seed == args.seeds[-1]
                common.write_atomically(args.out, table(results, args, command, complete, time.perf_counter() - started))


if __name__ == "__main__":
    main()
