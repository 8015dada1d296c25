# %% [markdown]
# # The growing dataset
#
# Labelled images arrive over time. Re-running `tltoolkit finetune` with the same `--out` on the grown folder continues the run: the content-hash split keeps every earlier image on its side, the feature cache extracts only the new images, the model warm-starts from the last run, and the growth policy trains more of the network as the data grows (the more labelled data, the fewer layers frozen).
#
# Here one folder grows to 10, 50, 200 images per class (smoke: 10, 50, 100), then all of them.
#
# - **Colab**: cats vs dogs (`tfds:cats_vs_dogs`, about 11,600 images per class) on ResNet-50 with ImageNet weights and the default policy, which measures: each run tries the head, the last stage, the last two, ... on validation within its time budget and keeps the best.
# - **Smoke**: the embedded digits 5-9 (133 to 153 per class) on the embedded ResNet-20, with no budget to measure in (`policy_budget` 0), so the rule of thumb decides, with small thresholds (< 20 training images per class: the head; < 100: the last stage; < 1,000: the last two) so the decisions change at these sizes. The accuracies of a few epochs on a few images mean little; the decisions and the cache counts are the point.

# %% tags=["parameters"]
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
shutil.rmtree(OUT, ignore_errors=True)  # this notebook's own folder: every run of it starts from nothing

# %% [markdown]
# ## 1. Grow the folder, re-run the same command
#
# `grow_to(n)` adds images to the class folders (hard links to the pool's files, copies across disks, in a fixed order, so each size contains the previous one; a symbolic link leaving the data folder would be quarantined); nothing is removed or renamed. After each addition the same `finetune` call runs with the same `out`.

# %%
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
    print(f"\n=== {per_class or 'all'} images per class: {sum(1 for _ in FOLDER.glob('*/*'))} in the folder ===")
    tltoolkit.finetune(SETTINGS, progress=False)

# %% [markdown]
# ## 2. What each run decided and computed
#
# From the run's `state.json` (one entry per run): the training images in the smallest class, the policy's decision, the trainable parameters of phase 2, the images whose features were computed (the rest came from the cache) and the validation accuracy after each phase.

# %%
import json
import re

import pandas as pd
from IPython.display import Image, display

rows = []
for run in json.loads((RUN / "state.json").read_text())["runs"]:
    notes = " ".join(run["notes"])
    computed = re.search(r"features: computed (\d+) of (\d+)", notes)
    phases = {p["phase"]: p for p in run["phases"]}
    rows.append({"run": run["run"], "images/class (train)": int(re.search(r"smallest class: (\d+)", notes).group(1)),
                 "freeze until": run["decision"], "trained stages": " ".join(run["trained_stages"]) or "-",
                 "features computed": f"{computed.group(1)} of {computed.group(2)}",
                 "phase 1 val acc": phases[1].get("val_accuracy"),
                 "phase 2 val acc": phases.get(2, {}).get("val_accuracy"),
                 "phase 2 trainable params": phases.get(2, {}).get("trainable_params"),
                 "base fine-tuned": run.get("base_trained", False)})
growth = pd.DataFrame(rows).set_index("run")
growth

# %% [markdown]
# **Reading the cache column.** While the base stays as pretrained, a grown folder costs only its new images (run 2 computes the images added since run 1). Once a run has fine-tuned the base (`base fine-tuned`), its features are different features: the next run extracts every image once with the fine-tuned base, then grows incrementally again. Stale features are never served.

# %%
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
display(Image(filename=str(OUT / "growth.png")))

# %% [markdown]
# The run's report lists every run with its decision and reason:

# %%
from IPython.display import Markdown, display

display(Markdown((RUN / "report.md").read_text()))
