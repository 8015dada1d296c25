"""`finetune(config)`: a new head on a base, in two phases, into a run directory that grows with the dataset.

    finetune({"base": "vgg16", "data": "./cats", "out": "runs/cats", "freeze_until": "block5"})

1. Scan the data (stable content-hash splits; the run's class index keeps old ids, new classes append).
2. Phase 1 (`head.py`): the head on cached features of the frozen base (only images the cache lacks
   are extracted): standardised features, a sweep of L2/dropout settings trained to convergence, the
   best on validation kept.
3. Decide what else trains (`policy.py`): `--freeze-until` a stage, a layer, `head` or `none`; `auto`
   tries the head, the last stage, the last two, ... within a time budget and keeps the best on
   validation. A base that is not pretrained trains everything, with the from-scratch recipe.
4. Phase 2 (`phases.py`), for each freeze point tried: the full model from the phase-1 head, the
   recipe's learning rates and BatchNorm policy, early stopping with the best epoch kept,
   BackupAndRestore (a killed run resumes at its epoch). Without augmentation the frozen stages
   compute the same thing every epoch: phase 2 then trains on a cache of the last frozen stage's
   output (`cut_cache`, default on). A phase 2 worse on validation than phase 1 is not kept.
5. The run directory (`run.py`): model, metrics across runs, plots, report.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from tltoolkit.errors import TltoolkitError
from tltoolkit.heads import GLOBAL_POOLINGS
from tltoolkit.runtimes import check_runtime
from tltoolkit.training import run as rundir
from tltoolkit.training.config import DEFAULTS, IDENTITY, FinetuneConfig, load_config_file, resolve_config
from tltoolkit.training.policy import (AUTO, HEAD, MAX_FLOOR_SECONDS, MIN_POLICY_EPOCHS, NONE, Decision,
                                      budget_epochs, candidates, prior_freeze_point, trial_epochs,
                                      resolve_freeze)

__all__ = ["finetune", "DEFAULTS", "FinetuneConfig", "load_config_file", "resolve_config"]


def finetune(config, plan: bool = False, force: bool = False, progress: bool = True, echo=None) -> dict:
    """Runs (or with `plan=True` only describes) a fine-tuning run; returns its entry of state.json.

    `config`: a mapping of settings (`tltoolkit.training.config.FinetuneConfig`'s fields; missing ones
    take their defaults) or a `FinetuneConfig`. Raises `TltoolkitError` (one line) for bad input;
    nothing in the run directory is half-written.
    """
    from tltoolkit.architectures.bases import build_base, cache_name, resolve_base
    from tltoolkit.data import scan
    from tltoolkit.training import distribute

    echo = echo or (lambda line: print(line, flush=True))
    config = resolve_config(config)
    check_runtime(config.runtime, config.precision)  # a precision the CPU lacks: before any folder is made
    # An unknown base: one line with close matches; keras:NAME and saved models derive their stages here.
    spec = resolve_base(config.base, config.image_size, config.preprocessing, config.weights)
    size = tuple(config.image_size or (spec.default_size, spec.default_size))
    if min(size) < spec.min_size:
        raise TltoolkitError(f"--image-size {'x'.join(map(str, size))} is too small for {spec.id}: at least "
                             f"{spec.min_size}")
    config = config.replace(image_size=list(size))  # resolved once, as evaluate/predict read it
    if config.freeze_until not in (AUTO, HEAD, NONE, *spec.stage_names):
        # A layer name: checked on the bare architecture now, not after scanning a large folder.
        resolve_freeze(config.freeze_until, spec, build_base(spec, None, size))
    state = rundir.RunState(Path(config.out).expanduser(), echo, force, plan)
    # Before any TensorFlow op: multi-worker collectives must be configured at start-up.
    strategy = None if plan else distribute.make_strategy(config.strategy)
    base_id = cache_name(spec)  # what the base is, beyond its name (a saved file's hash)
    if distribute.is_chief():  # other workers follow the chief's run directory
        state.check_compatible(config.to_json(), IDENTITY, base_id)

    # The previous runs' splits win: images seen before never change split, small classes included.
    old_index, snapshot = state.old_class_index(), state.out / "snapshot.parquet"
    splits_from = snapshot if snapshot.exists() else None
    result = scan(config.data, config.val_split, class_index=old_index or None, splits_from=splits_from,
                  **scan_cache(config))
    if distribute.is_chief():
        state.check_classes(result.source_classes)
    if not state.runs and (old_index or splits_from):  # --force cleared the run whose index and splits it followed
        result = scan(config.data, config.val_split, **scan_cache(config))
    with state:  # releases the run directory's lock, which run() takes before writing
        return _Training(config, spec, size, base_id, state, result, strategy, progress, echo).run(plan)


class _Training:
    """One invocation after its checks: the data, the base, and the run being written."""

    def __init__(self, config: FinetuneConfig, spec, size, base_id, state, result, strategy, progress, echo):
        from tltoolkit.training import distribute

        self.config, self.spec, self.size, self.base_id = config, spec, size, base_id
        self.state, self.result, self.strategy, self.progress, self.echo = state, result, strategy, progress, echo
        self.out = state.out
        self.chief = distribute.is_chief()
        self.class_names = result.class_names
        self.num_classes = len(self.class_names)
        self.usable = result.usable()
        self.train_table, self.val_table = result.usable("train"), result.usable("validation")
        self.has_val = len(self.val_table) > 0
        self.train_counts = self.train_table.groupby("label").size().reindex(self.class_names, fill_value=0)
        runs = state.runs
        self.resuming = bool(runs) and runs[-1]["status"] == "running"
        self.number = runs[-1]["run"] if self.resuming else len(runs) + 1
        self.previous = state.finished_runs[-1] if state.finished_runs else None
        self.old_classes = list(state.old_class_index())
        self.new_classes = [c for c in self.class_names if c not in self.old_classes] if self.previous else []
        # The base as the last finished run left it (fine-tuned or not): its features are the ones to cache.
        base_file = self.out / "base.weights.h5"
        self.refined_base = bool(self.previous and self.previous.get("base_trained") and base_file.exists())
        self.weights = str(base_file) if self.refined_base else (None if config.weights == "none" else config.weights)
        self.pretrained = self.weights is not None
        self.head_options = dict(hidden=list(config.hidden), pooling=config.pooling)

    # -- the run ------------------------------------------------------------------------------------------

    def run(self, plan: bool) -> dict:
        from tltoolkit.features.cache import FeatureCache
        from tltoolkit.features.extractor import feature_extractor, runtime_arguments
        from tltoolkit.training import phases

        config = self.config
        pooling = config.pooling if config.pooling in GLOBAL_POOLINGS else None
        # int8 calibrates on training images: validation scores images the quantisation never saw.
        self.runtime = runtime_arguments(config.runtime, config.precision, self.train_table, config.batch_size,
                                         self.progress)
        self.extractor = feature_extractor(self.spec, weights=self.weights, image_size=self.size,
                                           layer=self.spec.stage_names[-1], pooling=pooling, resize=config.resize,
                                           seed=config.seed, **self.runtime)
        self.recipe = phases.recipe_for(config, self.pretrained)
        self.decision, measure = self._decide()
        cache = FeatureCache(self.extractor.spec, config.cache_dir)
        misses = len(cache.missing(self.usable["sha256"]))
        self.notes = [f"data: {len(self.train_table)} training and {len(self.val_table)} validation images in "
                      f"{self.num_classes} classes (smallest class: {int(self.train_counts.min())} training images)",
                      f"policy: {self.decision.reason}"]
        if self.decision.trained_stages or measure:
            self.notes.append(f"phase 2: {self.recipe.describe()}: {self.recipe.why}"
                              + ("; a phase-2 model that is kept trains once more on the training and validation "
                                 "images together for its best epochs (--no-refit: not)" if config.refit and self.has_val
                                 else ""))
        if self.new_classes:
            self.notes.append(f"new classes {', '.join(self.new_classes)}: the head grows from "
                              f"{len(self.old_classes)} to {self.num_classes} outputs, the old classes keep their weights")
        if self.previous:
            self.notes.append(f"warm start from run {self.previous['run']}'s model"
                              + (" (its fine-tuned base re-extracts the features)" if self.refined_base else ""))
        if self.resuming:
            self.notes.append(f"resuming run {self.number}, which was interrupted")
        if plan:
            from tltoolkit.training.plan import describe

            return describe(self, misses, measure)
        for line in self.notes:
            self.echo(line)
        self.entry = {"run": self.number, "status": "running", "config": config.to_json(), "base_id": self.base_id,
                      "replicas": self.strategy.num_replicas_in_sync, "chief": self.chief,
                      "decision": self.decision.freeze_until, "trained_stages": list(self.decision.trained_stages),
                      "recipe": self.recipe.name, "notes": self.notes, "phases": []}
        if self.chief:
            self.state.lock()
            (self.out / "plots").mkdir(parents=True, exist_ok=True)
            self.state.runs[:] = [*(self.state.runs[:-1] if self.resuming else self.state.runs), self.entry]
            self.state.save()
        self.metrics = rundir.Metrics(self.out / "metrics.csv")

        import keras

        keras.utils.set_random_seed(int(config.seed))
        head, phase1, phase1_cost = self._phase1()
        if self.extractor.runtime is not None:
            from tltoolkit.features.extractor import runtime_fidelity

            self.entry["fidelity"] = runtime_fidelity(self.extractor, self.val_table if self.has_val else self.usable,
                                                      config.seed)
            self._note(f"features on {config.runtime} {config.precision} (phase 1 and the cut cache; the saved model "
                       f"runs TensorFlow fp32): {self.entry['fidelity']}; phase 1 "
                       + (f"val_accuracy {phase1[1]:.3f}" if phase1 else "without validation images"))
        best = {"until": HEAD, "score": phase1, "weights": None, "seconds": phase1_cost}
        if measure:
            best = self._measure(head, phase1, phase1_cost)
        elif self.decision.trained_stages and config.fine_tune_epochs > 0:
            result = self._phase2(head, self.decision)
            # Phase 2 is what was asked for (--freeze-until, or the from-scratch recipe): it is kept unless
            # phase 1 beats it beyond validation's noise, the policy's rule the other way round.
            if not self.has_val or not _clearly_better(self.phase1_per_image, result["per_image"], config.monitor):
                best = result
            else:
                self.entry["phases"][-1]["summary"] += ("; phase 1 is clearly better on validation: phase 1's model "
                                                        "is kept")
        for phase in self.entry["phases"]:
            phase["kept"] = phase.get("trial", HEAD) == best["until"]
        self._finish(head, best)
        return self.entry

    def _decide(self) -> tuple[Decision, bool]:
        """(what trains, whether auto measures candidates). The measured choice replaces the decision later."""
        config, spec = self.config, self.spec
        per_class = int(self.train_counts.min())
        if config.freeze_until != AUTO:
            return resolve_freeze(config.freeze_until, spec, self.extractor.base), False
        if self.recipe.name == "scratch":
            return resolve_freeze(NONE, spec, self.extractor.base, f"auto, {self.recipe.why}"), False
        until, why = prior_freeze_point(per_class, spec.stage_names, config.policy_thresholds)
        if not self.has_val:
            why = f"auto without validation images to measure on, by the rule of thumb ({why})"
        elif config.policy_budget <= 0 or config.fine_tune_epochs <= 0:
            why = f"auto without a budget to measure in, by the rule of thumb ({why})"
        else:
            tried = ", ".join(candidates(spec.stage_names))
            return Decision(AUTO, (), None, f"auto: trying {tried} on validation within {config.policy_budget:g}x "
                                            f"phase 1's cost (the rule of thumb would say {until}: {why})"), True
        return resolve_freeze(until, spec, self.extractor.base, why), False

    # -- phase 1 ------------------------------------------------------------------------------------------

    def _phase1(self):
        """The head on cached features: (the Keras head, its validation score, phase 1's cost in seconds:
        one forward pass over the training images plus the sweep)."""
        from tltoolkit.features.local import extract_features
        from tltoolkit.heads import head_model, transfer_head
        from tltoolkit.training.head import fit_head, sweep_settings

        config = self.config
        started = time.perf_counter()
        cache, stats = extract_features(self.usable, self.extractor, config.cache_dir, config.batch_size,
                                        progress=self.progress)
        self.extracted = stats.computed
        self._note(f"features: computed {stats.computed} of {stats.images} images ({stats.images - stats.computed} "
                   f"from the cache) in {time.perf_counter() - started:.1f} s")
        train_x, train_y = self._cached(cache, self.train_table)
        val_x, val_y = self._cached(cache, self.val_table) if self.has_val else (None, None)
        init = self._previous_head()
        self.metrics.drop(self.number, 1)
        settings = sweep_settings(config.l2, config.dropout, config.learning_rate, config.hidden)
        weights = self._class_weights()
        fit = None
        if config.epochs > 0:
            self.echo(f"phase 1: the head on cached features, {len(settings)} settings, up to {config.epochs} epochs")
            fit = fit_head(train_x, train_y, val_x, val_y, self.num_classes, settings, config.hidden,
                           epochs=config.epochs, patience=config.head_patience,
                           label_smoothing=config.label_smoothing, class_weight=weights, monitor=config.monitor,
                           seed=config.seed, init=init)
        self._head_fit = (fit, train_x, train_y, val_x, val_y, weights)
        chosen = fit.chosen.setting if fit else None
        self.head_options.update(dropout=chosen.dropout if chosen else 0.0, l2=chosen.l2 if chosen else 0.0)
        head = head_model(self.extractor.feature_shape, self.num_classes, **self.head_options)
        if fit:
            _load_fit(head, fit)
        elif self.previous_model is not None:
            transfer_head(self.previous_model, head)
        from tltoolkit.training.phases import mean_scores

        self.phase1_per_image = _per_image(head, val_x, val_y) if self.has_val else None  # auto compares with it
        score = mean_scores(self.phase1_per_image) if self.has_val else None
        seconds = fit.seconds if fit else 0.0
        cost = self._forward_seconds() * len(self.train_table) + seconds
        summary = _phase_line(1, "head on cached features", score, seconds)
        if fit:
            summary += f"; chosen {chosen} on {fit.scored_on.split(' (')[0]}; {fit.stopped}"
            self.entry.update(head_sweep=fit.table(), head_scored_on=fit.scored_on, head_setting=str(chosen))
            if self.chief:  # one row: the chosen setting at its best epoch
                train_score = _score(head, train_x, train_y)
                self.metrics.record(self.number, 1, fit.chosen.best_epoch - 1, {
                    "loss": train_score[0], "accuracy": train_score[1], "learning_rate": chosen.learning_rate,
                    **({"val_loss": score[0], "val_accuracy": score[1]} if score else {})})
        summary += "; " + self._baseline(train_x, train_y, val_x, val_y)
        self.entry["phases"].append({"phase": 1, "trial": HEAD, "seconds": round(seconds, 2), **_scores(score),
                                     "summary": summary})
        self.echo(summary)
        return head, score, cost

    def _baseline(self, train_x, train_y, val_x, val_y) -> str:
        """What the frozen features alone give, as `tltoolkit rank` scores them (the phase-1 head is its
        linear probe): k-NN accuracy and LogME, stored in the run's entry; one clause for the report."""
        from tltoolkit.features.scores import frozen_baseline

        baseline = frozen_baseline(train_x, train_y, val_x, val_y, self.config.seed)
        if baseline is None:
            return "no frozen-feature baseline (fewer than two training images)"
        self.entry["baseline"] = baseline
        on = "validation" if self.has_val else "training, leave-one-out"
        return (f"frozen features alone: k-NN accuracy {baseline['knn_accuracy']:.3f} (k={baseline['knn_k']}, on "
                f"{on}), LogME {baseline['logme']:.3f}")

    def _cached(self, cache, table):
        located, features = cache.features(table)
        return features, table["label_id"].to_numpy()

    def _class_weights(self):
        from tltoolkit.heads import class_weights

        if self.config.class_weight != AUTO:
            return None
        return class_weights([int(self.train_counts[name]) for name in self.class_names])

    def _previous_head(self):
        """The previous run's head as (kernel, bias) pairs to start from (grown for new classes), or None
        when its shape does not fit (another pooling, a head from before standardisation)."""
        from tltoolkit.architectures import load_model
        from tltoolkit.heads import NORMALIZATION, dense_layers, grow_predictions, head_layers
        from tltoolkit.training.phases import find_classifier

        self.previous_model = None
        if not (self.previous and (self.out / "model.keras").exists()):
            return None
        self.previous_model = find_classifier(load_model(self.out / "model.keras"))
        if NORMALIZATION not in [layer.name for layer in head_layers(self.previous_model)]:
            return None
        pairs = [layer.get_weights() for layer in dense_layers(self.previous_model)]
        kernel, bias = pairs[-1]
        fresh = np.zeros((kernel.shape[0], self.num_classes), "float32"), np.zeros(self.num_classes, "float32")
        pairs[-1] = grow_predictions(kernel, bias, *fresh)
        return pairs

    def _forward_seconds(self) -> float:
        """The extractor's forward pass per image, timed on one batch (traced first)."""
        import tensorflow as tf

        if not hasattr(self, "_per_image"):
            batch = tf.zeros((int(self.config.batch_size), *self.size, 3))
            self.extractor(batch)
            tic = time.perf_counter()
            self.extractor(batch)
            self._per_image = (time.perf_counter() - tic) / int(self.config.batch_size)
        return self._per_image

    # -- phase 2 ------------------------------------------------------------------------------------------

    def _measure(self, head, phase1, phase1_cost) -> dict:
        """--freeze-until auto: each candidate freeze point trained and scored on validation, cheapest
        first, until the budget is spent; the best is kept (a costlier one only where it wins beyond the
        validation split's noise: `_clearly_better`) and the decision says what was measured."""
        from tltoolkit.training.phases import recipe_for

        epoch_seconds = 3 * self._forward_seconds() * len(self.train_table)  # forward and backward
        budget = left = budget_epochs(self.config.policy_budget, phase1_cost, epoch_seconds)
        best = {"until": HEAD, "score": phase1, "per_image": self.phase1_per_image, "weights": None,
                "seconds": phase1_cost, "recipe": "-"}
        tried, skipped = [best], []
        points = candidates(self.spec.stage_names)[1:]
        # The last candidate trains every layer at one rate: with enough data the weights only initialise.
        recipes = [self.recipe if until != NONE else recipe_for(self.config.replace(recipe="scratch"), True)
                   for until in points]
        for i, (until, recipe) in enumerate(zip(points, recipes)):
            epochs = trial_epochs(left, recipes[i:])
            if epochs is None:
                skipped.append(until)
                continue
            tried.append(self._phase2(head, resolve_freeze(until, self.spec, self.extractor.base), recipe, epochs))
            left -= tried[-1]["epochs"]
            if _clearly_better(tried[-1]["per_image"], best["per_image"], self.config.monitor):
                best["weights"] = None  # only the best so far keeps its weights
                best = tried[-1]
            else:
                tried[-1]["weights"] = None
        monitor = self.config.monitor
        rows = [{"freeze_until": r["until"], "recipe": r["recipe"], "val_loss": round(r["score"][0], 4),
                 "val_accuracy": round(r["score"][1], 4), "seconds": round(r["seconds"], 1),
                 "stopped": r.get("stopped", "phase 1"), "kept": "yes" if r is best else ""} for r in tried]
        rows += [{"freeze_until": u, "stopped": "not tried: its fair trial did not fit in the epochs left", "kept": ""}
                 for u in skipped]
        self.entry["trials"] = rows
        scores = ", ".join(f"{r['until']} {r['score'][1]:.3f} ({r['seconds']:.0f} s)" for r in tried)
        why = (f"auto, measured on validation within {budget} epochs of the full model ({self.config.policy_budget:g}x "
               f"phase 1's cost at ~{epoch_seconds:.1f} s an epoch, at least {MIN_POLICY_EPOCHS} where they take under "
               f"{MAX_FLOOR_SECONDS:.0f} s): "
               f"{scores}" + (f"; not tried: {', '.join(skipped)}" if skipped else "") +
               f" -> {best['until']} (a costlier candidate replaces the best so far only when it is no worse by "
               f"{'val_loss or ' if monitor == 'val_loss' else ''}val_accuracy and better by one of them beyond the "
               "standard error of the paired per-image difference)")
        self.decision = resolve_freeze(best["until"], self.spec, self.extractor.base, why)
        self.entry.update(decision=self.decision.freeze_until, trained_stages=list(self.decision.trained_stages))
        self._note(f"policy: {self.decision.reason}")
        return best

    def _phase2(self, head, decision: Decision, recipe=None, epochs: int | None = None, refit: bool = False) -> dict:
        """The full model from the phase-1 head with `decision`'s stages unfrozen, trained with `recipe`
        (default: the run's) for at most `epochs` (default: the recipe's; the policy gives its trials a
        share of its budget) on the training images, early-stopped on validation; or (`refit`) for exactly
        `epochs` on the training and validation images together. Returns {until, recipe, trained
        (decision, recipe), score, per_image, weights (the classifier's), seconds, epochs, best_epoch,
        stopped}."""
        import keras

        from tltoolkit.architectures.preprocessing import preprocessing_layer
        from tltoolkit.architectures.stages import trainable_count
        from tltoolkit.augment import augmentation
        from tltoolkit.features.cache import cached_dataset
        from tltoolkit.heads import copy_head_weights
        from tltoolkit.training import phases

        config, strategy, until = self.config, self.strategy, decision.freeze_until
        recipe = recipe or self.recipe
        epochs = epochs or recipe.epochs
        table = self.usable if refit else self.train_table
        validate = self.has_val and not refit
        tic = time.perf_counter()
        # The scratch recipe starts a fresh head (no standardisation, no L2), as a plain training loop
        # does: features trained in batch-statistics mode move far from those the phase-1 head was fit on.
        scratch = recipe.name == "scratch"
        options = {**self.head_options, "dropout": 0.0, "l2": 0.0} if scratch else self.head_options
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            with strategy.scope():
                base = _fresh_base(self.extractor.base)
                aug = augmentation(config.augment, image_size=self.size, seed=config.seed)
                training, inference, classifier = phases.full_model(
                    base, aug, preprocessing_layer(self.spec.preprocessing, channels=self.spec.channels), self.size,
                    self.num_classes, options, recipe.bn)
                if not scratch:
                    copy_head_weights(head, classifier)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        with strategy.scope():
            for i, layer in enumerate(base.layers):
                layer.trainable = i >= decision.first_trained
            phases.apply_bn_policy(base, recipe.bn)
            ranges = _ranges(base, self.spec)
            multipliers = (phases.stage_multipliers(base, ranges, decision.trained_stages, recipe.stage_lr_decay)
                           if recipe.stage_lr_decay else None)
            steps = max(1, -(-len(table) // int(config.batch_size)))
            # The cosine decays over the epochs this fit may run, so a trial cut to its share still anneals.
            schedule = phases.warmup_cosine(recipe.learning_rate, steps * epochs, steps * recipe.warmup_epochs)
            blockers = phases.compile_model(training, schedule, config.label_smoothing, config.jit, multipliers)
        if blockers and not any(note.startswith("--jit") for note in self.notes):
            self._note(f"--jit: phase 2 trains without XLA: {', '.join(blockers)} cannot be compiled by it "
                       f"(--augment none or flip compiles)")
        trial = "refit" if refit else until if self.decision.freeze_until == AUTO else ""
        backup = (self.out / "checkpoints" / f"run{self.number}-phase2{'-' + trial if trial else ''}" if self.chief
                  else Path(tempfile.mkdtemp(prefix="tltoolkit-worker-")) / "backup")
        log_dir = self.out / "logs" / f"run{self.number}-phase2{'-' + trial if trial else ''}" if self.chief else None
        callbacks = phases.training_callbacks(validate, None if refit else recipe.patience, config.monitor,
                                              self._recorder(2, trial), log_dir, backup)
        what = f"{' + '.join(decision.trained_stages)} + head, {recipe.name} recipe"
        self.echo(f"phase 2 refit: {what}, {epochs} epochs on the {len(table)} training and validation images" if refit
                  else f"phase 2: {' + '.join(decision.trained_stages)} + head, {recipe.describe()}")
        cut = self._cut_cache(base, decision) if self._can_cut(decision) else None
        if cut is None:
            model = training
            train = self._prepared(self._images(table, shuffle=True))
            val = self._prepared(self._images(self.val_table, shuffle=False)) if validate else None
        else:
            cut_cache, cut_layer, cut_stats = cut
            with strategy.scope():
                model, tail_head = _tail_on_cut(base, cut_layer, classifier, self.num_classes, options)
                phases.compile_model(model, schedule, config.label_smoothing, config.jit, multipliers)
            train = self._prepared(cached_dataset(cut_cache, table, config.batch_size, shuffle=True,
                                                  seed=config.seed))
            val = (self._prepared(cached_dataset(cut_cache, self.val_table, config.batch_size, shuffle=False))
                   if validate else None)
            if not refit:  # the refit reuses the validated fit's cache: one note for both
                self._note(f"phase 2 ({until}) trains from the cached output of {cut_layer} (no augmentation: the "
                           f"frozen stages give the same output every epoch); computed {cut_stats.computed} of "
                           f"{cut_stats.images} images")
        history = phases.fit(model, strategy, train, validation_data=val, epochs=epochs, callbacks=callbacks,
                             class_weight=self._class_weights(), verbose=1 if self.progress else 0)
        if cut is not None:
            copy_head_weights(tail_head, classifier)  # the stages are shared; the head is a copy
        seconds = time.perf_counter() - tic
        per_image = phases.per_image_scores(inference, self._val_images()) if validate else None
        score = phases.mean_scores(per_image) if per_image is not None else None
        if refit:
            stopped = (f"trained {epochs} epochs, the validated fit's best, on the {len(table)} training and "
                       f"validation images together (the scores above are the validated fit's)")
            summary = f"phase 2 refit: {what}, {seconds:.1f} s; {stopped}"
        else:
            stopped = phases.stop_reason(history, callbacks, epochs, config.monitor, budgeted=epochs < recipe.epochs)
            summary = f"{_phase_line(2, what, score, seconds, len(history.epoch))}; {stopped}"
        best_epoch = epochs if refit else phases.best_epoch(history, callbacks)
        self.entry["phases"].append({"phase": 2, "trial": trial or until, "seconds": round(seconds, 2),
                                     **_scores(score), "first_epoch": history.epoch[0] if history.epoch else None,
                                     "best_epoch": best_epoch, "stopped": stopped,
                                     "trainable_params": trainable_count(model), "summary": summary})
        self.echo(summary)
        return {"until": until, "recipe": recipe.name, "trained": (decision, recipe), "score": score,
                "per_image": per_image, "seconds": seconds, "stopped": stopped,
                "epochs": (history.epoch[-1] + 1) if history.epoch else 0, "best_epoch": best_epoch,
                "weights": [w.copy() for w in classifier.get_weights()]}

    def _can_cut(self, decision: Decision) -> bool:
        """Phase 2 can start from a cache of the last frozen layer's output when nothing random comes
        before it (no augmentation) and something is frozen."""
        return (bool(self.config.cut_cache) and self.config.augment == "none" and not self.config.mixed_precision
                and decision.first_trained is not None and decision.first_trained > _first_weighted(self.extractor.base))

    def _cut_cache(self, base, decision: Decision):
        """(cache, cut layer, stats) of the output of the layer before the first trained one: float16, or
        a complete float32 entry of the same features where one exists (`extract --layer STAGE`'s)."""
        import dataclasses

        from tltoolkit.architectures.stages import cut_layer
        from tltoolkit.features.cache import FeatureCache
        from tltoolkit.features.extractor import feature_extractor
        from tltoolkit.features.local import extract_features

        frozen = base.layers[decision.first_trained - 1].name
        extractor = feature_extractor(self.spec, weights=self.weights, image_size=self.size, layer=frozen,
                                      resize=self.config.resize, seed=self.config.seed, dtype="float16", **self.runtime)
        full = dataclasses.replace(extractor.spec, dtype="float32")
        if not FeatureCache(full, self.config.cache_dir).missing(self.usable["sha256"]):
            extractor.spec = full  # extract_features then computes nothing
        cache, stats = extract_features(self.usable, extractor, self.config.cache_dir, self.config.batch_size,
                                        progress=self.progress)
        return cache, cut_layer(base, self.spec, frozen), stats

    def _recorder(self, phase: int, trial: str = ""):
        def record(epoch, logs):
            if self.chief:
                self.metrics.record(self.number, phase, epoch, logs, trial)
        return record

    def _prepared(self, dataset):
        from tltoolkit.training import distribute, phases

        return distribute.shard_by_data(phases.one_hot(dataset, self.num_classes))

    def _images(self, table, shuffle: bool):
        from tltoolkit.pipeline import image_dataset

        return image_dataset(table, self.size, int(self.config.batch_size), resize=self.config.resize,
                             shuffle=shuffle, seed=int(self.config.seed), deterministic=not shuffle)

    def _val_images(self):
        from tltoolkit.training import phases

        return phases.one_hot(self._images(self.val_table, shuffle=False), self.num_classes)

    def _note(self, line: str) -> None:
        self.notes.append(line)
        self.echo(line)

    # -- the result ---------------------------------------------------------------------------------------

    def _finish(self, head, best: dict) -> None:
        """The kept model (the best phase) into the run directory."""
        import keras

        from tltoolkit.architectures.preprocessing import preprocessing_layer
        from tltoolkit.heads import copy_head_weights
        from tltoolkit.rejection import settings, with_rejection
        from tltoolkit.training import phases

        with self.strategy.scope():
            base = _fresh_base(self.extractor.base)
            _, inference, classifier = phases.full_model(
                base, keras.layers.Identity(), preprocessing_layer(self.spec.preprocessing, channels=self.spec.channels),
                self.size, self.num_classes, self.head_options, "frozen")
        base_trained = best["weights"] is not None
        if base_trained:
            classifier.set_weights(best["weights"])
        else:
            copy_head_weights(head, classifier)
        # One pass over the validation images: the confusion matrix, the temperature and the rejection
        # threshold, taken before a refit sees them.
        truth, logits = self._val_logits(inference) if self.has_val else (np.zeros(0), np.zeros((0, 0)))
        predicted = logits.argmax(-1) if len(logits) else np.zeros(0)
        fit = self._calibrate(logits, truth) if self.has_val else None
        if base_trained and self._refit_phase2(head, best):
            classifier.set_weights(best["weights"])
        elif not base_trained and self._refit_head(head):
            copy_head_weights(head, classifier)
        if fit is not None:
            inference = with_rejection(inference, **settings(fit), scored=False)
        self.entry.update(status="finished", base_trained=bool(base_trained or (self.previous and
                                                                                 self.previous.get("base_trained"))),
                          kept=best["until"], classes=self.class_names, new_classes=self.new_classes,
                          extracted=self.extracted)
        if self.chief:
            self._write_artefacts(inference, base, base_trained, truth, predicted)

    def _val_logits(self, inference) -> tuple[np.ndarray, np.ndarray]:
        """(true ids, logits) of the kept model on the validation images."""
        from tltoolkit.calibration import logits_model

        to_logits = logits_model(inference)
        truth, logits = [], []
        for x, y in self._val_images():
            logits.append(np.asarray(to_logits(x, training=False)))
            truth.append(np.asarray(y).argmax(-1))
        return np.concatenate(truth), np.concatenate(logits)

    def _calibrate(self, logits, truth) -> dict | None:
        """Temperature scaling (Guo et al. 2017) and the rejection threshold for --coverage on the kept
        model's validation logits (`rejection.fit_rejection`); both go into the saved model, so every
        export carries them. None (and a note) when they cannot be fitted."""
        from tltoolkit.calibration import LOG_T_RANGE
        from tltoolkit.rejection import fit_rejection

        try:
            fit = fit_rejection(logits, truth, self.config.coverage, self.config.rejection_score)
        except TltoolkitError as error:
            self._note(f"probabilities not calibrated: {error}")
            return None
        temperature = fit["temperature"]
        self.entry["calibration"] = {"temperature": round(temperature, 4), "val_ece_before": round(fit["ece_before"], 4),
                                     "val_ece_after": round(fit["ece_after"], 4), "images": fit["images"],
                                     "score": fit["score"], "threshold": fit["threshold"], "coverage": fit["coverage"]}
        bound = any(np.isclose(np.log(temperature), end, atol=1e-3) for end in LOG_T_RANGE)
        self._note(f"probabilities calibrated: temperature {temperature:.3g} fitted on the {fit['images']} validation "
                   f"images (their expected calibration error {fit['ece_before']:.3f} -> {fit['ece_after']:.3f}); "
                   f"stored in the model"
                   + ("; it is the search's bound: every validation image is classified confidently right, so "
                      "the validation loss only bounds the temperature" if bound else ""))
        self._note(f"unknown inputs: predict answers unknown below {fit['score']} score {fit['threshold']:.4g}, "
                   f"which keeps {fit['coverage']:.0%} of the validation images (stored in the model)")
        return fit

    def _refit_phase2(self, head, best: dict) -> bool:
        """When a phase-2 model is kept: the same fit again on the training and validation images together,
        for the epochs the validated fit's best took, replacing `best`'s weights (a fifth more images is
        worth most where there are fewest). Its calibration stays the validated model's."""
        if not (self.config.refit and self.has_val):
            return False
        decision, recipe = best["trained"]
        best["weights"] = self._phase2(head, decision, recipe, epochs=best["best_epoch"], refit=True)["weights"]
        self.entry["phases"][-1]["kept"] = True
        return True

    def _refit_head(self, head) -> bool:
        """When the head alone is kept: the sweep again on the training and validation images together,
        cross-validated on them (k-fold for small folders: one small validation split chooses by noise),
        and the chosen setting trained on all of them, as a cross-validated estimator refits on all its
        data. The scores reported stay those of phase 1's choice, on validation."""
        from tltoolkit.training.head import fit_head, sweep_settings

        fit, train_x, train_y, val_x, val_y, weights = self._head_fit
        if fit is None or val_x is None:
            return False
        config = self.config
        settings = sweep_settings(config.l2, config.dropout, config.learning_rate, config.hidden)
        try:
            refit = fit_head(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]), None, None,
                             self.num_classes, settings, config.hidden, epochs=config.epochs,
                             patience=config.head_patience, label_smoothing=config.label_smoothing,
                             class_weight=weights, monitor=config.monitor, seed=config.seed)
        except TltoolkitError as error:
            self._note(f"phase 1's head was not refit on the validation images too: {error}")
            return False
        _load_fit(head, refit)
        self._note(f"the head is kept: chosen again by {refit.scored_on.split(' (')[0]} on the {len(train_y)} "
                   f"training and {len(val_y)} validation images together ({refit.chosen.setting}) and trained on "
                   f"all of them to convergence (the scores above are phase 1's, on validation)")
        return True

    def _write_artefacts(self, inference, base, base_trained, truth, predicted) -> None:
        import shutil

        from tltoolkit.data import save_class_index
        from tltoolkit.training.phases import tensorboard_installed

        out = self.out
        new = rundir.ArtefactSet(out)
        rundir.write_snapshot(self.usable, new / "snapshot.parquet")
        save_class_index(self.result.class_index, new / "class_index.json")
        rundir.write_json(new / "config.json", self.config.to_json())
        if base_trained:
            rundir.save_weights(base, new / "base.weights.h5")
        rundir.save_model(inference, new / "model.keras")
        new.commit()
        rundir.plot_curves(self.metrics.frame, out / "plots" / "curves.png")
        rundir.plot_confusion(truth, predicted, self.class_names, out / "plots" / "confusion.png")
        self.state.save()
        rundir.write_report(out / "report.md", self.state.state, self.result.summary(), self.metrics.frame,
                            tensorboard_installed())
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


def _ranges(base, spec):
    from tltoolkit.architectures.stages import spec_stage_ranges

    return [r for r in spec_stage_ranges(base, spec) if r.name in spec.stage_names]


def _first_weighted(model) -> int:
    return next(i for i, layer in enumerate(model.layers) if layer.weights)


def _score(head, x, y) -> tuple[float, float]:
    """(cross-entropy, accuracy) of the Keras head on cached features."""
    from tltoolkit.training.phases import mean_scores

    return mean_scores(_per_image(head, x, y))


def _per_image(head, x, y) -> tuple[np.ndarray, np.ndarray]:
    """`phases.per_image_scores` of the Keras head on cached features, in batches of 4096."""
    from tltoolkit.training.phases import per_image_scores

    one_hot = np.eye(head.output.shape[-1], dtype="float32")[np.asarray(y)]
    return per_image_scores(head, ((x[i:i + 4096], one_hot[i:i + 4096]) for i in range(0, len(x), 4096)))


def _load_fit(head, fit) -> None:
    """A `HeadFit`'s standardisation and Dense weights into the Keras head."""
    from tltoolkit.heads import dense_layers, set_standardisation

    set_standardisation(head, fit.mean, fit.variance)
    for layer, (kernel, bias) in zip(dense_layers(head), fit.weights):
        layer.set_weights([kernel, bias])


def _fresh_base(source):
    """The base cloned in the current strategy's scope (variables made outside it cannot be mirrored),
    with the weights the features were extracted with; a clone keeps the layer names."""
    import keras

    base = keras.models.clone_model(source)
    base.set_weights(source.get_weights())
    return base


def _tail_on_cut(base, cut_layer, classifier, num_classes, head_options):
    """cached cut-layer output -> the base's layers after it (shared) -> a copy of the head."""
    import keras

    from tltoolkit.architectures.stages import tail_model
    from tltoolkit.heads import copy_head_weights, head_model

    tail = tail_model(base, cut_layer)
    head = head_model(base.output.shape[1:], num_classes, **head_options)
    copy_head_weights(classifier, head)
    inputs = keras.Input(tail.input.shape[1:], name="cut_features")
    features = tail(inputs)
    features = features[0] if isinstance(features, (list, tuple)) else features  # tail_model keeps a list of outputs
    return keras.Model(inputs, head(features), name="tail_classifier"), head


def _scores(score) -> dict:
    return {} if score is None else {"val_loss": round(score[0], 4), "val_accuracy": round(score[1], 4)}


def _phase_line(phase: int, what: str, score, seconds: float, epochs: int | None = None) -> str:
    result = f"val_loss {score[0]:.4f}, val_accuracy {score[1]:.3f}" if score else "no validation images"
    ran = f", {epochs} epochs" if epochs is not None else ""
    return f"phase {phase} ({what}): {result}{ran}, {seconds:.1f} s"


def _clearly_better(new, old, monitor: str) -> bool:
    """Whether per-image validation scores `new` beat `old` (both (losses, hits) on the same images) beyond
    noise: no lower accuracy (and by val_loss, no higher loss), and a mean paired gain larger than its
    standard error in accuracy or (by val_loss) in loss. On a small validation split a costlier freeze
    point that wins by noise, or by confidence on the images it gets right, loses on new images
    (benchmarks/transfer_table.py at 5 images a class); one that gets more images right beyond noise, at
    no cost in loss, wins on them (benchmarks/vs_plain_keras.py, animals at 10 a class)."""
    gains = [new[1] - old[1]] + ([old[0] - new[0]] if monitor == "val_loss" else [])
    if len(gains[0]) < 2 or any(gain.mean() < 0 for gain in gains):
        return False
    return any(float(gain.mean()) > float(gain.std(ddof=1)) / np.sqrt(len(gain)) for gain in gains)


def scan_cache(config) -> dict:
    """The scan's cache options: under --cache-dir with the features (a fresh one re-hashes every image), or none with --rehash."""
    return {"cache_dir": config.cache_dir, "cache": not config.rehash}
