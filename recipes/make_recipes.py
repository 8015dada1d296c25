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
from tltoolkit.architectures.inspect import stages_table

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

QUICKSTART = header(
    "01_quickstart.ipynb",
    "Quickstart: fine-tune a pretrained network on your images",
    "One command turns a folder of class subfolders (or a TFDS dataset) and a pretrained network into a "
    "classifier: `tltoolkit finetune` trains a new head on cached features of the frozen network, lets "
    "the growth policy decide whether to fine-tune later stages too, and writes a run directory with the "
    "model, metrics, plots and a report. Then `predict` and `evaluate` use that run.\n\n"
    "- **Colab**: cats vs dogs (`tfds:cats_vs_dogs`, 23,262 photos) on ResNet-50 with ImageNet weights, "
    "its last stage (`conv5`) fine-tuned after the head.\n"
    "- **Smoke**: the embedded handwritten digits 5-9 on the embedded ResNet-20, pretrained on digits 0-4 "
    "only (see `data/README.md`): real transfer to classes the network has never seen, in seconds.",
    '''\
OUT = pathlib.Path("recipe-output/01_quickstart")
RUN = OUT / "run"
if SMOKE:
    DATA, TEST = str(ROOT / "data/digits59"), str(ROOT / "data/digits59-test")
    BASE_ARGS = ["--base", "resnet20_cifar", "--weights", str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5")]
    # Digits are not mirror images of each other: no augmentation. Few epochs: about a minute on a laptop CPU.
    TRAIN_ARGS = ["--augment", "none", "--epochs", "15", "--fine-tune-epochs", "3"]
else:
    DATA, TEST = "tfds:cats_vs_dogs:train[:90%]", "tfds:cats_vs_dogs:train[90%:]"
    BASE_ARGS = ["--base", "resnet50", "--weights", "imagenet", "--freeze-until", "conv5"]
    TRAIN_ARGS = ["--augment", "standard", "--fine-tune-epochs", "5", "--mixed-precision"]''') + [
    new_markdown_cell(
        "## 1. Plan, then fine-tune\n\n`--plan` says what would run (data, policy decision, images to "
        "extract) without training. The run then shows each phase and where its report is. `--force` lets "
        "this notebook be re-run into the same folder; without it, an existing run is never overwritten "
        "(a re-run on a grown folder continues it, see recipe 03)."),
    new_code_cell('''\
run_cli("finetune", *BASE_ARGS, "--data", DATA, "--out", str(RUN), *TRAIN_ARGS, "--plan", "--force")'''),
    new_code_cell('''\
run_cli("finetune", *BASE_ARGS, "--data", DATA, "--out", str(RUN), *TRAIN_ARGS, "--quiet", "--force")'''),
    new_markdown_cell(
        "## 2. The run directory\n\n`report.md` (the decisions and their reasons, each phase's result), "
        "`plots/curves.png` (loss and accuracy per epoch, phase boundaries marked), `metrics.csv`, "
        "`model.keras` (uint8 images in, probabilities out) and the data snapshot."),
    new_code_cell('''\
from IPython.display import Image, Markdown, display

print(sorted(p.name for p in RUN.iterdir()))
display(Markdown((RUN / "report.md").read_text()))'''),
    new_code_cell('display(Image(filename=str(RUN / "plots/curves.png")))'),
    new_markdown_cell(
        "## 3. Predict a few held-out images\n\nOne image per class that training never saw (`predict` also "
        "takes folders, and `--out predictions.csv`)."),
    new_code_cell('''\
scanned = tltoolkit.scan(TEST, check=False).usable()
samples = scanned.groupby("label").head(1).head(5)
run_cli("predict", "--model", str(RUN), "--top-k", "2", "--quiet", *samples["path"])
print("true labels:", ", ".join(samples["label"]))'''),
    new_markdown_cell(
        "The same from Python: a pandas table, one row per image."),
    new_code_cell('''\
predictions = tltoolkit.predict(str(RUN), list(samples["path"]), top_k=2)
predictions.assign(true=samples["label"].to_numpy()).drop(columns="error")'''),
    new_markdown_cell(
        "## 4. Evaluate on the held-out set\n\nAccuracy, per-class precision/recall/F1, the most confused "
        "pairs, and figures in `evaluation/`."),
    new_code_cell('''\
run_cli("evaluate", "--model", str(RUN), "--data", TEST, "--out", str(OUT / "evaluation"), "--quiet", "--force")
display(Image(filename=str(OUT / "evaluation/confusion_matrix.png")))'''),
    new_markdown_cell(
        "**Reading it.** The smoke run trains for seconds on 583 digit images with a backbone that has only "
        "seen digits 0-4: the accuracy is real but far from what longer training gives (`make demo` trains "
        "phase 2 for 20 epochs). On Colab, the ImageNet ResNet-50 separates cats from dogs well after the "
        "head alone; fine-tuning `conv5` usually adds a little."),
]

GROWING_DATASET = header(
    "03_growing_dataset.ipynb",
    "The growing dataset",
    "Labelled images arrive over time. Re-running `tltoolkit finetune` with the same `--out` on the grown "
    "folder continues the run: the content-hash split keeps every earlier image on its side, the feature "
    "cache extracts only the new images, the model warm-starts from the last run, and the growth policy "
    "trains more of the network as the data grows (the more labelled data, the fewer layers frozen).\n\n"
    "Here one folder grows to 10, 50, 200 images per class (smoke: 10, 50, 100), then all of them.\n\n"
    "- **Colab**: cats vs dogs (`tfds:cats_vs_dogs`, about 11,600 images per class) on ResNet-50 with "
    "ImageNet weights and the default policy, which measures: each run tries the head, the last stage, "
    "the last two, ... on validation within its time budget and keeps the best.\n"
    "- **Smoke**: the embedded digits 5-9 (133 to 153 per class) on the embedded ResNet-20, with no "
    "budget to measure in (`policy_budget` 0), so the rule of thumb decides, with small thresholds "
    "(< 20 training images per class: the head; < 100: the last stage; < 1,000: the last two) so the "
    "decisions change at these sizes. The accuracies of a few epochs on a few images mean little; the "
    "decisions and the cache counts are the point.",
    '''\
import shutil

OUT = pathlib.Path("recipe-output/03_growing_dataset")
FOLDER, RUN, CACHE = OUT / "images", OUT / "run", OUT / "feature-cache"
if SMOKE:  # digits 5-9 have 133-153 images per class: 100, then all
    SIZES = [10, 50, 100, None]  # images per class; None: all
    POOL = str(ROOT / "data/digits59")
    SETTINGS = {"base": "resnet20_cifar", "weights": str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5"),
                "augment": "none", "epochs": 10, "fine_tune_epochs": 2, "policy_budget": 0,
                "policy_thresholds": [20, 100, 1000]}
else:
    SIZES = [10, 50, 200, None]
    POOL = "tfds:cats_vs_dogs"  # written once as files under tltoolkit's cache, then linked from FOLDER
    SETTINGS = {"base": "resnet50", "weights": "imagenet", "augment": "standard", "fine_tune_epochs": 5,
                "mixed_precision": True}
SETTINGS.update(data=str(FOLDER), out=str(RUN), cache_dir=str(CACHE))
shutil.rmtree(OUT, ignore_errors=True)  # this notebook's own folder: every run of it starts from nothing''') + [
    new_markdown_cell(
        "## 1. Grow the folder, re-run the same command\n\n`grow_to(n)` adds images to the class folders "
        "(hard links to the pool's files, copies across disks, in a fixed order, so each size contains the "
        "previous one; a symbolic link leaving the data folder would be quarantined); nothing is "
        "removed or renamed. After each addition the same `finetune` call runs with the same `out`."),
    new_code_cell('''\
import os

pool = tltoolkit.scan(POOL, check=False).usable().sort_values(["label", "path"])


def grow_to(per_class):
    """Hard-links the first `per_class` images of each class of the pool into FOLDER/<class>/ (all if None)."""
    for label, group in pool.groupby("label"):
        (FOLDER / label).mkdir(parents=True, exist_ok=True)
        for path in group["path"].head(per_class):
            link = FOLDER / label / pathlib.Path(path).name
            if not link.exists():
                try:
                    os.link(path, link)
                except OSError:  # another disk: a copy
                    shutil.copyfile(path, link)


for per_class in SIZES:
    grow_to(per_class)
    print(f"\\n=== {per_class or 'all'} images per class: {sum(1 for _ in FOLDER.glob('*/*'))} in the folder ===")
    tltoolkit.finetune(SETTINGS, progress=False)'''),
    new_markdown_cell(
        "## 2. What each run decided and computed\n\nFrom the run's `state.json` (one entry per run): the "
        "training images in the smallest class, the policy's decision, the trainable parameters of phase "
        "2, the images whose features were computed (the rest came from the cache) and the validation "
        "accuracy after each phase."),
    new_code_cell('''\
import json
import re

import pandas as pd
from IPython.display import Image, display

rows = []
for run in json.loads((RUN / "state.json").read_text())["runs"]:
    notes = " ".join(run["notes"])
    computed = re.search(r"features: computed (\\d+) of (\\d+)", notes)
    phases = {p["phase"]: p for p in run["phases"]}
    rows.append({"run": run["run"], "images/class (train)": int(re.search(r"smallest class: (\\d+)", notes).group(1)),
                 "freeze until": run["decision"], "trained stages": " ".join(run["trained_stages"]) or "-",
                 "features computed": f"{computed.group(1)} of {computed.group(2)}",
                 "phase 1 val acc": phases[1].get("val_accuracy"),
                 "phase 2 val acc": phases.get(2, {}).get("val_accuracy"),
                 "phase 2 trainable params": phases.get(2, {}).get("trainable_params"),
                 "base fine-tuned": run.get("base_trained", False)})
growth = pd.DataFrame(rows).set_index("run")
growth'''),
    new_markdown_cell(
        "**Reading the cache column.** While the base stays as pretrained, a grown folder costs only its new "
        "images (run 2 computes the images added since run 1). Once a run has fine-tuned the base "
        "(`base fine-tuned`), its features are different features: the next run extracts every image "
        "once with the fine-tuned base, then grows incrementally again. Stale features are never served."),
    new_code_cell('''\
import matplotlib.pyplot as plt
from IPython.display import Image, display

metrics = pd.read_csv(RUN / "metrics.csv")
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
left.bar(growth.index.astype(str), growth["images/class (train)"], color="tab:gray")
for run, row in growth.iterrows():
    left.annotate(row["trained stages"] if row["trained stages"] != "-" else "head only", (str(run), row["images/class (train)"]),
                  ha="center", va="bottom", fontsize=9)
left.set_xlabel("run")
left.set_ylabel("training images per class")
left.set_title("what the policy trained")
for (run, phase), frame in metrics.groupby(["run", "phase"]):
    right.plot(range(len(frame)), frame["val_accuracy"], "-o" if phase == 2 else "--", markersize=3,
               label=f"run {run} phase {phase}")
right.set_xlabel("epoch within the phase")
right.set_ylabel("validation accuracy")
right.set_title("each run starts from the last" + (" (smoke: tiny numbers)" if SMOKE else ""))
right.legend(fontsize=7)
plt.tight_layout()
# Saved, then shown: finetune's plotting (in this kernel) switched matplotlib to its file backend.
fig.savefig(OUT / "growth.png", dpi=100)
plt.close(fig)
display(Image(filename=str(OUT / "growth.png")))'''),
    new_markdown_cell(
        "The run's report lists every run with its decision and reason:"),
    new_code_cell('''\
from IPython.display import Markdown, display

display(Markdown((RUN / "report.md").read_text()))'''),
]

EXPORT_AND_SERVE = header(
    "05_export_and_serve.ipynb",
    "Export and serve: TFLite and ONNX",
    "`tltoolkit export` turns a run into a file that a phone, a browser or a server runs without "
    "tltoolkit or Keras: it takes raw uint8 RGB images **of any size** (`[1, H, W, 3]`; the resizing "
    "the model was trained with is inside it) and returns class probabilities (and a rejection score, "
    "recipe 08), with `labels.txt` "
    "beside it. Every export is loaded back with its runtime and checked against the Keras model before "
    "the command succeeds. Here: fine-tune, export to TFLite (float and int8) and ONNX, then run each "
    "file with its own runtime on a few images of different sizes and compare with Keras.\n\n"
    "- **Colab**: flowers (`tfds:tf_flowers`) on ResNet-50 with ImageNet weights, head only; the test "
    "photos come at their own sizes.\n"
    "- **Smoke**: the embedded digits 5-9 on the embedded ResNet-20 (head only, a few epochs); the "
    "32x32 test digits are rescaled to several sizes to stand in for photos of any size.",
    '''\
OUT = pathlib.Path("recipe-output/05_export_and_serve")
RUN, EXPORTS = OUT / "run", OUT / "exports"
if SMOKE:
    DATA, TEST = str(ROOT / "data/digits59"), str(ROOT / "data/digits59-test")
    TRAIN = {"base": "resnet20_cifar", "weights": str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5"),
             "augment": "none", "epochs": 15}
    SIZES = [(32, 32), (48, 40), (100, 75), (64, 128), (200, 200)]  # (height, width) of the served images
else:
    DATA, TEST = "tfds:tf_flowers:train[:90%]", "tfds:tf_flowers:train[90%:]"
    TRAIN = {"base": "resnet50", "weights": "imagenet", "augment": "standard", "epochs": 15}
    SIZES = None  # the photos' own sizes
TRAIN.update(data=DATA, out=str(RUN), freeze_until="head")''') + [
    new_markdown_cell("## 1. A run to export\n\nHead only: the quickest run (recipe 01 shows fine-tuning in full)."),
    new_code_cell('''\
entry = tltoolkit.finetune(TRAIN, force=True, progress=False)'''),
    new_markdown_cell(
        "## 2. Export\n\nThe same as `tltoolkit export --model RUN --format tflite --quantize int8 --out "
        "model.tflite`. Formats: TFLite in float32 and int8 (weights and activations in 8 bits, calibrated "
        "on up to 100 of the run's training images, each at one of several sizes: about 4x smaller, for "
        "phones and microcontrollers), "
        "ONNX (for onnxruntime, TensorRT, a browser), and Keras (the reference below)."),
    new_code_cell('''\
from tltoolkit.export import export

EXPORTED = {"keras": ("keras", None, "model.keras"), "tflite": ("tflite", None, "model.tflite"),
            "tflite int8": ("tflite", "int8", "model-int8.tflite"), "onnx": ("onnx", None, "model.onnx")}
results = {}
for name, (fmt, quantize, file) in EXPORTED.items():
    results[name] = export(str(RUN), fmt, EXPORTS / file, quantize=quantize, force=True)
    print(results[name].summary())'''),
    new_markdown_cell(
        "## 3. Serve: each runtime on raw images of different sizes\n\nEach file with its own runtime: the "
        "TFLite interpreter (`tf.lite.Interpreter`; on a device, `ai_edge_litert` "
        "or the Android/iOS runtimes take the same file), onnxruntime, and Keras for the reference (the "
        "exported `.keras` file, loaded by `tltoolkit.load_model`, which registers tltoolkit's layers). Each "
        "image goes in as it is, `[1, H, W, 3]` uint8."),
    new_code_cell('''\
import warnings

import numpy as np
import onnxruntime
import tensorflow as tf
from PIL import Image as PILImage

test = tltoolkit.scan(TEST, check=False).usable().groupby("label").head(1).head(len(SIZES) if SIZES else 5)
images = []
for (path, size) in zip(test["path"], SIZES or [None] * len(test)):
    image = PILImage.open(path).convert("RGB")
    if size:
        image = image.resize(size[::-1], PILImage.BILINEAR)  # PIL takes (width, height)
    images.append(np.asarray(image, dtype=np.uint8))
labels = (EXPORTS / "labels.txt").read_text().split()


def tflite_runner(file):
    with warnings.catch_warnings():  # tf.lite.Interpreter's notice that it moves to ai_edge_litert
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(file))
    # Two outputs: the probabilities [1, classes] and the rejection score [1] (recipe 08); TFLite does
    # not keep their order, so take the probabilities by their rank.
    (source,), target = interpreter.get_input_details(), max(interpreter.get_output_details(), key=lambda d: len(d["shape"]))

    def run(image):
        interpreter.resize_tensor_input(source["index"], [1, *image.shape])  # this image's size
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])[0]
    return run


def onnx_runner(file):
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image[None]})[0][0]  # outputs: probabilities, score


keras_model = tltoolkit.load_model(EXPORTS / "model.keras")  # keras.models.load_model, tltoolkit's layers registered
runners = {"keras": lambda image: keras_model.predict(image[None], verbose=0)[0][0],  # [probabilities, score]
           "tflite": tflite_runner(EXPORTS / "model.tflite"),
           "tflite int8": tflite_runner(EXPORTS / "model-int8.tflite"),
           "onnx": onnx_runner(EXPORTS / "model.onnx")}
outputs = {name: np.stack([run(image) for image in images]) for name, run in runners.items()}'''),
    new_code_cell('''\
import pandas as pd
from IPython.display import Image, display

rows = []
for i, (path, image) in enumerate(zip(test["path"], images)):
    row = {"image": pathlib.Path(path).name, "size": "x".join(map(str, image.shape[:2])), "true": test["label"].iloc[i]}
    for name, probs in outputs.items():
        row[name] = f"{labels[probs[i].argmax()]} {probs[i].max():.3f}"
    rows.append(row)
display(pd.DataFrame(rows))
differences = pd.DataFrame({name: {"max |p - p_keras|": float(np.abs(probs - outputs["keras"]).max()),
                                   "same top-1 as keras": float((probs.argmax(1) == outputs["keras"].argmax(1)).mean()),
                                   "file size (MB)": results[name].bytes / 1e6}
                            for name, probs in outputs.items() if name != "keras"}).T
differences'''),
    new_code_cell('''\
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.6))
for axis, image, i in zip(np.atleast_1d(axes), images, range(len(images))):
    axis.imshow(image)
    axis.set_title(f"{image.shape[0]}x{image.shape[1]}\\nkeras: {labels[outputs['keras'][i].argmax()]}, "
                   f"int8: {labels[outputs['tflite int8'][i].argmax()]}", fontsize=8)
    axis.axis("off")
plt.tight_layout()
# Saved, then shown: finetune's plotting (in this kernel) switched matplotlib to its file backend.
fig.savefig(OUT / "served.png", dpi=100)
plt.close(fig)
display(Image(filename=str(OUT / "served.png")))'''),
    new_markdown_cell(
        "**Reading it.** Float TFLite and ONNX match Keras to float rounding (~1e-7) at every size; int8 is "
        "a quarter of the file size and, in smoke mode, within a few hundredths of Keras with the same top-1 "
        "at every size here, up to 200x200. Its resize front end keeps the crop box arithmetic in float: the "
        "TFLite converter's default int8 (what this recipe first showed) quantised it with ranges from the "
        "training images' sizes and gave other top-1 labels from 100x75 up. Each export's own check runs "
        "the run's images at the model's size, half of it, 2x, 4x and a non-square size, and fails, naming "
        "the size, when an export drifts. In smoke mode the classifier itself is weak (head only, a few "
        "epochs): compare the runtimes with each other, not the labels with the truth."),
]

MULTI_ACCELERATOR = header(
    "06_multi_accelerator.ipynb",
    "Training on several accelerators with tf.distribute",
    "`--strategy` trains through `tf.distribute`: `mirrored` copies the model onto every GPU of the "
    "machine (each replica takes a slice of the global batch, gradients are summed across them), `tpu` "
    "onto the cores of a TPU, `multiworker` across machines (`TF_CONFIG`; only the chief writes the run). "
    "`auto`, the default, mirrors over several GPUs and uses the one device otherwise.\n\n"
    "- **Colab**: with a TPU runtime, `--strategy tpu` (8 cores); with a GPU runtime, `mirrored` (one GPU: "
    "one replica, same code). Flowers (`tfds:tf_flowers`) on ResNet-50 with ImageNet weights, `conv5` "
    "fine-tuned.\n"
    "- **Smoke**: the CPU split into two *logical* devices, so `mirrored` runs two real replicas on any "
    "laptop; the embedded digits on the embedded ResNet-20. It shows the mechanics, not a speed-up: both "
    "replicas share the same cores.",
    '''\
OUT = pathlib.Path("recipe-output/06_multi_accelerator")
if SMOKE:
    LOGICAL_CPUS, STRATEGY = 2, "mirrored"
    SETTINGS = {"base": "resnet20_cifar", "weights": str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5"),
                "data": str(ROOT / "data/digits59"), "freeze_until": "conv4", "augment": "none",
                "epochs": 10, "fine_tune_epochs": 2, "batch_size": 32}
else:
    LOGICAL_CPUS = 0
    STRATEGY = "tpu" if os.path.exists("/dev/accel0") or "COLAB_TPU_ADDR" in os.environ else "mirrored"
    SETTINGS = {"base": "resnet50", "weights": "imagenet", "data": "tfds:tf_flowers", "freeze_until": "conv5",
                "augment": "standard", "epochs": 10, "fine_tune_epochs": 5, "batch_size": 256,  # the global batch
                "mixed_precision": STRATEGY == "mirrored"}  # float16 on GPUs; TPUs compute in bfloat16 anyway''') + [
    new_markdown_cell(
        "## 1. Devices, before TensorFlow starts\n\nLogical devices can only be configured before "
        "TensorFlow initialises its runtime, so this cell runs before anything else touches TensorFlow "
        "(importing it is fine; creating a tensor or listing logical devices is not). In a notebook that "
        "already ran TensorFlow, restart the kernel first."),
    new_code_cell('''\
import tensorflow as tf

tf.get_logger().setLevel("WARNING")  # tf.distribute logs every all-reduce at INFO
if LOGICAL_CPUS:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS)
for kind in ("CPU", "GPU", "TPU"):
    print(kind, [device.name for device in tf.config.list_logical_devices(kind)])'''),
    new_markdown_cell(
        "## 2. What a strategy does\n\n`make_strategy` is what `finetune --strategy` calls. Variables "
        "created in its scope are mirrored on every replica, and each global batch is split between "
        "them:"),
    new_code_cell('''\
from tltoolkit.training.distribute import make_strategy

strategy = make_strategy(STRATEGY)
print(type(strategy).__name__, "with", strategy.num_replicas_in_sync, "replicas:", strategy.extended.worker_devices)
with strategy.scope():
    weight = tf.Variable(1.0)
print("a variable made in its scope:", type(weight).__name__)
global_batch = tf.data.Dataset.range(8).batch(8)
for batch in strategy.experimental_distribute_dataset(global_batch):
    for device, part in zip(strategy.extended.worker_devices, strategy.experimental_local_results(batch)):
        print(f"  {device} gets {part.numpy()}")'''),
    new_markdown_cell(
        "## 3. Fine-tune with `--strategy`\n\nThe Python call below equals `tltoolkit finetune ... --strategy "
        "mirrored` (or `tpu`). `batch_size` is the global batch: each replica computes "
        "`batch_size / replicas` images per step. For comparison the same run on one device "
        "(`strategy: none`)."),
    new_code_cell('''\
import json
import time

results = {}
for strategy_name in (STRATEGY, "none"):
    print(f"\\n--- strategy: {strategy_name} ---")
    started = time.perf_counter()
    entry = tltoolkit.finetune({**SETTINGS, "strategy": strategy_name, "out": str(OUT / f"run-{strategy_name}")},
                               force=True, progress=False)
    results[strategy_name] = {"replicas": entry["replicas"], "seconds": time.perf_counter() - started,
                              **{f"phase {p['phase']} val acc": p.get("val_accuracy") for p in entry["phases"]}}'''),
    new_code_cell('''\
import pandas as pd
from IPython.display import Image, display

display(pd.DataFrame(results).T)
display(Image(filename=str(OUT / f"run-{STRATEGY}/plots/curves.png")))'''),
    new_markdown_cell(
        "**Reading it.** Both runs train the same model on the same data; their accuracies differ only by "
        "the order of floating-point sums (BatchNormalization stays frozen, so the split batch does not change its statistics). In smoke mode the two replicas "
        "share the same two CPU cores, so the time says nothing about speed-up. On several GPUs or a TPU "
        "the step time stays about the same while each step sees `replicas` times more images; raise "
        "`batch_size` with the replica count (and the learning rates with it, or keep the default schedule's "
        "warm-up) to use them."),
]

TRUST = header(
    "08_trust.ipynb",
    "Predictions you can trust: calibration, unknown inputs, explanations, shipped TTA",
    "A fine-tuned classifier meets images nobody checked. `finetune` fits a temperature on its validation "
    "split (so a probability of 0.9 means right about 9 times in 10) and a rejection threshold that keeps "
    "95% of the validation images; both live inside `model.keras`, so `predict` answers `unknown` below "
    "the threshold and every export returns the score next to the probabilities. `evaluate --ood` measures "
    "how well images of other classes are rejected, `calibrate` refits both on held-out images, "
    "`predict --explain` draws Grad-CAM maps, and `export --tta` ships the test-time augmentation that "
    "`evaluate --tta` measures.\n\n"
    "Both settings use the embedded data: digits 5-9 to train on, the held-out digits 5-9 to evaluate and "
    "the digits 0-4 (classes the model never saw) as the unknown inputs.\n\n"
    "- **Colab**: the default policy (phase 2 measured on validation).\n"
    "- **Smoke**: the head alone, a few epochs.",
    '''\
import shutil

OUT = pathlib.Path("recipe-output/08_trust")
RUN = OUT / "run"
DATA, TEST, OTHER = (str(ROOT / "data" / name) for name in ("digits59", "digits59-test", "digits04-test"))
TRAIN = {"base": "resnet20_cifar", "weights": str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5"),
         "augment": "none", "data": DATA, "out": str(RUN)}
if SMOKE:
    TRAIN.update(freeze_until="head", epochs=15)
shutil.rmtree(OUT, ignore_errors=True)  # this notebook's own folder: every run of it starts from nothing''') + [
    new_markdown_cell(
        "## 1. Fine-tune: the temperature and the threshold come with the model\n\nThe run's notes say what "
        "was fitted on validation (`--coverage` sets the share of validation images kept, "
        "`--rejection-score energy` the other score)."),
    new_code_cell('''\
entry = tltoolkit.finetune(TRAIN, force=True, progress=False, echo=lambda line: None)
print("\\n".join(note for note in entry["notes"] if note.startswith(("probabilities", "unknown"))))'''),
    new_markdown_cell(
        "## 2. Evaluate: calibration and the rejection of other classes\n\n`reliability.png` plots accuracy "
        "against confidence at temperature 1 and at the fitted one; `--ood` scores a folder of images of "
        "none of the classes (AUROC: how well the score tells them apart; FPR: the share of them accepted)."),
    new_code_cell('''\
import json

from IPython.display import Image, display

run_cli("evaluate", "--model", str(RUN), "--data", TEST, "--ood", OTHER, "--out", str(OUT / "evaluation"), "--quiet")
summary = json.loads((OUT / "evaluation/summary.json").read_text())
print({key: summary[key] for key in ("accuracy", "temperature", "expected_calibration_error",
                                     "expected_calibration_error_t1") if key in summary})
print(summary["rejection"])
display(Image(filename=str(OUT / "evaluation/reliability.png")))'''),
    new_markdown_cell(
        "## 3. Predict: `unknown` below the threshold\n\nA few known digits and a few of the digits 0-4. "
        "Each row has its `score`; an image below the threshold is answered `unknown`, its `closest` class "
        "named. `--coverage` picks another threshold from the validation scores the model keeps."),
    new_code_cell('''\
known = tltoolkit.scan(TEST, check=False).usable().groupby("label").head(1)["path"].tolist()
other = sorted(str(p) for p in pathlib.Path(OTHER).rglob("*.png"))[:5]
table = tltoolkit.predict(str(RUN), known + other, top_k=1)
table.assign(truth=[pathlib.Path(p).parent.name for p in known + other])[["truth", "label", "probability", "score", "closest"]]'''),
    new_markdown_cell(
        "## 4. Explain: where the network looked\n\n`predict --explain OUT_DIR` writes a Grad-CAM overlay per "
        "image for its predicted class, at the last stage or `--explain-stage`; `evaluate` wrote panels of "
        "the worst predictions and of the most confident images per class."),
    new_code_cell('''\
run_cli("predict", "--model", str(RUN), *known[:3], "--explain", str(OUT / "explained"), "--explain-stage", "conv3", "--quiet")
display(Image(filename=str(OUT / "evaluation/explanations_per_class.png")))'''),
    new_markdown_cell(
        "## 5. Recalibrate on held-out images, ship TTA\n\n`calibrate` refits the temperature and the "
        "threshold on a labelled folder that took no part in training (here half of the test set, into a "
        "copy of the run); `export --tta flip` averages the image and its mirror image inside the exported "
        "graph, checked against `evaluate --tta flip`. (Mirrored digits are not digits: flip is shown for "
        "the mechanics, not for accuracy.)"),
    new_code_cell('''\
copy = OUT / "run-recalibrated"
shutil.copytree(RUN, copy)
run_cli("calibrate", "--model", str(copy), "--data", TEST, "--split", "validation", "--val-split", "0.5", "--quiet")
run_cli("export", "--model", str(RUN), "--format", "tflite", "--tta", "flip", "--out", str(OUT / "flip.tflite"))'''),
]

AUDIT_AND_RANK = header(
    "07_audit_and_rank.ipynb",
    "Know your data and your base: audit and rank",
    "Before training: `tltoolkit audit` finds near duplicates (train/validation leakage first), likely "
    "label errors and outliers in a folder, and `tltoolkit rank` scores candidate bases on it (k-NN, "
    "a linear probe, LogME), all on the feature cache, so each costs seconds once the features exist.\n\n"
    "- **Colab**: `tf_flowers` (3,670 photos) audited on ResNet-50, and ResNet-50, VGG-16 and "
    "DenseNet-121 ranked, with ImageNet weights.\n"
    "- **Smoke**: a copy of the embedded digits 5-9 with defects planted (labels flipped, an image copied "
    "resized and re-encoded, an animal silhouette among the digits), audited on the embedded ResNet-20 "
    "(pretrained on digits 0-4), which is then ranked against the same network with random weights.",
    '''\
OUT = pathlib.Path("recipe-output/07_audit_and_rank")
if SMOKE:
    BACKBONE = str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5")
    BASE, WEIGHTS, BASES = "resnet20_cifar", BACKBONE, [f"resnet20_cifar@{BACKBONE}", "resnet20_cifar@none"]
    DATA = OUT / "digits"  # made below
else:
    BASE, WEIGHTS, BASES = "resnet50", "imagenet", ["resnet50", "vgg16", "densenet121"]
    DATA = "tfds:tf_flowers"''') + [
    new_markdown_cell(
        "## 1. A folder with known problems\n\nIn smoke mode: the digits 5-9 copied, 5% of their labels "
        "flipped (moved to the next digit's folder, chosen at random), one image copied resized by 5/4 as a JPEG, and an "
        "animal silhouette filed under `5`. Your own folder needs none of this."),
    new_code_cell('''\
import random
import shutil

import pandas as pd
from PIL import Image

planted = {}
if SMOKE:
    shutil.rmtree(DATA, ignore_errors=True)
    shutil.copytree(ROOT / "data/digits59", DATA)
    images = sorted(DATA.glob("*/*.png"))
    for moved in random.Random(0).sample(images, len(images) // 20):
        digit = int(moved.parent.name)
        target = DATA / str(5 + (digit - 4) % 5) / f"flipped_{moved.name}"  # under the next digit: 5 -> 6, 9 -> 5
        moved.rename(target)
        planted[target.name] = "label_error"
    original = sorted((DATA / "7").glob("[0-9]*.png"))[0]
    with Image.open(original) as image:
        image.resize((40, 40), Image.BILINEAR).save(DATA / "7" / "copy.jpg", quality=90)
    planted["copy.jpg"] = "near_duplicate"
    shutil.copy(sorted((ROOT / "data/animals/cat").glob("*.png"))[0], DATA / "5" / "cat.png")
    planted["cat.png"] = "outlier"
print(pd.Series(planted).value_counts())'''),
    new_markdown_cell(
        "## 2. Audit\n\nOne command: features through the cache, then the near duplicates (centred-feature "
        "cosine and a perceptual hash must agree), label errors (out-of-fold probabilities of k-fold "
        "linear heads, then cleanlab's confident learning) and outliers (k-NN distance). "
        "`--write-manifest` writes a manifest without the flagged images, which `finetune --data` takes; "
        "your files are never moved."),
    new_code_cell('''\
manifest = ["--write-manifest", str(OUT / "clean.csv")] if SMOKE else []  # a manifest lies above its images
run_cli("audit", "--data", str(DATA), "--base", BASE, "--weights", WEIGHTS, "--out", str(OUT / "audit"),
        *manifest, "--force", "--quiet")'''),
    new_code_cell('''\
from IPython.display import Image as Picture, display

findings = pd.read_parquet(OUT / "audit/audit.parquet")
findings["file"] = findings["path"].map(lambda p: pathlib.Path(p).name)
display(findings[["kind", "file", "label", "split", "suggested_label", "score", "other_path"]].head(20))
if planted:
    others = findings["other_path"].astype(object).fillna("").map(lambda p: pathlib.Path(p).name)
    found = set(zip(findings["kind"], findings["file"])) | set(zip(findings["kind"], others))
    hits = pd.Series({name: (kind, name) in found for name, kind in planted.items()})
    print("planted defects found, per kind:")
    print(hits.groupby(pd.Series(planted)).agg(["sum", "size"]).rename(columns={"sum": "found", "size": "planted"}))
display(Picture(filename=str(OUT / "audit/label_errors.png")))'''),
    new_markdown_cell(
        "## 3. Rank the bases\n\nFor each base: k-NN accuracy (k chosen on the training split), the "
        "linear probe's accuracy (the head sweep `finetune` runs first) and LogME, each timed, and the "
        "base's forward time per image. The audited base's features come from the cache: computed 0."),
    new_code_cell('''\
run_cli("rank", "--data", str(DATA), *[a for base in BASES for a in ("--base", base)], "--out", str(OUT / "rank"),
        "--force", "--quiet")
display(pd.read_csv(OUT / "rank/rank.csv")[["rank", "base", "knn_accuracy", "probe_accuracy", "logme",
                                            "extract_ms_per_image", "computed"]])
display(Picture(filename=str(OUT / "rank/rank.png")))'''),
    new_markdown_cell(
        "**Reading it.** Fine-tune the base at the top (here: the pretrained backbone beats random weights "
        "on all three scores), on the clean manifest: `tltoolkit finetune --data recipe-output/"
        "07_audit_and_rank/clean.csv --base ...`."),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_feature_extraction.ipynb": FEATURE_EXTRACTION,
    "03_growing_dataset.ipynb": GROWING_DATASET,
    "04_architecture_tour.ipynb": ARCHITECTURE_TOUR,
    "05_export_and_serve.ipynb": EXPORT_AND_SERVE,
    "06_multi_accelerator.ipynb": MULTI_ACCELERATOR,
    "07_audit_and_rank.ipynb": AUDIT_AND_RANK,
    "08_trust.ipynb": TRUST,
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
