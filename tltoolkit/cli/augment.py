"""`tltoolkit augment`: see what an augmentation policy does to your images. Writes a PNG grid: one row
per image, the original (as the model sees it after resizing) in the first column, random variants after.
PCA colour statistics, where the policy uses them, are fitted on the previewed images."""

from __future__ import annotations

import os
from pathlib import Path

from tltoolkit.cli.output import check_output_file
from tltoolkit.errors import TltoolkitError

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
    names = [os.path.relpath(p, os.path.abspath(args.data)) for p in table["path"]]  # the listing's paths are absolute
    _write_grid(out, images.numpy(), variants, names, args.policy)
    print(f"wrote {out}: {len(table)} images x {args.variants} variants, policy {args.policy}")
    return 0


def _preview_table(folder: Path, count: int):
    """Up to `count` usable images of `folder`, taken in turn from each class subfolder (or from the
    folder itself), listed and probed as the scan does: links that leave a class folder, FIFOs and
    devices, oversized files and images of too many pixels are passed over, never read or decoded."""
    import pandas as pd

    from tltoolkit.data.probe import IMAGE_EXTENSIONS, probe_file
    from tltoolkit.data.scan import USABLE
    from tltoolkit.data.sources import list_folder

    if not folder.is_dir():
        raise TltoolkitError(f"--data {folder} is not a folder")
    listing = list_folder(folder).rows
    listing = listing[listing["reason"].isin(["", "no label"])]  # loose images preview too
    def usable(paths):
        for path in paths:
            if (probe := probe_file(path))["status"] in USABLE:
                yield {"path": path, "label_id": 0, **{k: probe[k] for k in ("decoder", "format", "width", "height")}}

    queues = [usable(group["path"]) for _, group in listing.groupby("label", sort=True)]
    chosen: list[dict] = []
    while queues and len(chosen) < count:  # one usable image of each class in turn
        for queue in list(queues):
            row = next(queue, None) if len(chosen) < count else None
            if row is None:
                queues.remove(queue)
            else:
                chosen.append(row)
    if not chosen:
        raise TltoolkitError(f"no usable images in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}; "
                             f"`tltoolkit scan --data {folder}` says why each file is passed over)")
    return pd.DataFrame(chosen)


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
