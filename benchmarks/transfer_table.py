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
`--quick`: n 5, seed 0: every method once per domain (2 min on 2 cores with the training before issue 11,
8 min with its measured policy and from-scratch recipe; `--domains digits59` for one domain).
"""

from __future__ import annotations

import argparse
import functools

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


def measure(args, domain, manifest, work, seed: int, prepared=None) -> dict:
    """{method: (test accuracy, seconds, finetune's decision where the method leaves it to finetune)}."""
    results = {}
    for method, settings in METHODS.items():
        if method in args.methods:
            run = common.run_finetune(domain, manifest, work, seed, **settings)
            results[method] = (run.accuracy, run.seconds, chosen(settings, run))
            print(f"{domain.name} {manifest.stem} {method:8s} test accuracy {run.accuracy:.3f}  {run.seconds:5.1f} s  "
                  f"({run.entry['decision']})", flush=True)
    return results


def chosen(settings: dict, run) -> str | None:
    """What finetune decided to train, where the method leaves that to it (auto, --weights none)."""
    return run.entry["decision"] if settings.get("freeze_until", "auto") == "auto" else None


def render(args, results: dict, command: str, complete: bool, total_seconds: float) -> str:
    def section(rows):
        lines = ["| images/class | " + " | ".join(TITLES[m] for m in args.methods) + " |",
                 "|" + " --- |" * (len(args.methods) + 1)]
        for label, seeds in rows.items():
            lines.append(f"| {label} | " + " | ".join(common.cell([s[m] for s in seeds]) for m in args.methods) + " |")
        return lines

    intro = (f"Test accuracy on each domain's held-out folder: mean ± std over seeds {', '.join(map(str, args.seeds))} "
             "[min–max], then the mean wall time of one finetune run. Every run is finetune with its defaults; only "
             "the method's setting is given (and --augment none for digits). Where the method leaves --freeze-until "
             "to finetune (auto, scratch), its decisions over the seeds are in brackets.")
    return common.document("Transfer-learning table: resnet20_cifar from the digits 0-4 backbone, finetune defaults",
                           intro, results, section, command, complete, total_seconds)


def main(argv=None) -> None:
    args = parse_args(argv)
    common.run_grid(args, "transfer_table", argv, functools.partial(measure, args), functools.partial(render, args))


if __name__ == "__main__":
    main()
