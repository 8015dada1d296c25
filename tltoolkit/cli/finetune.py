"""`tltoolkit finetune`: a new softmax head on a pretrained base, two-phase training, into a run directory.

    tltoolkit finetune --base vgg16 --freeze-until block5 --data ./cats --out runs/cats

Phase 1 trains the head on cached features of the frozen base (seconds per epoch); phase 2, when
stages are unfrozen, trains them and the head end to end with lower rates for earlier stages.
`--freeze-until auto` (default) lets the growth policy choose from the training images per class.
Re-running with the same --out on a grown folder extracts only new images, warm-starts from the last
model, applies the policy again and appends to the run's history. Every flag is also a --config key
(JSON, or YAML with pyyaml): dashes become underscores.
"""

from __future__ import annotations

import argparse


def _flag(parser, name: str, help: str, **kwargs) -> None:
    # default=None: a flag not given leaves the --config value (or the built-in default) in place.
    parser.add_argument(f"--{name}", default=None, help=help, **kwargs)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("finetune", help="fine-tune a pretrained network on class folders",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _flag(parser, "base", "architecture id (see `tltoolkit models`), keras:NAME (any keras.applications model, "
          "e.g. keras:EfficientNetB0) or a saved .keras base (needs --preprocessing)")
    _flag(parser, "weights", "imagenet (default; for a saved .keras base: its own weights), imagenet:TAG "
          "(tltoolkit models lists the tags), none (random init, seeded by --seed) or a weights file (also a "
          "timm .safetensors or torchvision .pth)")
    _flag(parser, "preprocessing", "how pixels are scaled for the base: caffe, tf, torch, scale or none "
          "(default: the base's; required for a saved .keras base)")
    _flag(parser, "data", "class folders, a CSV/Parquet manifest or tfds:NAME")
    _flag(parser, "out", "the run directory (default: runs/DATA-BASE); re-use it to continue on a grown dataset")
    _flag(parser, "freeze-until", "auto (default: the growth policy), a stage (it and all after it train; "
          "`tltoolkit layers BASE`), a layer name (the same, from that layer), head (train only the head) "
          "or none (train everything)")
    _flag(parser, "image-size", "input size in pixels (default: the architecture's)", type=int)
    _flag(parser, "resize", "center_crop (default), stretch or pad", choices=["center_crop", "stretch", "pad"])
    _flag(parser, "batch-size", "batch size (default 32)", type=int)
    _flag(parser, "epochs", "phase-1 epochs: the head on cached features (default 30, with early stopping)", type=int)
    _flag(parser, "min-head-steps", "phase-1 optimizer steps at least: on a small folder an epoch repeats "
                                    "the cached features to reach them (default 300; 0: one pass per epoch)", type=int)
    _flag(parser, "fine-tune-epochs", "phase-2 epochs: unfrozen stages and head (default 10)", type=int)
    _flag(parser, "learning-rate", "phase-1 learning rate (default 1e-3)", type=float)
    _flag(parser, "fine-tune-learning-rate", "phase-2 rate of the head (default 1e-4); the last trained "
          "stage gets it times --stage-lr-decay, each earlier stage that again", type=float)
    _flag(parser, "stage-lr-decay", "per-stage learning-rate factor in phase 2 (default 0.3)", type=float)
    _flag(parser, "warmup-epochs", "phase-2 linear warm-up epochs before the cosine decay (default 1)", type=int)
    _flag(parser, "augment", "augmentation in phase 2: none, light, standard (default), strong or layer names")
    _flag(parser, "val-split", "validation fraction, by content hash: stable as the folder grows (default 0.2)",
          type=float)
    _flag(parser, "cache-dir", "feature cache folder (default: $XDG_CACHE_HOME/tltoolkit/features)")
    _flag(parser, "seed", "seed of initialisation, shuffling and augmentation (default 0)", type=int)
    _flag(parser, "hidden", "hidden Dense layer sizes of the head, comma-separated (default: none)",
          type=lambda text: [int(v) for v in text.split(",") if v.strip()])
    _flag(parser, "dropout", "dropout before the classifier (default 0.2)", type=float)
    _flag(parser, "pooling", "avg (default), max, flatten or none", choices=["avg", "max", "flatten", "none"])
    _flag(parser, "l2", "L2 weight decay on the head's kernels (default 0)", type=float)
    _flag(parser, "label-smoothing", "label smoothing (default 0)", type=float)
    _flag(parser, "class-weight", "auto: weigh classes by inverse frequency (default none)", choices=["none", "auto"])
    _flag(parser, "bn", "frozen (default: BatchNorm keeps its statistics) or train (unfrozen BN layers update)",
          choices=["frozen", "train"])
    _flag(parser, "patience", "early-stopping patience in epochs (default 3)", type=int)
    _flag(parser, "monitor", "val_loss (default) or val_accuracy: early stopping and the best model",
          choices=["val_loss", "val_accuracy"])
    _flag(parser, "strategy", "auto (default: mirrored with several GPUs), mirrored, multiworker (TF_CONFIG), "
          "tpu or none", choices=["auto", "mirrored", "multiworker", "tpu", "none"])
    parser.add_argument("--mixed-precision", action="store_const", const=True, default=None,
                        help="float16 compute in phase 2 (for GPUs/TPUs)")
    parser.add_argument("--jit", action="store_const", const=True, default=None, help="XLA-compile training steps")
    parser.add_argument("--no-cut-cache", dest="cut_cache", action="store_const", const=False, default=None,
                        help="without augmentation, phase 2 trains on a cache of the last frozen stage's output "
                             "(default); this trains on images instead")
    parser.add_argument("--config", help="a JSON/YAML file with any of these settings (flags override it)")
    parser.add_argument("--plan", action="store_true", help="print what would be done, without training")
    parser.add_argument("--force", action="store_true",
                        help="start --out over when it holds a run of another base or class set")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


NOT_SETTINGS = {"command", "run", "config", "plan", "force", "quiet"}


def run(args) -> int:
    from tltoolkit.training.finetune import finetune, load_config_file

    flags = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    file_settings = load_config_file(args.config) if args.config else {}
    if isinstance(flags.get("weights"), str) and flags["weights"].lower() == "none":
        flags["weights"] = "none"
    config = {**file_settings, **{k: v for k, v in flags.items() if v is not None}}
    entry = finetune(config, plan=args.plan, force=args.force, progress=not args.quiet)
    if args.plan:
        return 0
    kept = [p for p in entry["phases"] if p.get("kept", True)][-1]
    score = f"val_accuracy {kept['val_accuracy']:.3f}" if "val_accuracy" in kept else "no validation images"
    print(f"run {entry['run']} finished: {score} (the phase-{kept['phase']} model); "
          f"report: {entry['config']['out']}/report.md")
    return 0
