"""Writes the recipe notebooks from the cells below, so that every recipe starts the same way.

    python recipes/make_recipes.py           # (re)writes recipes/*.ipynb defined here
    python recipes/make_recipes.py --check   # exit 1 if a notebook differs from what this writes

Each notebook: a title with an "Open in Colab" badge, an install cell (a no-op where tltoolkit is
installed), a `parameters` cell (papermill's tag) choosing the full Colab settings or the small smoke
settings that CI runs (`TLTOOLKIT_SMOKE=1`/`0` forces either; smoke is the default off Colab), then
the recipe. Edit the cells here, not in the .ipynb files, and run this script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
COLAB = "https://colab.research.google.com/github/OWNER/REPO/blob/main/recipes/{name}"  # placeholder repo
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

INSTALL = '''\
# Installs tltoolkit where it is missing (Colab); a no-op where it is installed (CI, a checkout).
import importlib.util
import os
import pathlib
import subprocess
import sys

REPO = "https://github.com/OWNER/REPO"  # placeholder: see recipes/README.md
if importlib.util.find_spec("tltoolkit") is None:
    !git clone --quiet --depth 1 {REPO} tltoolkit-repo
    %pip install --quiet ./tltoolkit-repo
    importlib.invalidate_caches()
import tltoolkit


def repository_root() -> pathlib.Path:
    """The checkout holding data/, the embedded sample data."""
    here = pathlib.Path.cwd()
    for folder in (pathlib.Path(tltoolkit.__file__).parents[1], here, *here.parents, here / "tltoolkit-repo"):
        if (folder / "data" / "digits59").is_dir():
            return folder.resolve()
    raise FileNotFoundError("no data/digits59 found: run this notebook from a tltoolkit checkout")


def run_cli(*args):
    """Runs `tltoolkit ARGS` as in a terminal, shows its output, raises if it fails."""
    print("$ tltoolkit", " ".join(args))
    done = subprocess.run([sys.executable, "-m", "tltoolkit", *args], capture_output=True, text=True)
    print(done.stdout + done.stderr)
    done.check_returncode()


ROOT = repository_root()
print("tltoolkit", tltoolkit.__version__, "| sample data in", ROOT / "data")'''

SMOKE_SWITCH = '''\
IN_COLAB = "google.colab" in sys.modules
SMOKE = os.environ.get("TLTOOLKIT_SMOKE", "0" if IN_COLAB else "1") == "1"'''


def header(name: str, title: str, intro: str, parameters: str) -> list:
    badge = f"[![Open In Colab]({BADGE})]({COLAB.format(name=name)})"
    return [
        new_markdown_cell(f"# {title}\n\n{badge}\n\n{intro}"),
        new_code_cell(INSTALL),
        new_markdown_cell("**Parameters.** On Colab the full settings run; elsewhere (and in CI) a small "
                          "smoke setting that only shows the steps work. Set `TLTOOLKIT_SMOKE=1` or `0` to force one."),
        new_code_cell(f"{SMOKE_SWITCH}\n{parameters}", metadata={"tags": ["parameters"]}),
    ]


FEATURE_EXTRACTION = header(
    "02_feature_extraction.ipynb",
    "Feature extraction as a batch job",
    "`tltoolkit extract` runs the frozen part of a network over a folder (or a TFDS dataset) and writes "
    "one feature vector per image to Parquet files that any tool reads. Here: extract, load with "
    "pandas, look up nearest neighbours, and fit a linear probe with scikit-learn.\n\n"
    "- **Colab**: 3,670 flower photos (`tfds:tf_flowers`) through ResNet-50 with ImageNet weights.\n"
    "- **Smoke**: the embedded handwritten digits 5-9 through the embedded ResNet-20, pretrained on "
    "digits 0-4 only (see `data/README.md`): features for classes the network has never seen.",
    '''\
if SMOKE:
    BASE, WEIGHTS, IMAGE_SIZE = "resnet20_cifar", str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5"), 32
    TRAIN, TEST = str(ROOT / "data/digits59"), str(ROOT / "data/digits59-test")
else:
    BASE, WEIGHTS, IMAGE_SIZE = "resnet50", "imagenet", 224
    TRAIN, TEST = "tfds:tf_flowers:train[:80%]", "tfds:tf_flowers:train[80%:]"
OUT = pathlib.Path("recipe-output/02_feature_extraction")''') + [
    new_markdown_cell(
        "## 1. Extract\n\nThe same command runs on a laptop or, with `--engine ray --address ...`, on a Ray "
        "cluster. Features go through tltoolkit's feature cache, so re-running on a grown folder computes "
        "only the new images. `--force` lets this notebook be re-run into the same folders."),
    new_code_cell('''\
for split, data in (("train", TRAIN), ("test", TEST)):
    run_cli("extract", "--base", BASE, "--weights", WEIGHTS, "--data", data, "--image-size", str(IMAGE_SIZE),
            "--out", str(OUT / split), "--quiet", "--force")'''),
    new_markdown_cell(
        "## 2. Load with pandas\n\nEach row is an image: `path`, `label`, `sha256` (of the file's bytes) and "
        "`features`, a fixed-size list. `_extract.json` records the model, the weights' hash, the layer "
        "and the preprocessing, so features from different models are never mixed up."),
    new_code_cell('''\
import json

import numpy as np
import pandas as pd

train = pd.read_parquet(OUT / "train")
test = pd.read_parquet(OUT / "test")
about = json.loads((OUT / "train" / "_extract.json").read_text())
print({key: about[key] for key in ("model", "layer", "feature_shape", "preprocessing", "count")})
X_train, y_train = np.stack(train["features"].to_numpy()), train["label"].to_numpy()
X_test, y_test = np.stack(test["features"].to_numpy()), test["label"].to_numpy()
print("train", X_train.shape, "test", X_test.shape)
train.head(3)'''),
    new_markdown_cell(
        "## 3. Nearest neighbours\n\nImages whose features are close look alike to the network. For a few "
        "test images, the five closest training images by cosine distance:"),
    new_code_cell('''\
import matplotlib.pyplot as plt
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

index = NearestNeighbors(n_neighbors=5, metric="cosine").fit(X_train)
queries = test.groupby("label").head(1).index[:4]
_, found = index.kneighbors(X_test[queries])
fig, axes = plt.subplots(len(queries), 6, figsize=(9, 1.6 * len(queries)))
for row, (query, neighbours) in enumerate(zip(queries, found)):
    cells = [(test.path[query], f"query: {test.label[query]}")] + [(train.path[i], train.label[i]) for i in neighbours]
    for axis, (path, title) in zip(axes[row], cells):
        axis.imshow(Image.open(path).convert("RGB"))
        axis.set_title(title, fontsize=8)
        axis.axis("off")
plt.tight_layout()
plt.show()
knn = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(X_train, y_train)
print(f"5-nearest-neighbour accuracy on the test images: {knn.score(X_test, y_test):.3f}")'''),
    new_markdown_cell(
        "## 4. A linear probe\n\nA logistic regression on the frozen features: the cheapest classifier, and the "
        "usual measure of how good features are. (`tltoolkit finetune` trains the same kind of head on "
        "cached features as its first phase.)"),
    new_code_cell('''\
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
print(f"linear probe accuracy on {len(y_test)} test images: {probe.score(X_test, y_test):.3f}")
print(classification_report(y_test, probe.predict(X_test), digits=3))'''),
]

TOUR_ARCHS = '["lenet5", "alexnet", "vgg16", "googlenet", "resnet50", "densenet121"]'

ARCHITECTURE_TOUR = header(
    "04_architecture_tour.ipynb",
    "Architecture tour: LeNet-5 to DenseNet",
    "Six networks that shaped image classification, as tltoolkit builds them: their size and cost from "
    "the registry (and checked by counting the built models), their stages (the freeze points of "
    "`--freeze-until`), and an experiment behind the step from VGG to ResNet: deeper *plain* networks "
    "train worse (the degradation problem), residual connections fix it.",
    f'''\
TOUR = {TOUR_ARCHS}
DEPTHS = ["resnet20_cifar", "resnet56_cifar"]  # He et al.'s CIFAR ResNets, each also built plain
if SMOKE:  # the embedded digits 5-9, a few images and epochs: shows the steps work, proves nothing
    DATA, PER_CLASS, EPOCHS, BATCH = "digits", 20, 2, 32
else:  # CIFAR-10, as in the paper (shortened): about half an hour on a Colab GPU
    DATA, PER_CLASS, EPOCHS, BATCH = "cifar10", None, 30, 128''') + [
    new_markdown_cell(
        "## 1. The lineage in numbers\n\nParameters and multiply-accumulates (MACs) per image at each "
        "network's default input size, as pinned in the registry next to the published references."),
    new_code_cell('''\
import re

import pandas as pd

rows = []
for arch in TOUR:
    spec = tltoolkit.get_spec(arch)
    imagenet = spec.weights.get("imagenet")
    rows.append({"id": arch, "paper": re.match(r".*?\\b(?:19|20)\\d\\d\\b", spec.paper).group(0),  # authors and year
                 "input": "x".join(map(str, spec.default_input_shape)), "params (M)": spec.params / 1e6,
                 "GMACs": spec.macs, "stages": len(spec.stages),
                 "ImageNet top-1": imagenet.top1 if imagenet and imagenet.top1 else None})
lineage = pd.DataFrame(rows).set_index("id")
lineage.round(3)'''),
    new_markdown_cell("The same numbers counted on the built models (`tltoolkit.architectures.profile.count_macs`), "
                      "and each stage's layers and the trainable parameters when frozen until it "
                      "(what `tltoolkit layers ARCH` prints):"),
    new_code_cell('''\
import keras

from tltoolkit.architectures.profile import count_macs
from tltoolkit.cli.layers import stages_table

for arch in TOUR:
    model = tltoolkit.build(arch)
    spec = tltoolkit.get_spec(arch)
    macs = count_macs(model) / 1e9
    print(f"\\n{arch}: {model.count_params():,} parameters (registry {spec.params:,}), {macs:.3f} GMACs (registry {spec.macs:.3f})")
    assert model.count_params() == spec.params
    print(stages_table(arch).to_string(index=False))
    del model
    keras.backend.clear_session()'''),
    new_markdown_cell("LeNet-5 in full (`model.summary()`): seven layers, 60k parameters, built for 32x32 digits in 1998."),
    new_code_cell('tltoolkit.build("lenet5").summary()'),
    new_markdown_cell("## 2. The comparison chart"),
    new_code_cell('''\
import matplotlib.pyplot as plt

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.bar(lineage.index, lineage["params (M)"], color="tab:blue")
left.set_yscale("log")
left.set_ylabel("parameters (millions, log)")
twin = left.twinx()
twin.plot(lineage.index, lineage["GMACs"], "o-", color="tab:red")
twin.set_yscale("log")
twin.set_ylabel("GMACs per image (log)", color="tab:red")
left.tick_params(axis="x", rotation=30)
left.set_title("size and cost, in order of publication")
known = lineage.dropna(subset=["ImageNet top-1"])
right.scatter(known["GMACs"], known["ImageNet top-1"], s=known["params (M)"] * 4, alpha=0.5)
for arch, row in known.iterrows():
    right.annotate(arch, (row["GMACs"], row["ImageNet top-1"]), fontsize=8)
right.set_xscale("log")
right.set_xlabel("GMACs per image (log)")
right.set_ylabel("ImageNet top-1 (published weights)")
right.set_title("accuracy vs cost (bubble: parameters)")
plt.tight_layout()
plt.show()'''),
    new_markdown_cell(
        "## 3. Plain vs residual: the degradation problem\n\nHe et al. (2015, Fig. 1 and 6) found that a "
        "56-layer *plain* network has a higher **training** error than a 20-layer one on CIFAR-10: not "
        "overfitting, an optimisation failure. With identity shortcuts the deeper network trains better "
        "than the shallower one. `plain=True` builds the same CIFAR ResNet without its shortcuts.\n\n"
        "In smoke mode (a couple of epochs on 100 digit images) the numbers mean nothing; run the "
        "full setting on Colab to see the effect."),
    new_code_cell('''\
import time

import tensorflow as tf

from tltoolkit.architectures.preprocessing import preprocessing_layer


def datasets():
    """(train, test, number of classes) as batches of raw 0..255 pixels and class ids."""
    if DATA == "digits":
        train = tltoolkit.scan(ROOT / "data/digits59", check=False).usable().groupby("label").head(PER_CLASS)
        test = tltoolkit.scan(ROOT / "data/digits59-test", check=False).usable()
        return (tltoolkit.image_dataset(train, 32, BATCH, shuffle=True, seed=0),
                tltoolkit.image_dataset(test, 32, BATCH), train["label"].nunique())
    import tensorflow_datasets as tfds

    train, test = tfds.load(DATA, split=["train", "test"], as_supervised=True)
    return (train.shuffle(10_000, seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE),
            test.batch(BATCH).prefetch(tf.data.AUTOTUNE), 10)


def experiment(arch, plain, train, test, num_classes):
    keras.utils.set_random_seed(0)
    spec = tltoolkit.get_spec(arch)
    inputs = keras.Input((32, 32, 3))
    x = inputs if SMOKE else tltoolkit.augmentation("light", image_size=32, seed=0)(inputs)
    x = preprocessing_layer(spec.preprocessing)(x)
    outputs = tltoolkit.build(arch, num_classes=num_classes, plain=plain)(x)
    model = keras.Model(inputs, outputs)
    steps = EPOCHS * int(train.cardinality())
    schedule = keras.optimizers.schedules.CosineDecay(0.1 if not SMOKE else 0.01, steps)
    model.compile(keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=1e-4),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=SMOKE)  # a smoke run is a few steps: tracing the graph would cost more
    started = time.perf_counter()
    history = model.fit(train, epochs=EPOCHS, verbose=0)
    _, test_accuracy = model.evaluate(test, verbose=0)
    return {"train error": 1 - history.history["accuracy"][-1], "test error": 1 - test_accuracy,
            "params": model.count_params(), "seconds": time.perf_counter() - started,
            "curve": [1 - a for a in history.history["accuracy"]]}


train, test, num_classes = datasets()
results = {}
for arch in DEPTHS:
    for plain in (True, False):
        name = f"{'plain' if plain else 'ResNet'}-{arch.removeprefix('resnet').split('_')[0]}"
        results[name] = experiment(arch, plain, train, test, num_classes)
        print(f"{name}: train error {results[name]['train error']:.3f}, test error {results[name]['test error']:.3f}")'''),
    new_code_cell('''\
fig, axis = plt.subplots(figsize=(6, 4))
for name, result in results.items():
    axis.plot(range(1, EPOCHS + 1), result["curve"], "--" if name.startswith("plain") else "-", label=name)
axis.set_xlabel("epoch")
axis.set_ylabel("training error")
axis.set_title(f"{DATA}: plain vs residual" + (" (smoke: means nothing)" if SMOKE else ""))
axis.legend()
plt.show()
pd.DataFrame(results).T.drop(columns="curve")'''),
    new_markdown_cell(
        "**Reading it.** On the full setting, expect plain-56 to end with a *higher training error* than "
        "plain-20 while ResNet-56 ends *lower* than ResNet-20. In the smoke run (2 epochs on 100 images) "
        "any order can appear: it only shows that the code runs."),
]

NOTEBOOKS = {
    "02_feature_extraction.ipynb": FEATURE_EXTRACTION,
    "04_architecture_tour.ipynb": ARCHITECTURE_TOUR,
}


def notebook(name: str, cells: list):
    for number, cell in enumerate(cells):
        cell["id"] = f"{name.split('_')[0]}-{number:02d}"  # stable ids: the files change only when cells do
    book = new_notebook(cells=cells)
    book.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}, "colab": {"provenance": []}}
    return book


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report notebooks that differ; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(notebook(name, cells)) + "\n"
        path = HERE / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            temporary = path.with_name(f".{name}.tmp")
            temporary.write_text(text)
            temporary.replace(path)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python recipes/make_recipes.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
