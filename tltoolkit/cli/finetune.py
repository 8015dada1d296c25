"""`tltoolkit finetune`: a new softmax head on a base, two-phase training, into a run directory.

    tltoolkit finetune --base vgg16 --freeze-until block5 --data ./cats --out runs/cats

Phase 1 trains the head on cached features of the frozen base: a small sweep of L2/dropout settings,
each to convergence, the best on validation kept (seconds). Phase 2, when stages train, fine-tunes them
and the head end to end: discriminative low rates from a pretrained base, the from-scratch recipe
otherwise. `--freeze-until auto` (default) tries the head, the last stage, the last two, ... on
validation within a time budget and keeps the best. Re-running with the same --out on a grown folder
extracts only new images, warm-starts from the last model, decides again and appends to the run's
history. Every flag is also a --config key (JSON, or YAML with pyyaml): dashes become underscores.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from tltoolkit.training.config import add_arguments

    parser = subparsers.add_parser("finetune", help="fine-tune a pretrained network on class folders",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--config", help="a JSON/YAML file with any of these settings (flags override it)")
    parser.add_argument("--plan", action="store_true", help="print what would be done, without training")
    parser.add_argument("--force", action="store_true",
                        help="start --out over when it holds a run of another base or class set")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


NOT_SETTINGS = {"command", "run", "config", "plan", "force", "quiet"}


def run(args) -> int:
    from tltoolkit.training.config import load_config_file
    from tltoolkit.training.finetune import finetune

    flags = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS and v is not None}
    file_settings = load_config_file(args.config) if args.config else {}
    entry = finetune({**file_settings, **flags}, plan=args.plan, force=args.force, progress=not args.quiet)
    if args.plan:
        return 0
    kept = next(p for p in entry["phases"] if p["kept"])
    score = f"val_accuracy {kept['val_accuracy']:.3f}" if "val_accuracy" in kept else "no validation images"
    what = "the head" if kept["phase"] == 1 else f"phase 2, {kept['trial']}"
    if any(p["trial"] == "refit" for p in entry["phases"]):
        what += ", refit on the training and validation images"
    print(f"run {entry['run']} finished: {score} ({what}); report: {entry['config']['out']}/report.md")
    return 0
