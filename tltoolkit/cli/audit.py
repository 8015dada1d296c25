"""`tltoolkit audit`: near duplicates, likely label errors, outliers and class balance of a folder, found on
its cached features (a second audit of the same folder computes no features).

    tltoolkit audit --data ./cats --base resnet50 --out audit/
    tltoolkit audit --data data/digits59 --base resnet20_cifar \\
        --weights data/backbone/digits04_resnet20_cifar.weights.h5 --out audit/ --write-manifest clean.csv
    tltoolkit finetune --data clean.csv --base resnet50 --out runs/clean      # train without the flagged images

Writes audit.parquet (one row per finding: kind, path, sha256, label, split, score, suggested_label and the
other image of a pair), report.md and a contact sheet per kind (near_duplicates.png, label_errors.png,
outliers.png) into --out. Label errors need cleanlab: pip install 'tltoolkit[audit]'. Your images are never
moved or deleted; --write-manifest writes a path,label,split manifest without the flagged ones.
"""

from __future__ import annotations

import argparse
import sys

from tltoolkit.preprocessing_modes import PREPROCESSING_HELP


def add_common_arguments(parser) -> None:
    """What audit and rank share: the data, the feature cache and how images become features."""
    parser.add_argument("--data", required=True, help="class folders, a CSV/Parquet manifest or tfds:NAME")
    parser.add_argument("--weights", default="imagenet", help="imagenet (default), imagenet:TAG, none (random "
                        "init, seeded by --seed) or a weights file")
    parser.add_argument("--preprocessing", help=PREPROCESSING_HELP)
    parser.add_argument("--image-size", type=int, help="input size (default: the architecture's)")
    parser.add_argument("--val-split", type=float, default=0.2, help="validation share of the content-hash "
                        "split (default 0.2; a manifest's split column wins)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="cache folder: the feature entries, the scan cache (DIR/scans) and tfds listings (DIR/tfds) (default: $XDG_CACHE_HOME/tltoolkit/features and $XDG_CACHE_HOME/tltoolkit/scans)")
    parser.add_argument("--rehash", action="store_true", help="re-read and re-hash every image instead of "
                        "trusting the scan cache's size+mtime")
    parser.add_argument("--force", action="store_true", help="replace earlier outputs of this command")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def feature_options(args) -> dict:
    return dict(val_split=args.val_split, image_size=args.image_size, preprocessing=args.preprocessing,
                batch_size=args.batch_size, cache_dir=args.cache_dir, rehash=args.rehash, progress=not args.quiet, seed=args.seed)


def add_parser(subparsers) -> None:
    from tltoolkit.audit import DUPLICATE_COSINE, HASH_BITS, NEIGHBOURS

    parser = subparsers.add_parser("audit", help="find near duplicates, label errors and outliers in a folder",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--base", required=True, help="architecture id, keras:NAME or a saved .keras base")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--write-manifest", metavar="CSV", help="also write a manifest without the flagged images")
    parser.add_argument("--duplicate-cosine", type=float, default=DUPLICATE_COSINE,
                        help="smallest cosine similarity of centred features for a near duplicate (default %(default)s)")
    parser.add_argument("--hash-bits", type=int, default=HASH_BITS,
                        help="largest perceptual-hash distance (of 64 bits) for a near duplicate (default %(default)s)")
    parser.add_argument("--neighbours", type=int, default=NEIGHBOURS,
                        help="neighbours whose mean distance scores an outlier (default %(default)s)")
    parser.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold heads (default %(default)s)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from tltoolkit.audit import audit, check_outputs, require_cleanlab, write_audit

    check_outputs(args.out, args.write_manifest, args.force)  # before any work
    require_cleanlab()
    weights = None if args.weights == "none" else args.weights
    result = audit(args.data, args.base, weights, duplicate_cosine=args.duplicate_cosine, hash_bits=args.hash_bits,
                   neighbours=args.neighbours, folds=args.folds, **feature_options(args))
    folder = result.folder
    print(f"computed {folder.computed} of {len(folder.table)} image(s) ({len(folder.table) - folder.computed} from "
          f"the cache)", file=sys.stderr)
    written = write_audit(result, args.out, args.write_manifest, args.force)
    counts = result.findings.groupby("kind").size()
    print(", ".join(f"{counts.get(kind, 0)} {kind.replace('_', ' ')}(s)" for kind in
                    ("near_duplicate", "label_error", "outlier")) + f"; report: {written[1]}")
    return 0
