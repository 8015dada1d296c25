# %% [markdown]
# # Feature extraction as a batch job
#
# `tltoolkit extract` runs the frozen part of a network over a folder (or a TFDS dataset) and writes one feature vector per image to Parquet files that any tool reads. Here: extract, load with pandas, look up nearest neighbours, and fit a linear probe with scikit-learn.
#
# - **Colab**: 3,670 flower photos (`tfds:tf_flowers`) through ResNet-50 with ImageNet weights.
# - **Smoke**: the embedded handwritten digits 5-9 through the embedded ResNet-20, pretrained on digits 0-4 only (see `data/README.md`): features for classes the network has never seen.

# %% tags=["parameters"]
if SMOKE:
    BASE, WEIGHTS, IMAGE_SIZE = "resnet20_cifar", str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5"), 32
    TRAIN, TEST = str(ROOT / "data/digits59"), str(ROOT / "data/digits59-test")
else:
    BASE, WEIGHTS, IMAGE_SIZE = "resnet50", "imagenet", 224
    TRAIN, TEST = "tfds:tf_flowers:train[:80%]", "tfds:tf_flowers:train[80%:]"
OUT = pathlib.Path("recipe-output/02_feature_extraction")

# %% [markdown]
# ## 1. Extract
#
# The same command runs on a laptop or, with `--engine ray --address ...`, on a Ray cluster. Features go through tltoolkit's feature cache, so re-running on a grown folder computes only the new images. `--force` lets this notebook be re-run into the same folders.

# %%
for split, data in (("train", TRAIN), ("test", TEST)):
    run_cli("extract", "--base", BASE, "--weights", WEIGHTS, "--data", data, "--image-size", str(IMAGE_SIZE),
            "--out", str(OUT / split), "--quiet", "--force")

# %% [markdown]
# ## 2. Load with pandas
#
# Each row is an image: `path`, `label`, `sha256` (of the file's bytes) and `features`, a fixed-size list. `_extract.json` records the model, the weights' hash, the layer and the preprocessing, so features from different models are never mixed up.

# %%
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
train.head(3)

# %% [markdown]
# ## 3. Nearest neighbours
#
# Images whose features are close look alike to the network. For a few test images, the five closest training images by cosine distance:

# %%
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
print(f"5-nearest-neighbour accuracy on the test images: {knn.score(X_test, y_test):.3f}")

# %% [markdown]
# ## 4. A linear probe
#
# A logistic regression on the frozen features: the cheapest classifier, and the usual measure of how good features are. (`tltoolkit finetune` trains the same kind of head on cached features as its first phase.)

# %%
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
print(f"linear probe accuracy on {len(y_test)} test images: {probe.score(X_test, y_test):.3f}")
print(classification_report(y_test, probe.predict(X_test), digits=3))
