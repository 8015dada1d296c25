# %% [markdown]
# # Know your data and your base: audit and rank
#
# Before training: `tltoolkit audit` finds near duplicates (train/validation leakage first), likely label errors and outliers in a folder, and `tltoolkit rank` scores candidate bases on it (k-NN, a linear probe, LogME), all on the feature cache, so each costs seconds once the features exist.
#
# - **Colab**: `tf_flowers` (3,670 photos) audited on ResNet-50, and ResNet-50, VGG-16 and DenseNet-121 ranked, with ImageNet weights.
# - **Smoke**: a copy of the embedded digits 5-9 with defects planted (labels flipped, an image copied resized and re-encoded, an animal silhouette among the digits), audited on the embedded ResNet-20 (pretrained on digits 0-4), which is then ranked against the same network with random weights.

# %% tags=["parameters"]
OUT = pathlib.Path("recipe-output/07_audit_and_rank")
if SMOKE:
    BACKBONE = str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5")
    BASE, WEIGHTS, BASES = "resnet20_cifar", BACKBONE, [f"resnet20_cifar@{BACKBONE}", "resnet20_cifar@none"]
    DATA = OUT / "digits"  # made below
else:
    BASE, WEIGHTS, BASES = "resnet50", "imagenet", ["resnet50", "vgg16", "densenet121"]
    DATA = "tfds:tf_flowers"

# %% [markdown]
# ## 1. A folder with known problems
#
# In smoke mode: the digits 5-9 copied, 5% of their labels flipped (moved to the next digit's folder, chosen at random), one image copied resized by 5/4 as a JPEG, and an animal silhouette filed under `5`. Your own folder needs none of this.

# %%
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
print(pd.Series(planted).value_counts())

# %% [markdown]
# ## 2. Audit
#
# One command: features through the cache, then the near duplicates (centred-feature cosine and a perceptual hash must agree), label errors (out-of-fold probabilities of k-fold linear heads, then cleanlab's confident learning) and outliers (k-NN distance). `--write-manifest` writes a manifest without the flagged images, which `finetune --data` takes; your files are never moved.

# %%
manifest = ["--write-manifest", str(OUT / "clean.csv")] if SMOKE else []  # a manifest lies above its images
run_cli("audit", "--data", str(DATA), "--base", BASE, "--weights", WEIGHTS, "--out", str(OUT / "audit"),
        *manifest, "--force", "--quiet")

# %%
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
display(Picture(filename=str(OUT / "audit/label_errors.png")))

# %% [markdown]
# ## 3. Rank the bases
#
# For each base: k-NN accuracy (k chosen on the training split), the linear probe's accuracy (the head sweep `finetune` runs first) and LogME, each timed, and the base's forward time per image. The audited base's features come from the cache: computed 0.

# %%
run_cli("rank", "--data", str(DATA), *[a for base in BASES for a in ("--base", base)], "--out", str(OUT / "rank"),
        "--force", "--quiet")
display(pd.read_csv(OUT / "rank/rank.csv")[["rank", "base", "knn_accuracy", "probe_accuracy", "logme",
                                            "extract_ms_per_image", "computed"]])
display(Picture(filename=str(OUT / "rank/rank.png")))

# %% [markdown]
# **Reading it.** Fine-tune the base at the top (here: the pretrained backbone beats random weights on all three scores), on the clean manifest: `tltoolkit finetune --data recipe-output/07_audit_and_rank/clean.csv --base ...`.
