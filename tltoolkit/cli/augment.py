"""`tltoolkit augment`: see what an augmentation policy does to your images. Writes a PNG grid: one row
per image, the original (as the model sees it after resizing) in the first column, random variants after.
PCA colour statistics, where the policy uses them, are fitted on the previewed images."""

from __future__ import annotations

from pathlib import Path

from tltoolkit.cli.output import check_output_file
from tltoolkit.errors import TltoolkitError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("augment", help="preview an augmentation policy as a PNG grid",
                                   description=__doc__)
    parser.add_argument("--data", required=True, help="a folder of class subfolders, or a folder of images")
    parser.add_argument("--policy", default="standard",
                        help="preset (none, light, standard, strong) or layers, e.g. flip,crop,pca "
                             "(default: %(default)s)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--n", type=int, default=4, help="images to show, spread over the classes (default: 4)")
    parser.add_argument("--variants", type=int, default=5, help="augmented variants per image (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--image-size", type=int, default=224, help="input size in pixels (default: 224)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.set_defaults(run=run)


def run(args) -> int:
    out = check_output_file(args.out, "--out", (".png",), args.force)
    if not out.parent.is_dir():
        raise TltoolkitError(f"the folder {out.parent} does not exist; create it or choose another --out")
    if args.n < 1 or args.variants < 1 or args.image_size < 8:
        raise TltoolkitError("--n and --variants must be at least 1 and --image-size at least 8")

    from tltoolkit.augment import augmentation, fit_pca_color
    from tltoolkit.pipeline import image_dataset

    table = _preview_table(Path(args.data), args.n)
    images = next(iter(image_dataset(table, args.image_size, batch_size=len(table), deterministic=True,
                                     with_labels=False)))
    block = augmentation(args.policy, args.image_size, pca=fit_pca_color(images.numpy()), seed=args.seed)
    variants = [block(images, training=True).numpy() for _ in range(args.variants)]
    _write_grid(out, images.numpy(), variants, [str(Path(p).relative_to(args.data)) for p in table["path"]], args.policy)
    print(f"wrote {out}: {len(table)} images x {args.variants} variants, policy {args.policy}")
    return 0


def _preview_table(folder: Path, count: int):
    """Up to `count` decodable images of `folder`, taken in turn from each class subfolder."""
    import pandas as pd

    from tltoolkit.pipeline import decode_image_file

    if not folder.is_dir():
        raise TltoolkitError(f"--data {folder} is not a folder")
    by_class: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in parts):
            by_class.setdefault(parts[0] if len(parts) > 1 else "", []).append(path)
    chosen: list[str] = []
    queues = [iter(paths) for paths in by_class.values()]
    while queues and len(chosen) < count:
        for queue in list(queues):
            path = next(queue, None)
            if path is None:
                queues.remove(queue)
            elif len(chosen) < count and _decodes(decode_image_file, path):
                chosen.append(str(path))
    if not chosen:
        raise TltoolkitError(f"no decodable images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    # PIL decoding applies EXIF orientation and colour conversions without needing a scan.
    return pd.DataFrame({"path": chosen, "label_id": 0, "decoder": "pil"})


def _decodes(decode, path) -> bool:
    try:
        decode(path, "pil")
        return True
    except (OSError, ValueError, SyntaxError):  # PIL's errors for truncated, empty and non-image files
        return False


def _write_grid(out: Path, originals, variants, names, policy: str) -> None:
    from matplotlib.figure import Figure

    from tltoolkit.reports import save_figure

    rows, cols = len(originals), 1 + len(variants)
    figure = Figure(figsize=(2 * cols, 2 * rows))
    axes = figure.subplots(rows, cols, squeeze=False)
    for row in range(rows):
        cells = [originals[row]] + [v[row] for v in variants]
        for col, image in enumerate(cells):
            axis = axes[row, col]
            axis.imshow(image.clip(0, 255).astype("uint8"))
            axis.set_xticks([]), axis.set_yticks([])
            if row == 0:
                axis.set_title("original" if col == 0 else f"variant {col}", fontsize=9)
        axes[row, 0].set_ylabel(names[row], fontsize=8)
    figure.suptitle(f"augmentation policy: {policy}", fontsize=10)
    save_figure(figure, out)
