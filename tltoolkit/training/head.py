"""Phase 1 as a solved problem: the head on cached features, trained to convergence, its regularisation
chosen on validation.

On cached features the head is a small problem (for a linear head, a convex one), so phase 1 trains
every setting of a small sweep at once: K heads stacked in one TensorFlow graph, each with its own
L2, dropout and learning rate, on features standardised with the training split's statistics. Each
head trains until its validation score has not improved for `patience` epochs (or `epochs` ran) and
keeps its best epoch; the best head on validation wins. Its weights go into a Keras head
(`tltoolkit.heads.head_model`) whose first layer applies the same standardisation, so the exported
model standardises too.

    fit = fit_head(train_x, train_y, val_x, val_y, num_classes=5, settings=sweep_settings())
    fit.chosen.setting, fit.table()          # what won, and every trial

Without validation images the sweep is cross-validated, as scikit-learn's LogisticRegressionCV is: k-fold
(stratified, seeded) up to CV_MAX_IMAGES training images, each fold's heads stacked beside the others, or a
seeded fifth held out beyond. Each fold head trains to convergence of its own objective (no early stopping:
the held-out images only score it), the setting with the best held-out accuracy wins (the loss breaks ties),
and it is trained again, to convergence, on all of them. (Early-stopped fold heads, or a choice by held-out
loss, favour strong L2 and fall below a tuned logistic regression on small folders: benchmarks/head_quality.py.)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence

import numpy as np

from tltoolkit.errors import TltoolkitError

# The sweep: each flag the user gives fixes its axis. L2 is Keras' kernel_regularizer L2 (lambda * sum w^2
# added to the mean cross-entropy); on standardised features 1e-5..1e-1 spans "none" to "strong".
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
# Dropout is swept for heads with hidden layers only: a linear head's regulariser is its L2 (dropout on
# its inputs rarely wins there, and costs a mask per feature per image for every setting).
DROPOUT_GRID = (0.0, 0.5)
# Adam's rate on standardised features, unless --learning-rate fixes it: fast and stable for every L2 above,
# on batches of a tenth of the images (early-stopped heads) and on full batches (cross-validated heads: no
# batch noise, so larger steps; at 1e-2 most of them were still far from converged after 500 steps).
LEARNING_RATE = {"batches": 1e-2, "full batch": 5e-2}
ADAM = (0.9, 0.999, 1e-7)  # beta_1, beta_2, epsilon: Keras' defaults
MIN_DELTA = 1e-4  # an epoch improves on the best when its score (loss, or 1 - accuracy) is lower by more
# A head without early stopping has converged when its training objective has not fallen by this fraction of
# itself for `patience` epochs (weakly regularised heads on separable features approach their minimum slowly;
# their held-out accuracy stopped changing long before).
CONVERGED = 1e-3
# Without a validation split: k-fold cross-validation for small folders (where one small holdout would choose
# by noise; k folds cost k times the heads), a seeded HOLDOUT share beyond.
CV_FOLDS = 5
CV_MAX_IMAGES = 2000
HOLDOUT = 0.2


@dataclasses.dataclass(frozen=True)
class HeadSetting:
    l2: float
    dropout: float
    learning_rate: float | None  # None: LEARNING_RATE for the way the head is trained

    def __str__(self) -> str:
        rate = "default" if self.learning_rate is None else f"{self.learning_rate:g}"
        return f"l2 {self.l2:g}, dropout {self.dropout:g}, lr {rate}"


@dataclasses.dataclass(frozen=True)
class Trial:
    setting: HeadSetting
    val_loss: float  # at the best epoch
    val_accuracy: float
    best_epoch: int  # 1-based
    epochs: int  # epochs it trained before it stopped


@dataclasses.dataclass(frozen=True)
class HeadFit:
    trials: tuple[Trial, ...]
    chosen: Trial
    weights: tuple[tuple[np.ndarray, np.ndarray], ...]  # (kernel, bias) of each Dense layer, in order
    mean: np.ndarray  # the standardisation: training-split statistics
    variance: np.ndarray
    scored_on: str  # "validation" or the holdout it used
    stopped: str  # why phase 1 stopped, one sentence
    seconds: float

    def table(self) -> list[dict]:
        """One row per trial (the report's sweep table), the chosen one marked."""
        return [{"l2": t.setting.l2, "dropout": t.setting.dropout, "learning_rate": t.setting.learning_rate,
                 "val_loss": round(t.val_loss, 4), "val_accuracy": round(t.val_accuracy, 4),
                 "best_epoch": t.best_epoch, "epochs": t.epochs, "chosen": "yes" if t is self.chosen else ""}
                for t in self.trials]


def sweep_settings(l2: float | None = None, dropout: float | None = None, learning_rate: float | None = None,
                   hidden: Sequence[int] = ()) -> list[HeadSetting]:
    """Every combination of the grids, with a given value fixing its axis (the learning rate, when not given,
    is LEARNING_RATE's for the way fit_head trains)."""
    dropouts = DROPOUT_GRID if hidden else (0.0,)
    rate = None if learning_rate is None else float(learning_rate)
    return [HeadSetting(float(a), float(b), rate) for a, b in
            itertools.product(*[(v,) if v is not None else grid for v, grid in ((l2, L2_GRID), (dropout, dropouts))])]


def standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance of the training features. A feature that (almost) never varies on
    the training images (a ReLU unit that stays 0) gets a typical variance instead of ~0: divided by
    ~0, one unseen activation would swamp every other feature."""
    mean = features.mean(0, dtype="float64")
    variance = features.var(0, dtype="float64")
    typical = max(float(variance.mean()), 1e-12) if variance.size else 1.0
    variance = np.where(variance < 1e-2 * typical, typical, variance)
    return mean.astype("float32"), variance.astype("float32")


def fit_head(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray | None, val_y: np.ndarray | None,
             num_classes: int, settings: Sequence[HeadSetting], hidden: Sequence[int] = (), *, epochs: int = 500,
             patience: int = 20, label_smoothing: float = 0.0, class_weight=None, monitor: str = "val_loss",
             seed: int = 0, init=None) -> HeadFit:
    """Trains one head per setting on (standardised) `train_x` vectors and keeps the best on validation.

    `train_y`/`val_y`: class ids. `class_weight`: {class id: weight} or None. `init`: (kernel, bias)
    pairs to start every head from (a previous run's head, grown for new classes), or None. Early-stopped
    heads train on batches of a tenth of the training images (8 to 256): an epoch is about ten steps, or
    more for large folders; cross-validated heads take full-batch steps (an epoch is one step).
    """
    if not settings:
        raise TltoolkitError("the head sweep has no settings to try")
    tic = time.perf_counter()
    train_x = _vectors(train_x)
    mean, variance = standardisation(train_x)
    scale = 1.0 / np.sqrt(variance)
    standard = lambda x: ((_vectors(x) - mean) * scale).astype("float32")  # noqa: E731
    x, train_y = standard(train_x), np.asarray(train_y, "int32")
    weights = None if class_weight is None else np.array([class_weight.get(c, 1.0) for c in range(num_classes)],
                                                         "float32")
    options = dict(num_classes=num_classes, hidden=tuple(int(h) for h in hidden), label_smoothing=label_smoothing,
                   class_weight=weights, seed=seed, init=init)

    def early_stopped(fit_x, fit_y, score_x, score_y):
        run = _Sweep(x.shape[1], _rated(settings, "batches"), batch_size=min(256, max(8, len(fit_x) // 10)),
                     **options)
        trials, best = run.train(fit_x, fit_y, score_x, score_y, epochs, patience, monitor)
        chosen = min(trials, key=lambda t: _rank(t, monitor))
        k = trials.index(chosen)
        return trials, chosen, [(w[k], b[k]) for w, b in best]

    if val_x is not None and len(val_x):
        scored_on = "validation"
        trials, chosen, params = early_stopped(x, train_y, standard(val_x), np.asarray(val_y, "int32"))
    elif len(train_y) > CV_MAX_IMAGES:
        held = _holdout(train_y, seed)
        scored_on = f"a held-out {HOLDOUT:.0%} of the training images (no validation split)"
        trials, chosen, params = early_stopped(x[~held], train_y[~held], x[held], train_y[held])
    else:
        held, settings = _folds(train_y, seed), _rated(settings, "full batch")
        folds = len(held)
        scored_on = f"{folds}-fold cross-validation on the training images (no validation split)"
        run = _Sweep(x.shape[1], [s for s in settings for _ in range(folds)], batch_size=len(x), **options)
        fold_trials, _ = run.converge(x, train_y, np.tile(~held, (len(settings), 1)),
                                      np.tile(held, (len(settings), 1)), epochs, patience)
        trials = [_mean_trial(fold_trials[i * folds:(i + 1) * folds]) for i in range(len(settings))]
        chosen = min(trials, key=lambda t: _rank(t, "val_accuracy"))
        refit = _Sweep(x.shape[1], [chosen.setting], batch_size=len(x), **options)  # on every training image
        _, params = refit.converge(x, train_y, None, None, epochs, patience)
        params = [(w[0], b[0]) for w, b in params]
    what = "lowering its training objective" if "fold" in scored_on else f"improving on {scored_on.split(' (')[0]}"
    capped = sum(t.epochs >= epochs for t in trials if t is not chosen)
    stopped = (f"reached the maximum of {epochs} epochs with the chosen setting still {what}: raise --epochs to "
               "train longer" if chosen.epochs >= epochs else
               f"the chosen setting stopped {what} for {patience} epochs (it trained {chosen.epochs})" +
               (f"; {capped} other setting(s) reached the {epochs}-epoch maximum still {what}" if capped else ""))
    return HeadFit(tuple(trials), chosen, tuple(params), mean, variance, scored_on, stopped,
                   time.perf_counter() - tic)


def _rated(settings: Sequence[HeadSetting], mode: str) -> list[HeadSetting]:
    """The settings with LEARNING_RATE[mode] where they leave the rate to the way the head is trained."""
    return [s if s.learning_rate is not None else dataclasses.replace(s, learning_rate=LEARNING_RATE[mode])
            for s in settings]


def _rank(trial: Trial, monitor: str):
    # Ties (common in accuracy on a small validation split) go to the lower loss, then the stronger L2.
    first = -trial.val_accuracy if monitor == "val_accuracy" else trial.val_loss
    return (first, trial.val_loss, -trial.setting.l2, trial.setting.dropout)


def _vectors(x) -> np.ndarray:
    x = np.asarray(x, "float32")
    return x.reshape(len(x), -1)


def _folds(labels: np.ndarray, seed: int) -> np.ndarray:
    """[folds, n] masks of the images each fold scores on (True: held out): stratified k-fold."""
    _, counts = _enough_to_hold_out(labels)
    return stratified_folds(labels, min(CV_FOLDS, int(counts.max())), seed)


def _holdout(labels: np.ndarray, seed: int) -> np.ndarray:
    """A mask of one seeded per-class HOLDOUT share (at least one of each class that has two)."""
    classes, counts = _enough_to_hold_out(labels)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), bool)
    for label, count in zip(classes, counts):
        if count >= 2:
            held[rng.choice(np.flatnonzero(labels == label), max(1, round(HOLDOUT * count)), replace=False)] = True
    return held


def _enough_to_hold_out(labels: np.ndarray):
    classes, counts = np.unique(labels, return_counts=True)
    if counts.max() < 2:
        raise TltoolkitError("too few training images to choose the head's setting without validation images; "
                             "add images, or pass --l2, --dropout and --learning-rate to fix the setting")
    return classes, counts


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """[folds, n] masks, True where an image is held out: each class's shuffled images dealt round the
    folds in turn, so every image is held out exactly once."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
    fold = np.empty(len(labels), int)
    fold[order] = np.arange(len(order)) % folds
    return fold[None] == np.arange(folds)[:, None]


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray, num_classes: int, settings: Sequence[HeadSetting],
                              folds: int = CV_FOLDS, *, epochs: int = 500, patience: int = 20,
                              seed: int = 0) -> tuple[np.ndarray, HeadSetting]:
    """Each image's class probabilities from heads that never trained on it: linear heads on `folds`
    stratified folds, trained to convergence as `fit_head` does without validation images. Returns the
    [n, classes] probabilities of the setting with the lowest mean held-out loss, and that setting (what
    confident learning takes as its input). Up to CV_MAX_IMAGES images every setting trains on every fold;
    beyond, the setting is chosen on the first fold alone (its held-out share is then hundreds of images
    or more) and only the chosen one trains on the others: at 10,000 images 9 heads instead of 25."""
    x, y = _vectors(x), np.asarray(y, "int32")
    if not settings:
        raise TltoolkitError("the head sweep has no settings to try")
    if len(x) < folds:
        raise TltoolkitError(f"{len(x)} images are too few for {folds}-fold out-of-fold predictions; add images")
    held = stratified_folds(y, folds, seed)
    mean, variance = standardisation(x)
    x = ((x - mean) / np.sqrt(variance)).astype("float32")
    settings = _rated(settings, "full batch")
    choose_on = held[:1] if len(x) > CV_MAX_IMAGES else held
    losses, kernels, biases = _fold_heads(x, y, num_classes, settings, choose_on, epochs, patience, seed)
    chosen = int(np.argmin(losses))
    kernels, biases = kernels[chosen], biases[chosen]
    if len(choose_on) < folds:
        _, rest_kernels, rest_biases = _fold_heads(x, y, num_classes, settings[chosen:chosen + 1], held[1:], epochs,
                                                   patience, seed)
        kernels, biases = np.concatenate([kernels, rest_kernels[0]]), np.concatenate([biases, rest_biases[0]])
    logits = np.zeros((len(x), num_classes), "float32")
    for fold in range(folds):
        logits[held[fold]] = x[held[fold]] @ kernels[fold] + biases[fold]
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=1, keepdims=True), settings[chosen]


def _fold_heads(x, y, num_classes, settings, held, epochs, patience, seed):
    """Linear heads for every setting on every fold of `held` ([folds, n] masks), stacked in one graph and
    trained to convergence: (each setting's mean held-out loss [settings], kernels [settings, folds, d,
    classes], biases [settings, folds, classes])."""
    folds = len(held)
    run = _Sweep(x.shape[1], [s for s in settings for _ in range(folds)], num_classes=num_classes, hidden=(),
                 batch_size=len(x), label_smoothing=0.0, class_weight=None, seed=seed, init=None)
    trials, params = run.converge(x, y, np.tile(~held, (len(settings), 1)), np.tile(held, (len(settings), 1)),
                                  epochs, patience)
    (kernels, biases), = params  # a linear head: one Dense layer
    losses = np.array([t.val_loss for t in trials]).reshape(len(settings), folds).mean(axis=1)
    return losses, kernels.reshape(len(settings), folds, *kernels.shape[1:]), biases.reshape(len(settings), folds, -1)


def _mean_trial(folds: Sequence[Trial]) -> Trial:
    """One setting's trials on k folds as one: mean scores and best epoch, the longest run."""
    return Trial(folds[0].setting, float(np.mean([t.val_loss for t in folds])),
                 float(np.mean([t.val_accuracy for t in folds])),
                 max(1, round(float(np.mean([t.best_epoch for t in folds])))), max(t.epochs for t in folds))


def _head_means(values, mask):
    """Each head's mean of `values` [K, n] over the images `mask` [K, n] (1 or 0) marks; None: all of them."""
    import tensorflow as tf

    if mask is None:
        return tf.reduce_mean(values, axis=1)
    return tf.reduce_sum(values * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class _Sweep:
    """K heads (one per setting) as stacked variables, trained together with Adam in one graph."""

    def __init__(self, features: int, settings, num_classes, hidden, batch_size, label_smoothing, class_weight,
                 seed, init):
        import tensorflow as tf

        self.settings = list(settings)
        k = len(self.settings)
        self.batch_size, self.num_classes = int(batch_size), num_classes
        self.label_smoothing = float(label_smoothing)
        self.class_weight = None if class_weight is None else tf.constant(class_weight)
        self.l2 = tf.constant([s.l2 for s in self.settings], tf.float32)
        self.keep = tf.constant([1.0 - s.dropout for s in self.settings], tf.float32)
        self.dropout = any(s.dropout for s in self.settings)
        self.learning_rate = tf.constant([s.learning_rate for s in self.settings], tf.float32)
        rng = np.random.default_rng(seed)
        sizes = [features, *hidden, num_classes]
        self.params = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if init is not None:
                kernel, bias = (np.broadcast_to(np.asarray(v, "float32"), (k, *np.shape(v))) for v in init[i])
            elif i == len(sizes) - 2 and not hidden:
                kernel, bias = np.zeros((k, fan_in, fan_out), "float32"), np.zeros((k, fan_out), "float32")
            else:  # Glorot uniform, as Keras' Dense
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                kernel = rng.uniform(-limit, limit, (k, fan_in, fan_out)).astype("float32")
                bias = np.zeros((k, fan_out), "float32")
            self.params += [tf.Variable(kernel), tf.Variable(bias)]
        self.best = [tf.Variable(p) for p in self.params]
        self.moments = [(tf.Variable(tf.zeros_like(p)), tf.Variable(tf.zeros_like(p))) for p in self.params]
        self.step = tf.Variable(0.0)
        self.generator = tf.random.Generator.from_seed(seed)
        self._epoch = tf.function(self._epoch_fn)
        self._score = tf.function(self._score_fn)
        self._converge = tf.function(self._converge_fn)
        self._keep_best = tf.function(self._keep_best_fn)

    def _logits(self, x, training: bool):
        import tensorflow as tf

        h, layers = x, len(self.params) // 2
        dropout = training and self.dropout
        for i in range(layers):
            if dropout:  # inverted dropout on each Dense layer's input, one rate per head
                # One uniform draw shared by the heads: each head still sees independent dropout over time,
                # and the sweep draws d numbers per image instead of K * d.
                keep = tf.reshape(self.keep, [-1, 1, 1])
                draw = self.generator.uniform(tf.shape(h)[-2:])
                h = tf.cast(draw < keep, h.dtype) * (h if i else h[None]) / keep
            kernel, bias = self.params[2 * i], self.params[2 * i + 1]
            equation = "kbi,kio->kbo" if (i or dropout) else "bi,kio->kbo"  # the first input is shared
            h = tf.einsum(equation, h, kernel) + bias[:, None, :]
            if i < layers - 1:
                h = tf.nn.relu(h)
        return h

    def _losses(self, logits, labels, member):
        """Each head's mean loss over the images it trains on (`member` [K, batch]: 1 or 0; None: all)."""
        import tensorflow as tf

        targets = tf.one_hot(labels, self.num_classes)
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
        losses = tf.nn.softmax_cross_entropy_with_logits(tf.broadcast_to(targets, tf.shape(logits)), logits)
        if self.class_weight is not None:
            losses = losses * tf.gather(self.class_weight, labels)[None]
        return _head_means(losses, member)

    def _step(self, x, labels, active, member):
        """One Adam step of every head on these images (`member` [K, batch]: which of them each head trains
        on, 1 or 0; None: all); `active` [K] (1 or 0) freezes the heads that stopped. Returns each head's
        objective (mean loss + L2 penalty) before the step."""
        import tensorflow as tf

        beta_1, beta_2, epsilon = ADAM
        with tf.GradientTape() as tape:
            losses = self._losses(self._logits(x, True), labels, member)
            penalty = tf.add_n([tf.reduce_sum(tf.square(w), axis=[1, 2]) for w in self.params[0::2]])
            objective = losses + self.l2 * penalty
            total = tf.reduce_sum(objective)
        gradients = tape.gradient(total, self.params)
        self.step.assign_add(1.0)
        correction = tf.sqrt(1 - beta_2 ** self.step) / (1 - beta_1 ** self.step)
        for param, gradient, (m, v) in zip(self.params, gradients, self.moments):
            m.assign(beta_1 * m + (1 - beta_1) * gradient)
            v.assign(beta_2 * v + (1 - beta_2) * tf.square(gradient))
            rate = tf.reshape(self.learning_rate * active, [-1] + [1] * (len(param.shape) - 1))
            param.assign_sub(rate * correction * m / (tf.sqrt(v) + epsilon))
        return objective

    def _epoch_fn(self, x, labels, active):
        import tensorflow as tf

        n = tf.shape(x)[0]
        order = tf.argsort(self.generator.uniform([n]))
        for i in tf.range((n + self.batch_size - 1) // self.batch_size):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            self._step(tf.gather(x, batch), tf.gather(labels, batch), active, None)

    def _converge_fn(self, x, labels, member, epochs, patience):
        """Full-batch steps until each head's objective has not fallen by CONVERGED of itself for `patience`
        steps (or `epochs` ran), in one graph: for small folders, per-epoch dispatch would cost more than the
        steps. Returns the number of steps each head took."""
        import tensorflow as tf

        k = len(self.settings)
        state = (tf.constant(0), tf.fill([k], np.inf), tf.zeros([k], tf.int32), tf.ones([k]), tf.zeros([k], tf.int32))

        def step(epoch, best, since, active, ran):
            objective = self._step(x, labels, active, member)
            improved = objective < best * (1 - CONVERGED)
            since = tf.where(improved, 0, since + 1)
            ran = ran + tf.cast(active, tf.int32)
            return (epoch + 1, tf.where(improved, objective, best), since,
                    tf.where(since >= patience, 0.0, active), ran)

        state = tf.while_loop(lambda epoch, best, since, active, ran: (epoch < epochs) & tf.reduce_any(active > 0),
                              step, state)
        return state[-1]

    def _score_fn(self, x, labels, mask):
        """Each head's (cross-entropy, accuracy) on the images `mask` [K, n] marks (None: all)."""
        import tensorflow as tf

        logits = self._logits(x, False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.broadcast_to(labels[None], tf.shape(logits)[:2]),
                                                                logits)
        hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels[None]), tf.float32)
        return _head_means(losses, mask), _head_means(hits, mask)

    def _keep_best_fn(self, improved):
        import tensorflow as tf

        for best, param in zip(self.best, self.params):
            mask = tf.reshape(improved, [-1] + [1] * (len(param.shape) - 1))
            best.assign(tf.where(mask, param, best))

    def current(self):
        return [(w.numpy(), b.numpy()) for w, b in zip(self.params[0::2], self.params[1::2])]

    def train(self, x, y, score_x, score_y, epochs: int, patience: int, monitor: str):
        """Trains on all of `x` until every head has stopped improving on the scoring images for `patience`
        epochs (or `epochs` ran). Returns (trials, best (kernel, bias) per layer, stacked)."""
        import tensorflow as tf

        k = len(self.settings)
        x, y, score_x, score_y = (tf.constant(v) for v in (x, y, score_x, score_y))
        active = np.ones(k, "float32")
        best_score = np.full(k, np.inf)
        best_loss, best_accuracy = np.full(k, np.inf), np.zeros(k)
        best_epoch, ran = np.zeros(k, int), np.zeros(k, int)
        for epoch in range(1, max(0, int(epochs)) + 1):
            self._epoch(x, y, tf.constant(active))
            ran += active.astype(int)
            losses, accuracy = (v.numpy() for v in self._score(score_x, score_y, None))
            score = 1 - accuracy + 1e-3 * losses if monitor == "val_accuracy" else losses
            improved = (score < best_score - MIN_DELTA) & (active > 0)
            if improved.any():
                self._keep_best(tf.constant(improved))
            best_score = np.where(improved, score, best_score)
            best_loss, best_accuracy = np.where(improved, losses, best_loss), np.where(improved, accuracy, best_accuracy)
            best_epoch = np.where(improved, epoch, best_epoch)
            active = np.where(epoch - best_epoch >= patience, 0.0, active).astype("float32")
            if not active.any():
                break
        trials = [Trial(s, float(best_loss[i]), float(best_accuracy[i]), int(best_epoch[i]), int(ran[i]))
                  for i, s in enumerate(self.settings)]
        best = [(w.numpy(), b.numpy()) for w, b in zip(self.best[0::2], self.best[1::2])]
        return trials, best

    def converge(self, x, y, member, score_mask, epochs: int, patience: int):
        """Trains each head to convergence of its own objective (see _converge_fn), then scores it on the
        images `score_mask` marks. `member`/`score_mask`: [K, n] booleans, which images of `x` each head
        trains on / is scored on (k-fold heads share x); None: all. Returns (trials, final (kernel, bias) per
        layer, stacked); without `score_mask`, trials is None."""
        import tensorflow as tf

        x, y = tf.constant(x), tf.constant(y)
        member, score_mask = (None if m is None else tf.constant(m, tf.float32) for m in (member, score_mask))
        ran = self._converge(x, y, member, tf.constant(int(epochs)), tf.constant(int(patience))).numpy()
        trials = None
        if score_mask is not None:
            losses, accuracy = (v.numpy() for v in self._score(x, y, score_mask))
            trials = [Trial(s, float(losses[i]), float(accuracy[i]), int(ran[i]), int(ran[i]))
                      for i, s in enumerate(self.settings)]
        return trials, self.current()
