"""`tltoolkit extract`: images to feature vectors on disk, the batch job.

Writes `part-NNNNN.parquet` files (`path`, `label`, `sha256`, `view`, `features` as a fixed-size list) and
`_extract.json` (model, weights hash, layer, preprocessing, runtime, feature shape, count) into --out. Both
engines go through the feature cache (on this machine), so a re-run on a grown folder, or after a
kill, computes only what it lacks; `--engine ray` computes that on a Ray cluster (pip install
'tltoolkit[ray]').
"""

from __future__ import annotations

import sys

from tltoolkit.heads import GLOBAL_POOLINGS
from tltoolkit.preprocessing_modes import PREPROCESSING_HELP
from tltoolkit.runtimes import PRECISIONS, RUNTIMES



def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("extract", help="extract features of images to Parquet files",
                                   description=__doc__)
    parser.add_argument("--base", required=True, help="architecture id (see `tltoolkit models`), keras:NAME "
                        "(any keras.applications model) or a saved .keras base (needs --preprocessing)")
    parser.add_argument("--weights", default="imagenet", help="imagenet (default; for a saved .keras base: "
                        "its own weights), imagenet:TAG (tltoolkit models lists the tags), none (random init, "
                        "seeded by --seed) or a weights file (also a timm .safetensors or torchvision .pth)")
    parser.add_argument("--preprocessing", help=PREPROCESSING_HELP)
    parser.add_argument("--data", required=True, help="class folders, a CSV/Parquet manifest or tfds:NAME")
    parser.add_argument("--out", required=True, help="output folder (must be empty unless --force)")
    parser.add_argument("--layer", default="penultimate", help="penultimate (default: the vector before the "
                        "classifier; where that is the last stage average-pooled, computed and cached as finetune's "
                        "phase 1 does; for keras:NAME and a .keras base: the base's output, average-pooled), a "
                        "stage name or a layer name: its output")
    parser.add_argument("--pooling", choices=[*GLOBAL_POOLINGS, "none"], default="none",
                        help="pool a stage's feature map to a vector (default: none, keep the map)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, help="input size (default: the architecture's)")
    parser.add_argument("--resize", choices=["center_crop", "stretch", "pad"], default="center_crop")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation (--weights none) "
                        "and of the augmented views")
    parser.add_argument("--views", type=int, default=0, help="store K augmented views per image (rows "
                        "with view 0..K-1), drawn by --augment; default 0: the images as they are")
    parser.add_argument("--augment", help="augmentation policy for --views (none, light, standard, strong "
                        "or layer names such as flip,crop)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="tf", help="what computes the features on the "
                        "CPU: tf (default) or openvino (pip install 'tltoolkit[fast-cpu]'); a separate cache entry")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32 (default); bf16 or int8 "
                        "(calibrated on a seeded sample of your own images) need --runtime openvino and a CPU "
                        "that runs them natively; _extract.json records their fidelity to fp32")
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--workers", type=int, help="Ray actors (default: one per CPU of the cluster)")
    parser.add_argument("--cache-dir", help="cache folder: the feature entries, the scan cache (DIR/scans) and tfds listings (DIR/tfds) (default: $XDG_CACHE_HOME/tltoolkit/features and $XDG_CACHE_HOME/tltoolkit/scans)")
    parser.add_argument("--rehash", action="store_true", help="re-read and re-hash every image instead of "
                        "trusting the scan cache's size+mtime")
    parser.add_argument("--force", action="store_true", help="replace the extraction files in a non-empty --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args) -> int:
    from tltoolkit.features.job import extract_job  # TensorFlow loads only when a command runs

    job = extract_job(args.data, args.out, args.base, weights=None if args.weights == "none" else args.weights,
                      preprocessing=args.preprocessing, layer=args.layer,
                      pooling=None if args.pooling == "none" else args.pooling, dtype=args.dtype,
                      batch_size=args.batch_size, image_size=args.image_size, resize=args.resize, seed=args.seed,
                      views=args.views, augmentation=args.augment, engine=args.engine, address=args.address,
                      workers=args.workers, cache_dir=args.cache_dir, rehash=args.rehash, force=args.force, progress=not args.quiet,
                      log=lambda message: print(message, file=sys.stderr), runtime=args.runtime,
                      precision=args.precision)
    print(f"wrote {job.count} feature vector(s) {list(job.feature_shape)} to {job.out}")
    return 0
