# %% [markdown]
# # Architecture tour: LeNet-5 to DenseNet
#
# Six networks that shaped image classification, as tltoolkit builds them: their size and cost from the registry (and checked by counting the built models), their stages (the freeze points of `--freeze-until`), and an experiment behind the step from VGG to ResNet: deeper *plain* networks train worse (the degradation problem), residual connections fix it.

# %% tags=["parameters"]
TOUR = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet50", "densenet121"]
DEPTHS = ["resnet20_cifar", "resnet56_cifar"]  # He et al.'s CIFAR ResNets, each also built plain
if SMOKE:  # the embedded digits 5-9, a few images and epochs: shows the steps work, proves nothing
    DATA, PER_CLASS, EPOCHS, BATCH = "digits", 20, 2, 32
else:  # CIFAR-10, as in the paper (shortened): about half an hour on a Colab GPU
    DATA, PER_CLASS, EPOCHS, BATCH = "cifar10", None, 30, 128

# %% [markdown]
# ## 1. The lineage in numbers
#
# Parameters and multiply-accumulates (MACs) per image at each network's default input size, as pinned in the registry next to the published references.

# %%
import re

import pandas as pd

rows = []
for arch in TOUR:
    spec = tltoolkit.get_spec(arch)
    imagenet = spec.weights.get("imagenet")
    rows.append({"id": arch, "paper": re.match(r".*?\b(?:19|20)\d\d\b", spec.paper).group(0),  # authors and year
                 "input": "x".join(map(str, spec.default_input_shape)), "params (M)": spec.params / 1e6,
                 "GMACs": spec.macs, "stages": len(spec.stages),
                 "ImageNet top-1": imagenet.top1 if imagenet and imagenet.top1 else None})
lineage = pd.DataFrame(rows).set_index("id")
lineage.round(3)

# %% [markdown]
# The same numbers counted on the built models (`tltoolkit.architectures.profile.count_macs`), and each stage's layers and the trainable parameters when frozen until it (what `tltoolkit layers ARCH` prints):

# %%
import keras

from tltoolkit.architectures.profile import count_macs
from tltoolkit.architectures.inspect import stages_table

for arch in TOUR:
    model = tltoolkit.build(arch)
    spec = tltoolkit.get_spec(arch)
    macs = count_macs(model) / 1e9
    print(f"\n{arch}: {model.count_params():,} parameters (registry {spec.params:,}), {macs:.3f} GMACs (registry {spec.macs:.3f})")
    assert model.count_params() == spec.params
    print(stages_table(arch).to_string(index=False))
    del model
    keras.backend.clear_session()

# %% [markdown]
# LeNet-5 in full (`model.summary()`): seven layers, 60k parameters, built for 32x32 digits in 1998.

# %%
tltoolkit.build("lenet5").summary()

# %% [markdown]
# ## 2. The comparison chart

# %%
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
plt.show()

# %% [markdown]
# ## 3. Plain vs residual: the degradation problem
#
# He et al. (2015, Fig. 1 and 6) found that a 56-layer *plain* network has a higher **training** error than a 20-layer one on CIFAR-10: not overfitting, an optimisation failure. With identity shortcuts the deeper network trains better than the shallower one. `plain=True` builds the same CIFAR ResNet without its shortcuts.
#
# In smoke mode (a couple of epochs on 100 digit images) the numbers mean nothing; run the full setting on Colab to see the effect.

# %%
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
        print(f"{name}: train error {results[name]['train error']:.3f}, test error {results[name]['test error']:.3f}")

# %%
fig, axis = plt.subplots(figsize=(6, 4))
for name, result in results.items():
    axis.plot(range(1, EPOCHS + 1), result["curve"], "--" if name.startswith("plain") else "-", label=name)
axis.set_xlabel("epoch")
axis.set_ylabel("training error")
axis.set_title(f"{DATA}: plain vs residual" + (" (smoke: means nothing)" if SMOKE else ""))
axis.legend()
plt.show()
pd.DataFrame(results).T.drop(columns="curve")

# %% [markdown]
# **Reading it.** On the full setting, expect plain-56 to end with a *higher training error* than plain-20 while ResNet-56 ends *lower* than ResNet-20. In the smoke run (2 epochs on 100 images) any order can appear: it only shows that the code runs.
