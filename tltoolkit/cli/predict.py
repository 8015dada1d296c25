"""`tltoolkit predict`: class labels with probabilities for image files and folders.

Folders are searched recursively for image files and run in batches through the input pipeline.
Files that cannot be read are reported in the `error` column, not fatal: the exit status is non-zero
only when no image could be predicted. Several --model: an ensemble (averaged probabilities).
Every image gets a rejection `score` (higher: more like the training classes); a model calibrated by
finetune or `tltoolkit calibrate` answers `unknown` below its threshold (chosen on validation for
its coverage, or for --coverage) and names the `closest` class. --explain OUT_DIR writes a Grad-CAM
overlay per image (where the network found the evidence for its top class) at the last spatial stage
or --explain-stage (a stage of the run's base, or a layer name).
"""

from __future__ import annotations

import sys

from tltoolkit.cli.output import add_format_argument, check_output_file, print_table
from tltoolkit.inference.tta import TTA_MODES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="predict the classes of images", description=__doc__)
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders")
    add_classifier_arguments(parser, "test-time augmentation (default: %(default)s)")
    parser.add_argument("--out", help="also write the predictions to this .csv or .parquet file")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file or --explain images")
    parser.add_argument("--explain", metavar="OUT_DIR", help="write a Grad-CAM overlay PNG per image into this folder")
    parser.add_argument("--explain-stage", metavar="STAGE", help="the stage (or layer) to explain at (default: the "
                        "last spatial one)")
    parser.set_defaults(run=run)


def add_classifier_arguments(parser, tta_help: str) -> None:
    """The arguments `predict` and `evaluate` share: the model(s), TTA, top-k, batching, progress, format."""
    parser.add_argument("--model", action="append", required=True, metavar="RUN_DIR|MODEL.keras",
                        help="a run directory or .keras file; repeat for an ensemble")
    parser.add_argument("--tta", choices=TTA_MODES, default="none", help=tta_help)
    parser.add_argument("--top-k", type=int, default=5, help="labels per image; the k of top-k accuracy (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--coverage", type=float, help="the rejection threshold: the one keeping this share (0, 1] "
                        "of the validation images (default: the model's, chosen by finetune or calibrate)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_format_argument(parser)


def run(args) -> int:
    from tltoolkit.data.files import atomic_path
    from tltoolkit.inference.classifier import load_ensemble
    from tltoolkit.inference.predict import image_table, predict

    out = check_output_file(args.out, "--out", (".csv", ".parquet"), args.force) if args.out else None
    classifiers = load_ensemble(args.model)
    if args.explain or args.explain_stage:
        check_explain(args, classifiers)
    table = image_table(args.images, progress=not args.quiet)
    frame = predict(classifiers, table, top_k=args.top_k, tta=args.tta, batch_size=args.batch_size,
                    progress=not args.quiet, coverage=args.coverage)
    if args.explain:
        from tltoolkit.explain import explain_files

        good = (frame["error"] == "").to_numpy()
        paths = explain_files(classifiers[0], table[good], args.explain, args.explain_stage, args.batch_size)
        frame["explanation"] = ""
        frame.loc[good, "explanation"] = [str(p) for p in paths]
    failed = frame[frame["error"] != ""]
    for row in failed.itertuples(index=False):
        print(f"skipped {row.path}: {row.error}", file=sys.stderr)
    if out is not None:
        with atomic_path(out) as temporary:
            if out.suffix.lower() == ".csv":
                frame.to_csv(temporary, index=False)
            else:
                frame.to_parquet(temporary, index=False)
    shown = frame if args.format in ("csv", "json") else frame.round(4)
    print_table(shown, args.format)
    if len(failed) == len(frame):
        print(f"no image could be predicted ({len(failed)} unreadable)", file=sys.stderr)
        return 1
    return 0


def check_explain(args, classifiers) -> None:
    """--explain's requests checked before any image is read: one model, a layer to explain at, a
    folder without earlier explanations (unless --force)."""
    from pathlib import Path

    from tltoolkit.errors import TltoolkitError
    from tltoolkit.explain import explained_layer

    if not args.explain:
        raise TltoolkitError("--explain-stage names where to explain; add --explain OUT_DIR for the images")
    if len(classifiers) > 1:
        raise TltoolkitError("--explain explains one model; pass a single --model")
    explained_layer(classifiers[0], args.explain_stage)
    folder = Path(args.explain)
    if folder.is_dir() and any(folder.glob("*.png")) and not args.force:
        raise TltoolkitError(f"--explain {folder} already holds images; pass --force to replace them or choose another folder")
