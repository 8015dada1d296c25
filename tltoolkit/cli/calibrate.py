"""`tltoolkit calibrate`: refit a trained model's temperature and its rejection threshold on held-out
labelled images (class folders or a manifest, with the model's classes; images of other classes are
left out), and write them into the run's model.keras (or the .keras file) atomically.

    tltoolkit calibrate --model runs/cats --data ./cats-holdout --coverage 0.95

finetune fits both on its validation split, which also chose the head and the freeze point; a folder
that took no part in training gives an unbiased fit. Prints the expected calibration error at
temperature 1, at the stored temperature and refit (the last measured on the same images).
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("calibrate", help="refit the temperature and unknown threshold on held-out images",
                                   description=__doc__)
    parser.add_argument("--model", required=True, metavar="RUN_DIR|MODEL.keras", help="a run directory or .keras file")
    parser.add_argument("--data", required=True, help="labelled images: class folders, a CSV/Parquet manifest")
    parser.add_argument("--split", choices=["all", "train", "validation"], default="all",
                        help="which images of --data (the scan's content-hash split; default: %(default)s)")
    parser.add_argument("--val-split", type=float, default=0.2, help="validation fraction of that split")
    parser.add_argument("--coverage", type=float, help="share (0, 1] of these images kept above the rejection "
                        "threshold (default: the model's, else 0.95)")
    parser.add_argument("--score", help="rejection score: msp or energy (default: the model's, else msp)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args) -> int:
    from tltoolkit.inference.calibrate import calibrate

    result = calibrate(args.model, args.data, coverage=args.coverage, score=args.score, split=args.split,
                       val_split=args.val_split, batch_size=args.batch_size, progress=not args.quiet)
    print(result.summary())
    return 0
