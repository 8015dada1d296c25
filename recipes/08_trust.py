# %% [markdown]
# # Predictions you can trust: calibration, unknown inputs, explanations, shipped TTA
#
# A fine-tuned classifier meets images nobody checked. `finetune` fits a temperature on its validation split (so a probability of 0.9 means right about 9 times in 10) and a rejection threshold that keeps 95% of the validation images; both live inside `model.keras`, so `predict` answers `unknown` below the threshold and every export returns the score next to the probabilities. `evaluate --ood` measures how well images of other classes are rejected, `calibrate` refits both on held-out images, `predict --explain` draws Grad-CAM maps, and `export --tta` ships the test-time augmentation that `evaluate --tta` measures.
#
# Both settings use the embedded data: digits 5-9 to train on, the held-out digits 5-9 to evaluate and the digits 0-4 (classes the model never saw) as the unknown inputs.
#
# - **Colab**: the default policy (phase 2 measured on validation).
# - **Smoke**: the head alone, a few epochs.

# %% tags=["parameters"]
import shutil

OUT = pathlib.Path("recipe-output/08_trust")
RUN = OUT / "run"
DATA, TEST, OTHER = (str(ROOT / "data" / name) for name in ("digits59", "digits59-test", "digits04-test"))
TRAIN = {"base": "resnet20_cifar", "weights": str(ROOT / "data/backbone/digits04_resnet20_cifar.weights.h5"),
         "augment": "none", "data": DATA, "out": str(RUN)}
if SMOKE:
    TRAIN.update(freeze_until="head", epochs=15)
shutil.rmtree(OUT, ignore_errors=True)  # this notebook's own folder: every run of it starts from nothing

# %% [markdown]
# ## 1. Fine-tune: the temperature and the threshold come with the model
#
# The run's notes say what was fitted on validation (`--coverage` sets the share of validation images kept, `--rejection-score energy` the other score).

# %%
entry = tltoolkit.finetune(TRAIN, force=True, progress=False, echo=lambda line: None)
print("\n".join(note for note in entry["notes"] if note.startswith(("probabilities", "unknown"))))

# %% [markdown]
# ## 2. Evaluate: calibration and the rejection of other classes
#
# `reliability.png` plots accuracy against confidence at temperature 1 and at the fitted one; `--ood` scores a folder of images of none of the classes (AUROC: how well the score tells them apart; FPR: the share of them accepted).

# %%
import json

from IPython.display import Image, display

run_cli("evaluate", "--model", str(RUN), "--data", TEST, "--ood", OTHER, "--out", str(OUT / "evaluation"), "--quiet")
summary = json.loads((OUT / "evaluation/summary.json").read_text())
print({key: summary[key] for key in ("accuracy", "temperature", "expected_calibration_error",
                                     "expected_calibration_error_t1") if key in summary})
print(summary["rejection"])
display(Image(filename=str(OUT / "evaluation/reliability.png")))

# %% [markdown]
# ## 3. Predict: `unknown` below the threshold
#
# A few known digits and a few of the digits 0-4. Each row has its `score`; an image below the threshold is answered `unknown`, its `closest` class named. `--coverage` picks another threshold from the validation scores the model keeps.

# %%
known = tltoolkit.scan(TEST, check=False).usable().groupby("label").head(1)["path"].tolist()
other = sorted(str(p) for p in pathlib.Path(OTHER).rglob("*.png"))[:5]
table = tltoolkit.predict(str(RUN), known + other, top_k=1)
table.assign(truth=[pathlib.Path(p).parent.name for p in known + other])[["truth", "label", "probability", "score", "closest"]]

# %% [markdown]
# ## 4. Explain: where the network looked
#
# `predict --explain OUT_DIR` writes a Grad-CAM overlay per image for its predicted class, at the last stage or `--explain-stage`; `evaluate` wrote panels of the worst predictions and of the most confident images per class.

# %%
run_cli("predict", "--model", str(RUN), *known[:3], "--explain", str(OUT / "explained"), "--explain-stage", "conv3", "--quiet")
display(Image(filename=str(OUT / "evaluation/explanations_per_class.png")))

# %% [markdown]
# ## 5. Recalibrate on held-out images, ship TTA
#
# `calibrate` refits the temperature and the threshold on a labelled folder that took no part in training (here half of the test set, into a copy of the run); `export --tta flip` averages the image and its mirror image inside the exported graph, checked against `evaluate --tta flip`. (Mirrored digits are not digits: flip is shown for the mechanics, not for accuracy.)

# %%
copy = OUT / "run-recalibrated"
shutil.copytree(RUN, copy)
run_cli("calibrate", "--model", str(copy), "--data", TEST, "--split", "validation", "--val-split", "0.5", "--quiet")
run_cli("export", "--model", str(RUN), "--format", "tflite", "--tta", "flip", "--out", str(OUT / "flip.tflite"))
