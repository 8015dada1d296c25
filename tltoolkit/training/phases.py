"""Phase 2's pieces: the recipes, the full model, the optimizer with per-stage rates, callbacks (phase 1,
the head on cached features, is `head.py`).

Two recipes (`recipe_for`): a pretrained start fine-tunes discriminatively (a low rate, lower again for
each earlier stage, BatchNorm frozen: a few small batches of a new dataset must not overwrite what
the base learned); a base that is not pretrained trains from scratch (one rate for every layer,
BatchNorm statistics and parameters trained, a longer warm-up and more patience).

Phase 2's model is raw uint8 pixels -> augmentation (training only) -> preprocessing -> base -> head.
With `bn="frozen"` (the default) every BatchNormalization layer of the base is frozen (Keras 3 runs a
non-trainable BN layer in inference mode), also in the stages that train: a few small batches of a new
dataset must not overwrite the pretrained statistics. (Calling the base with `training=False` would
not do: in Keras 3 a nested Functional model gets the outer call's `training`.) `bn="train"` lets the
BN layers of the unfrozen stages update their statistics, scale and offset.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tltoolkit._keras_internals import variable_index
from tltoolkit.errors import TltoolkitError
from tltoolkit.heads import PREDICTIONS, attach_head

BN_POLICIES = ("frozen", "train")


@keras.saving.register_keras_serializable(package="tltoolkit")
class DiscriminativeAdam(keras.optimizers.Adam):
    """Adam whose learning rate is multiplied per variable (earlier stages learn slower, as in ULMFiT /
    fastai's discriminative rates). Keras 3 has no per-variable rates and Adam is invariant to gradient
    scaling, so the multiplier goes into the update step itself. `multipliers` maps variable paths to
    factors (a missing path learns at the full rate)."""

    def __init__(self, multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self.multipliers = dict(multipliers or {})
        self._index_multipliers: list[float] = []

    def build(self, var_list):
        super().build(var_list)
        self._index_multipliers = [float(self.multipliers.get(v.path, 1.0)) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._index_multipliers[variable_index(self, variable)]
        super().update_step(gradient, variable, learning_rate * factor if factor != 1.0 else learning_rate)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers}


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str  # pretrained | scratch
    learning_rate: float  # the head's peak rate (and every layer's, for scratch)
    stage_lr_decay: float | None  # per earlier stage; None: one rate for all layers
    bn: str  # frozen | train
    warmup_epochs: int
    patience: int
    epochs: int  # at most
    why: str

    @property
    def fair_trial(self) -> int:
        """The fewest epochs the policy tries a candidate for: the warm-up and one patience (fewer says
        nothing about where it would have gone)."""
        return min(self.epochs, self.warmup_epochs + self.patience)

    def describe(self) -> str:
        rates = (f"lr {self.learning_rate:g}, x{self.stage_lr_decay:g} per earlier stage" if self.stage_lr_decay
                 else f"lr {self.learning_rate:g} for every layer")
        return f"{self.name} recipe ({rates}, BatchNorm {self.bn}, warm-up {self.warmup_epochs}, up to " \
               f"{self.epochs} epochs, patience {self.patience})"


def recipe_for(config, pretrained: bool) -> Recipe:
    """The recipe `config.recipe` names, or (auto) the one the start calls for."""
    name = config.recipe if config.recipe != "auto" else ("pretrained" if pretrained else "scratch")
    why = (f"--recipe {config.recipe}" if config.recipe != "auto" else
           "the base is pretrained" if pretrained else "the base is not pretrained (--weights none)")
    scratch = name == "scratch"
    bn = config.bn if config.bn != "auto" else ("train" if scratch else "frozen")
    return Recipe(name, config.fine_tune_learning_rate or (1e-3 if scratch else 1e-4),
                  None if scratch else config.stage_lr_decay, bn,
                  max(config.warmup_epochs, 3) if scratch else config.warmup_epochs,
                  max(config.patience, 20) if scratch else config.patience, config.fine_tune_epochs, why)


def stop_reason(history, callbacks, epochs: int, monitor: str, budgeted: bool = False) -> str:
    """Why a phase-2 fit ended, in words, from its history and callbacks; `budgeted`: `epochs` was the
    policy's share for the trial, below the recipe's maximum."""
    ran = len(history.epoch)
    stopping = _early_stopping(callbacks)
    best = best_epoch(history, callbacks)
    first = history.epoch[0] if history.epoch else 0  # > 0 when BackupAndRestore resumed
    if first + ran >= epochs and budgeted:
        return f"trained its share of the policy's budget, {epochs} epochs (best epoch {best})"
    if first + ran >= epochs:
        still = best == first + ran and ran > 1
        return (f"reached the maximum of {epochs} epochs" +
                (f" with {stopping.monitor} still improving: raise --fine-tune-epochs" if still else
                 f" (best epoch {best})"))
    return f"early stopping: {stopping.monitor} did not improve for {stopping.patience} epochs " \
           f"(best epoch {best} of {first + ran})"


def best_epoch(history, callbacks) -> int:
    """The 1-based epoch whose weights early stopping restored at the end of the fit."""
    stopping = _early_stopping(callbacks)
    values = history.history.get(stopping.monitor) or []
    first = history.epoch[0] if history.epoch else 0  # > 0 when BackupAndRestore resumed
    if not values:
        return first + len(history.epoch)
    return first + 1 + int(np.argmax(values) if stopping.monitor.endswith("accuracy") else np.argmin(values))


def _early_stopping(callbacks):
    return next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))


def stage_multipliers(base, ranges, trained_stages, decay: float) -> dict[str, float]:
    """Per variable path: `decay` for the last trained stage, `decay**2` for the one before, ...; the head
    (not in the base) keeps 1."""
    multipliers = {}
    by_name = {r.name: r for r in ranges}
    for depth, stage in enumerate(reversed(trained_stages), start=1):
        for layer in by_name[stage].layers(base):
            for variable in layer.trainable_weights:
                multipliers[variable.path] = decay ** depth
    return multipliers


def warmup_cosine(learning_rate: float, total_steps: int, warmup_steps: int):
    """Linear warm-up from 0 to `learning_rate`, then cosine decay to 0 (Keras' CosineDecay)."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate, decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)


def full_model(base, augmentation, preprocessing, image_size, num_classes, head_options, bn: str):
    """uint8 pixels -> augmentation -> preprocessing -> base -> head, and the same model without the
    augmentation (what is saved: it takes raw images and shares every weight)."""
    if bn not in BN_POLICIES:
        raise TltoolkitError(f"unknown --bn {bn!r}; use frozen or train")
    classifier = attach_head(base, num_classes, **head_options)
    inputs = keras.Input((*image_size, 3), dtype="uint8", name="pixels")
    pixels = keras.layers.Rescaling(1.0, name="to_float")(inputs)  # uint8 -> float32, still 0..255
    training = keras.Model(inputs, classifier(preprocessing(augmentation(pixels))), name="finetune")
    inference = keras.Model(inputs, classifier(preprocessing(pixels)), name="classifier")
    return training, inference, classifier


def apply_bn_policy(base, bn: str) -> None:
    """After `freeze_until`: with `frozen`, every BatchNormalization layer stops training (and so runs
    in inference mode)."""
    if bn == "frozen":
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def compile_model(model, learning_rate, label_smoothing: float, jit: bool, multipliers=None) -> list[str]:
    """Compiles `model` (XLA with `jit`, unless a layer cannot be compiled); returns those layers' names."""
    blockers = xla_blockers(model) if jit else []
    # Keras applies `trainable` changes at compile(): always (re)compile after freezing.
    model.compile(optimizer=DiscriminativeAdam(multipliers=multipliers, learning_rate=learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], jit_compile=bool(jit) and not blockers)
    return blockers


def xla_blockers(model) -> list[str]:
    """Names of the layers of `model` (nested models included) that XLA cannot compile: those that say
    so (`supports_jit`: crops, rotations, zooms) and Keras' RandAugment, which claims it but whose ops
    have no XLA kernels (measured: jit_compile=True fails). jit_compile=True would make fit() fail."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += xla_blockers(layer)
        elif not layer.supports_jit or isinstance(layer, keras.layers.RandAugment):
            found.append(layer.name)
    return found


def fit(model, strategy, *args, **kwargs):
    with strategy.scope():
        return model.fit(*args, shuffle=False, **kwargs)  # the datasets shuffle themselves


def one_hot(dataset, num_classes: int):
    import tensorflow as tf

    return dataset.map(lambda x, y: (x, tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)


class EpochLog(keras.callbacks.Callback):
    """Calls `record(epoch, logs)` after every epoch (the run's metrics.csv, written as it goes)."""

    def __init__(self, record):
        super().__init__()
        self._record = record

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        # Keras 3 does not log the rate; with a schedule, optimizer.learning_rate is its current value.
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        self._record(epoch, logs)


def training_callbacks(has_validation: bool, patience: int | None, monitor: str, record, log_dir=None,
                       backup_dir=None):
    """Early stopping with best-weights restore (on validation when there is one; none for `patience`
    None: a fit of a known length), the metrics log, TensorBoard and, for resumable phases,
    BackupAndRestore."""
    monitor = monitor if has_validation else monitor.removeprefix("val_")
    mode = "max" if monitor.endswith("accuracy") else "min"
    callbacks = [EpochLog(record)]
    if patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience,
                                                       restore_best_weights=True))
    if log_dir is not None and tensorboard_installed():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False))
    if backup_dir is not None:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(str(backup_dir)))
    return callbacks


def per_image_scores(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Each image's cross-entropy and hit (1 where the argmax is its label) under `model`, over a dataset of
    (images, one-hot labels), in inference mode, in the dataset's order."""
    losses, hits = [], []
    for x, y in dataset:
        probabilities = np.asarray(model(x, training=False), dtype="float64")
        y = np.asarray(y)
        losses.append(-np.log(np.clip((probabilities * y).sum(-1), 1e-7, 1.0)))
        hits.append((probabilities.argmax(-1) == y.argmax(-1)).astype("float64"))
    return np.concatenate(losses), np.concatenate(hits)


def mean_scores(per_image) -> tuple[float, float]:
    """(cross-entropy, accuracy): the means of `per_image_scores`."""
    losses, hits = per_image
    return float(losses.mean()), float(hits.mean())


def tensorboard_installed() -> bool:
    """TensorFlow 2.21 no longer installs TensorBoard; without it there are no logs/ (pip install tensorboard)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def find_classifier(model):
    """The nested base+head model inside a saved full model (the one holding `predictions`)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and PREDICTIONS in [inner.name for inner in layer.layers]:
            return layer
    raise TltoolkitError(f"{model.name} has no classifier with a {PREDICTIONS!r} layer; it was not saved by finetune")
