"""`tltoolkit evaluate`: accuracy, top-k, per-class precision/recall/F1, confusion matrices, the most
confused pairs and the worst-predicted images of a model (or an ensemble) on labelled data.

Writes into --out (default RUN_DIR/evaluation, or ./evaluation for a .keras file): summary.json,
per_class.csv, predictions.csv, comparison.csv, confused_pairs.csv, confusion_matrix.png,
confusion_matrix_normalized.png, worst_predictions.png, reliability.png and, for one model with a
spatial stage, Grad-CAM panels of the worst predictions and of the most confident images per class
(explanations_worst.png, explanations_per_class.png). Images of classes the model does not know are
left out and counted. --ood FOLDER (images of none of the classes) measures
the rejection of unknown inputs: AUROC and the false-positive rate at the target coverage.
"""

from __future__ import annotations

import sys

from tltoolkit.cli.output import print_table
from tltoolkit.cli.predict import add_classifier_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="measure a model on labelled images", description=__doc__)
    parser.add_argument("--data", required=True, help="class folders, a CSV/Parquet manifest or tfds:NAME")
    parser.add_argument("--split", choices=["all", "train", "validation"], default="all",
                        help="which images of --data (the scan's content-hash split; default: %(default)s)")
    parser.add_argument("--val-split", type=float, default=0.2, help="validation fraction of that split")
    add_classifier_arguments(parser, "test-time augmentation, compared with none (default: %(default)s)")
    parser.add_argument("--ood", metavar="FOLDER", help="images of none of the classes: how well they are rejected")
    parser.add_argument("--out", help="report folder (default: RUN_DIR/evaluation)")
    parser.add_argument("--force", action="store_true", help="replace an earlier report in --out")
    parser.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from tltoolkit.errors import TltoolkitError
    from tltoolkit.inference.classifier import load_ensemble
    from tltoolkit.inference.evaluation import evaluate

    if args.batch_size < 1 or args.top_k < 1:
        raise TltoolkitError("--batch-size and --top-k must be at least 1")
    classifiers = load_ensemble(args.model)
    first = classifiers[0]
    out = Path(args.out) if args.out else (first.run_dir / "evaluation" if first.run_dir else Path("evaluation"))
    evaluation = evaluate(classifiers, args.data, tta=args.tta, top_k=args.top_k, batch_size=args.batch_size,
                          split=args.split, val_split=args.val_split, progress=not args.quiet, ood=args.ood,
                          coverage=args.coverage)
    files = evaluation.write(out, force=args.force)
    summary = evaluation.summary()
    k = evaluation.top_k
    print(f"{summary['images']} images, {summary['classes']} classes: accuracy {evaluation.accuracy:.4f}, "
          f"top-{k} {evaluation.top_k_accuracy:.4f}")
    if len(evaluation.comparison) > 1:
        print("\nsingle vs TTA vs ensemble:")
        print_table(evaluation.comparison.round(4), args.format)
    print("\nper class:")
    print_table(evaluation.per_class().round(4), args.format)
    pairs = evaluation.confused_pairs()
    if len(pairs):
        print("\nmost confused (true -> predicted):")
        print_table(pairs.round(4), args.format)
    if "rejection" in summary:
        print("\nrejection of unknown inputs:", describe_rejection(summary["rejection"]))
    if len(evaluation.unknown):
        listed = ", ".join(f"{row['class']} ({row['images']})" for _, row in evaluation.unknown.iterrows())
        print(f"left out {summary['unknown_class_images']} image(s) of classes the model does not know: {listed}",
              file=sys.stderr)
    if evaluation.quarantined:
        print(f"skipped {evaluation.quarantined} unusable file(s) (see `tltoolkit scan --data {args.data}`)", file=sys.stderr)
    print(f"\nwrote {len(files)} files to {out}")
    return 0


def describe_rejection(found: dict) -> str:
    parts = [f"{found['score']} score"]
    if "threshold" in found:
        parts.append(f"threshold {found['threshold']:.4g} keeps {found['coverage']:.1%} of these images")
    if "auroc" in found:
        parts.append(f"AUROC {found['auroc']:.3f} against {found['ood_images']} --ood images, false-positive rate "
                     f"{found['fpr_at_target_coverage']:.1%} at {found['target_coverage']:.0%} coverage of these images"
                     + (f" ({found['fpr_at_threshold']:.1%} at the threshold)" if "fpr_at_threshold" in found else ""))
    return "; ".join(parts)
