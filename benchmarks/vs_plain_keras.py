"""finetune's defaults against twenty lines of plain Keras, on the same training images and test set.

    .venv/bin/python benchmarks/vs_plain_keras.py [--domains digits59 animals] [--n 10 40 all] [--seeds 0 1 2]
        [--epochs 60] [--quick]

For each domain (data/README.md), n and seed: the seed draws n images per class from the pool; four
models train on them and are scored on the domain's held-out `-test` folder:
- tltoolkit, pretrained start: `tltoolkit.finetune` from the embedded ResNet-20 backbone (trained on
  digits 0-4) with its DEFAULTS: no protocol flags, its own validation split (taken from the n images),
  `--freeze-until auto`; only `--augment none` for digits (a flipped digit is not a digit).
- tltoolkit, `--weights none`: the same with a random start.
- plain Keras, from scratch: `tltoolkit.build("resnet20_cifar", weights=None, include_top=False,
  pooling="avg")` + Dense(softmax), every layer trained (BatchNormalization too), Adam 1e-3,
  `--epochs` epochs (default 60), batch 32, on all n images per class (no validation split),
  pixels through Keras' `preprocess_input(mode="torch")` (the base's preprocessing).
- plain Keras, pretrained: the same loop from the backbone's weights, everything trained.
Columns: test accuracy mean ± std over seeds and mean seconds (finetune: the whole call), then for
each tltoolkit variant its accuracy / the better plain loop's (mean over seeds; the worst seed's
difference in brackets). Target (issue 11): the defaults never more than 0.03 below the better plain loop.
`--quick`: n 10, seed 0, 3 plain epochs: a smoke run of every path (2 min on 2 cores with the training
before issue 11, 8 min with its phase 1 sweep and measured policy; `--domains digits59` for one domain).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

import common

METHODS = ("tl_pretrained", "tl_scratch", "plain_scratch", "plain_pretrained")
TITLES = {"tl_pretrained": "tltoolkit defaults, pretrained", "tl_scratch": "tltoolkit defaults, --weights none",
          "plain_scratch": "plain Keras, from scratch", "plain_pretrained": "plain Keras, pretrained, all trained"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(parser, ["10", "40", "all"], [0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the plain loops (default 60)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.seeds, args.epochs = ["10"], [0], 3
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return common.finish_arguments(parser, args, "vs_plain_keras")


def images(table, root: Path):
    """Pixels (float32 0..255, [N, 32, 32, 3]) and labels of the rows of `table` (path, label; paths
    relative to `root`), read with Pillow as a plain script would."""
    import numpy as np
    from PIL import Image

    def load(path):
        with Image.open(root / path) as image:
            return np.asarray(image.convert("RGB"), dtype="float32")

    return np.stack([load(p) for p in table["path"]]), table["label"].astype(str).to_numpy()


def folder_table(folder: Path):
    import pandas as pd

    return pd.DataFrame([(str(p.relative_to(folder)), p.parent.name) for p in sorted(folder.glob("*/*.png"))],
                        columns=["path", "label"])


def plain_loop(weights, train, test, epochs: int, seed: int) -> tuple[float, float]:
    """(test accuracy, seconds): the issue's twenty lines."""
    import keras
    import numpy as np

    import tltoolkit

    (x, labels), (x_test, test_labels) = train, test
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels])
    y_test = np.array([names.index(label) for label in test_labels])
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    base = tltoolkit.build(common.BASE, weights=weights, include_top=False, pooling="avg")
    model = keras.Model(base.input, keras.layers.Dense(len(names), activation="softmax")(base.output))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    preprocess = keras.applications.imagenet_utils.preprocess_input
    model.fit(preprocess(x.copy(), mode="torch"), y, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    seconds = time.perf_counter() - started
    accuracy = model.evaluate(preprocess(x_test.copy(), mode="torch"), y_test, batch_size=256, verbose=0)[1]
    return float(accuracy), seconds


def measure(args, domain, manifest: Path, work: Path, seed: int, test) -> dict:
    """{method: (test accuracy, seconds, finetune's decision or None)}."""
    import pandas as pd

    results = {}
    for method, settings in (("tl_pretrained", {}), ("tl_scratch", {"weights": "none"})):
        run = common.run_finetune(domain, manifest, work, seed, **settings)
        results[method] = (run.accuracy, run.seconds, run.entry["decision"])
    train = images(pd.read_csv(manifest), manifest.parent)
    for method, weights in (("plain_scratch", None), ("plain_pretrained", str(common.BACKBONE))):
        results[method] = (*plain_loop(weights, train, test, args.epochs, seed), None)
    for method, (accuracy, seconds, decision) in results.items():
        print(f"{domain.name} {manifest.stem} {method:16s} test accuracy {accuracy:.3f}  {seconds:5.1f} s"
              + (f"  ({decision})" if decision else ""), flush=True)
    return results


def against_plain(seeds: list[dict], method: str) -> str:
    ours = [s[method][0] for s in seeds]
    best = [max(s["plain_scratch"][0], s["plain_pretrained"][0]) for s in seeds]
    ratio = statistics.fmean(o / b for o, b in zip(ours, best))
    return f"{ratio:.3f} ({min(o - b for o, b in zip(ours, best)):+.3f})"


def render(args, results: dict, command: str, complete: bool, total_seconds: float) -> str:
    def section(rows):
        lines = ["| images/class | " + " | ".join(TITLES[m] for m in METHODS)
                 + " | pretrained / better plain | --weights none / better plain |", "|" + " --- |" * 7]
        for label, seeds in rows.items():
            lines.append(f"| {label} | " + " | ".join(common.cell([s[m] for s in seeds]) for m in METHODS)
                         + f" | {against_plain(seeds, 'tl_pretrained')} | {against_plain(seeds, 'tl_scratch')} |")
        return lines

    intro = (f"resnet20_cifar; seeds {', '.join(map(str, args.seeds))}; plain loops: Adam 1e-3, {args.epochs} epochs, "
             "batch 32, all n images. Test accuracy mean ± std over seeds [min–max], mean seconds (finetune's "
             "decisions in brackets); ratio = tltoolkit / the better plain loop per seed, mean (worst seed's "
             "difference).")
    return common.document("finetune defaults vs plain Keras loops", intro, results, section, command, complete,
                           total_seconds)


def held_out_images(domain, work: Path):
    """The domain's test folder as pixels and labels, read once per domain."""
    return images(folder_table(domain.test), domain.test)


def main(argv=None) -> None:
    args = parse_args(argv)
    common.run_grid(args, "vs_plain_keras", argv, functools.partial(measure, args), functools.partial(render, args),
                    prepare=held_out_images)


if __name__ == "__main__":
    main()
