# %% [markdown]
# # Export and serve: TFLite and ONNX
#
# `tltoolkit export` turns a run into a file that a phone, a browser or a server runs without tltoolkit or Keras: it takes raw uint8 RGB images **of any size** (`[1, H, W, 3]`; the resizing the model was trained with is inside it) and returns class probabilities (and a rejection score, recipe 08), with `labels.txt` beside it. Every export is loaded back with its runtime and checked against the Keras model before the command succeeds. Here: fine-tune, export to TFLite (float and int8) and ONNX, then run each file with its own runtime on a few images of different sizes and compare with Keras.
#
# - **Colab**: flowers (`tfds:tf_flowers`) on ResNet-50 with ImageNet weights, head only; the test photos come at their own sizes.
# - **Smoke**: the embedded digits 5-9 on the embedded ResNet-20 (head only, a few epochs); the 32x32 test digits are rescaled to several sizes to stand in for photos of any size.

# %% tags=["parameters"]
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
TRAIN.update(data=DATA, out=str(RUN), freeze_until="head")

# %% [markdown]
# ## 1. A run to export
#
# Head only: the quickest run (recipe 01 shows fine-tuning in full).

# %%
entry = tltoolkit.finetune(TRAIN, force=True, progress=False)

# %% [markdown]
# ## 2. Export
#
# The same as `tltoolkit export --model RUN --format tflite --quantize int8 --out model.tflite`. Formats: TFLite in float32 and int8 (weights and activations in 8 bits, calibrated on up to 100 of the run's training images, each at one of several sizes: about 4x smaller, for phones and microcontrollers), ONNX (for onnxruntime, TensorRT, a browser), and Keras (the reference below).

# %%
from tltoolkit.export import export

EXPORTED = {"keras": ("keras", None, "model.keras"), "tflite": ("tflite", None, "model.tflite"),
            "tflite int8": ("tflite", "int8", "model-int8.tflite"), "onnx": ("onnx", None, "model.onnx")}
results = {}
for name, (fmt, quantize, file) in EXPORTED.items():
    results[name] = export(str(RUN), fmt, EXPORTS / file, quantize=quantize, force=True)
    print(results[name].summary())

# %% [markdown]
# ## 3. Serve: each runtime on raw images of different sizes
#
# Each file with its own runtime: the TFLite interpreter (`tf.lite.Interpreter`; on a device, `ai_edge_litert` or the Android/iOS runtimes take the same file), onnxruntime, and Keras for the reference (the exported `.keras` file, loaded by `tltoolkit.load_model`, which registers tltoolkit's layers). Each image goes in as it is, `[1, H, W, 3]` uint8.

# %%
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
outputs = {name: np.stack([run(image) for image in images]) for name, run in runners.items()}

# %%
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
differences

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.6))
for axis, image, i in zip(np.atleast_1d(axes), images, range(len(images))):
    axis.imshow(image)
    axis.set_title(f"{image.shape[0]}x{image.shape[1]}\nkeras: {labels[outputs['keras'][i].argmax()]}, "
                   f"int8: {labels[outputs['tflite int8'][i].argmax()]}", fontsize=8)
    axis.axis("off")
plt.tight_layout()
# Saved, then shown: finetune's plotting (in this kernel) switched matplotlib to its file backend.
fig.savefig(OUT / "served.png", dpi=100)
plt.close(fig)
display(Image(filename=str(OUT / "served.png")))

# %% [markdown]
# **Reading it.** Float TFLite and ONNX match Keras to float rounding (~1e-7) at every size; int8 is a quarter of the file size and, in smoke mode, within a few hundredths of Keras with the same top-1 at every size here, up to 200x200. Its resize front end keeps the crop box arithmetic in float: the TFLite converter's default int8 (what this recipe first showed) quantised it with ranges from the training images' sizes and gave other top-1 labels from 100x75 up. Each export's own check runs the run's images at the model's size, half of it, 2x, 4x and a non-square size, and fails, naming the size, when an export drifts. In smoke mode the classifier itself is weak (head only, a few epochs): compare the runtimes with each other, not the labels with the truth.
