"""`finetune(config)`: a new head on a pretrained base, in two phases, into a run directory that grows
with the dataset.

    finetune({"base": "vgg16", "data": "./cats", "out": "runs/cats", "freeze_until": "block5"})

1. Scan the data (stable content-hash splits; the run's class index keeps old ids, new classes append).
2. Decide what trains: `freeze_until` = a stage, `head`, `none`, or `auto` (the growth policy, from
   the training images per class; see `policy.py`).
3. Phase 1: the head on cached features of the frozen base (only images the cache lacks are
   extracted), warm-started from the previous run's head (grown for new classes).
4. Phase 2, when stages train: the full model from the phase-1 head, per-stage learning rates,
   warm-up, BN policy, early stopping, BackupAndRestore (a killed run resumes at its epoch).
   Without augmentation the frozen stages compute the same thing every epoch: phase 2 then trains
   the later stages on a cache of the last frozen stage's output (`cut_cache`, default on).
   If phase 2 ends worse on validation than phase 1 did, phase 1's model is kept (and the report says so).
5. The run directory (`run.py`): model, metrics across runs, plots, report.
"""

from __future__ import annotations

import copy
import difflib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from tltoolkit.errors import TltoolkitError
from tltoolkit.training import run as rundir
from tltoolkit.training.policy import DEFAULT_THRESHOLDS, HEAD, NONE, Decision, check_thresholds, choose_stages, stages_from

AUTO = "auto"
DEFAULTS = {
    "base": None, "data": None, "out": None,
    "weights": "imagenet",  # imagenet (a saved .keras base: its own) | none | a weights file
    "preprocessing": None,  # the base's (registry, keras:NAME); required for a saved .keras base
    "freeze_until": AUTO, "image_size": None, "resize": "center_crop",
    "batch_size": 32, "epochs": 30, "min_head_steps": 300, "fine_tune_epochs": 10,
    "learning_rate": 1e-3, "fine_tune_learning_rate": 1e-4, "stage_lr_decay": 0.3, "warmup_epochs": 1,
    "augment": "standard", "val_split": 0.2, "cache_dir": None, "seed": 0,
    "hidden": [], "dropout": 0.2, "pooling": "avg", "l2": 0.0, "label_smoothing": 0.0, "class_weight": "none",
    "bn": "frozen", "patience": 3, "monitor": "val_loss",
    "strategy": "auto", "mixed_precision": False, "jit": False, "cut_cache": True,
    "policy_thresholds": list(DEFAULT_THRESHOLDS),
}
REQUIRED = ("base", "data")
IDENTITY = ("base", "weights", "preprocessing", "image_size", "resize", "hidden", "pooling")  # what a re-run may not change


def load_config_file(path) -> dict:
    """A JSON (or, with pyyaml installed, YAML) file with the keys of `DEFAULTS` (flag names with _)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise TltoolkitError(f"cannot read --config {path}: {error.strerror}") from None
    try:
        data = yaml_or_json(text, path.suffix.lower())
    except ValueError as error:
        raise TltoolkitError(f"--config {path} is not valid {error}") from None
    if not isinstance(data, dict):
        raise TltoolkitError(f"--config {path} must hold a mapping of settings like {{\"epochs\": 5}}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def yaml_or_json(text: str, suffix: str):
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError("YAML: pyyaml is not installed (pip install pyyaml), or use JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"YAML ({' '.join(str(error).split())[:120]})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"JSON ({error})") from None


def resolve_config(*layers: dict) -> dict:
    """DEFAULTS overlaid with each mapping in turn (config file, then flags); None means "not given"."""
    config = copy.deepcopy(DEFAULTS)
    for layer in layers:
        for key, value in layer.items():
            if key not in DEFAULTS:
                close = difflib.get_close_matches(key, DEFAULTS, n=3)
                hint = f"close matches: {', '.join(close)}" if close else f"known keys: {', '.join(DEFAULTS)}"
                raise TltoolkitError(f"unknown setting {key!r}; {hint}")
            if value is not None:
                config[key] = value
    missing = [f"--{k}" for k in REQUIRED if not config[k]]
    if missing:
        raise TltoolkitError(f"missing {', '.join(missing)} (as a flag or a --config key)")
    for key in ("batch_size",):
        if int(config[key]) < 1:
            raise TltoolkitError(f"--{key.replace('_', '-')} must be at least 1, got {config[key]}")
    for key in ("epochs", "min_head_steps", "fine_tune_epochs", "patience", "warmup_epochs"):
        if int(config[key]) < 0:
            raise TltoolkitError(f"--{key.replace('_', '-')} must be 0 or more, got {config[key]}")
    if config["class_weight"] not in ("none", AUTO):
        raise TltoolkitError(f"--class-weight must be none or auto, got {config['class_weight']!r}")
    if config["monitor"] not in ("val_loss", "val_accuracy"):
        raise TltoolkitError(f"--monitor must be val_loss or val_accuracy, got {config['monitor']!r}")
    config["policy_thresholds"] = list(check_thresholds(config["policy_thresholds"]))
    config["hidden"] = [int(h) for h in config["hidden"]]
    config["data"] = str(config["data"])
    if not config["out"]:  # runs/cats-vgg16: one run directory per data folder and base
        name, base = (_file_name(text) for text in (Path(config["data"].rstrip("/")).name, config["base"]))
        config["out"] = str(Path("runs") / f"{name or 'data'}-{base}")
    config["out"] = str(config["out"])
    return config


def _file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


class _Run:
    """One invocation: the settings, the run directory's state and what was decided."""

    def __init__(self, config: dict, force: bool, plan: bool, echo):
        from tltoolkit.architectures.bases import cache_name, resolve_base

        self.config = config
        self.echo = echo
        # An unknown base: one line with close matches; keras:NAME and saved models derive their stages here.
        self.spec = resolve_base(config["base"], config["image_size"], config["preprocessing"], config["weights"])
        self.base_id = cache_name(self.spec)  # what the base is, beyond its name (a saved file's hash)
        size = config["image_size"] or self.spec.default_size
        self.size = tuple(int(v) for v in (size if isinstance(size, (list, tuple)) else (size, size)))
        if len(self.size) != 2 or min(self.size) < self.spec.min_size:
            raise TltoolkitError(f"--image-size {size} does not fit {self.spec.id}: give one size or [height, width], "
                                 f"at least {self.spec.min_size}")
        config["image_size"] = list(self.size)  # resolved, as evaluate/predict read it
        if config["freeze_until"] not in (AUTO, HEAD, NONE, *self.spec.stage_names):
            # A layer name: checked on the bare architecture now, not after scanning a large folder.
            from tltoolkit.architectures.bases import build_base

            _freeze_layer_index(config["freeze_until"], self.spec, build_base(self.spec, None, self.size))
        self.out = Path(config["out"]).expanduser()
        if self.out.exists() and not self.out.is_dir():
            raise TltoolkitError(f"--out {self.out} is a file; pass a folder for the run")
        self.state = rundir.read_json(self.out / "state.json", {"runs": []})
        self.force, self.plan = force, plan

    # -- the run directory's history ------------------------------------------------------------

    @property
    def finished_runs(self) -> list[dict]:
        return [r for r in self.state["runs"] if r["status"] == "finished"]

    def check_compatible(self) -> None:
        """A re-run may grow the data, not change what the model is; --force starts the folder over."""
        previous = self.finished_runs[-1] if self.finished_runs else (self.state["runs"] or [None])[-1]
        if previous is None:
            if self.out.exists() and any(self.out.iterdir()) and not self.force:
                raise TltoolkitError(f"--out {self.out} is not empty and holds no finetune run; choose another "
                                     f"folder or pass --force to replace its contents")
            return
        keys = [k for k in IDENTITY if previous["config"].get(k) != self.config.get(k)]
        changed = [f"{k} {previous['config'].get(k)!r} -> {self.config.get(k)!r}" for k in keys]
        if "base" not in keys and previous.get("base_id", self.base_id) != self.base_id:
            changed.append(f"base content {previous['base_id']} -> {self.base_id}")  # a saved .keras rewritten
        if changed:
            self._refuse_or_reset(", ".join(changed))

    def check_classes(self, classes) -> None:
        index = self.old_class_index()
        lost = sorted(set(index) - set(classes))
        if lost:
            self._refuse_or_reset(f"classes {', '.join(lost)} of the earlier run are missing from --data")

    def _refuse_or_reset(self, what: str) -> None:
        if not self.force:
            raise TltoolkitError(f"--out {self.out} holds a run that differs ({what}); use another --out, "
                                 f"or --force to start it over")
        if self.plan:
            self.echo(f"--force: would remove the earlier run in {self.out} ({what})")
            return
        shutil.rmtree(self.out)
        self.state = {"runs": []}
        self.echo(f"--force: removed the earlier run in {self.out} ({what})")

    def old_class_index(self) -> dict:
        from tltoolkit.data import load_class_index

        path = self.out / "class_index.json"
        return load_class_index(path) if path.exists() and self.finished_runs else {}


def finetune(config: dict, plan: bool = False, force: bool = False, progress: bool = True, echo=None) -> dict:
    """Runs (or with `plan=True` only describes) a fine-tuning run; returns its entry of state.json.

    `config`: the keys of `DEFAULTS` (missing keys take their defaults). Raises `TltoolkitError` (one
    line) for bad input; nothing in the run directory is half-written.
    """
    echo = echo or (lambda line: print(line, flush=True))
    config = resolve_config(config)
    session = _Run(config, force, plan, echo)
    from tltoolkit.training import distribute

    # Before any TensorFlow op: multi-worker collectives must be configured at start-up.
    strategy = None if plan else distribute.make_strategy(config["strategy"])
    if distribute.is_chief():  # other workers follow the chief's run directory
        session.check_compatible()

    from tltoolkit.data import scan

    # The previous runs' splits win: images seen before never change split, small classes included.
    snapshot = session.out / "snapshot.parquet"
    result = scan(config["data"], config["val_split"], class_index=session.old_class_index() or None,
                  splits_from=snapshot if snapshot.exists() else None)
    if distribute.is_chief():
        session.check_classes(result.source_classes)
    if not session.state["runs"]:  # --force may have cleared the folder: scan again without the old index
        result = scan(config["data"], config["val_split"])
    return _train(session, result, strategy, plan, progress)


def _decide(config, spec, train_counts, base) -> Decision:
    """What trains. `--freeze-until` takes a stage, head, none, auto or a layer of `base` (the built
    base) after which the frozen part's output is one tensor: that layer and all after it train."""
    from tltoolkit.architectures.stages import spec_stage_ranges

    per_class = int(train_counts.min())
    until = config["freeze_until"]
    if until == AUTO:
        return choose_stages(per_class, spec.stage_names, config["policy_thresholds"])
    index = _freeze_layer_index(until, spec, base)
    if index is None:
        trained = stages_from(until, spec.stage_names)
        what = f"{' and '.join(trained)} and the head" if trained else "the head only"
    else:
        trained = tuple(r.name for r in spec_stage_ranges(base, spec) if r.name in spec.stage_names and r.stop > index)
        what = f"layer {until} on (in {' and '.join(trained)}) and the head"
    return Decision(until, trained, f"--freeze-until {until}: training {what} ({per_class:,} images/class)")


def _freeze_layer_index(until: str, spec, base) -> int | None:
    """None for a stage or keyword; for a layer name of `base`, its index, once the frozen part before
    it ends in one tensor; otherwise a one-line error listing what is valid."""
    from tltoolkit.architectures.stages import check_cut_layer

    if until in (AUTO, HEAD, NONE, *spec.stage_names):
        return None
    if _layer_index(base, until) is None:
        valid = ", ".join((AUTO, HEAD, NONE, *spec.stage_names))
        raise TltoolkitError(f"unknown stage {until!r} for {spec.id}; valid: {valid}, or a layer name "
                             f"(`tltoolkit layers {spec.id} --all-layers`)")
    return check_cut_layer(base, until, starts=True)  # the frozen part must end in one tensor


def _layer_index(model, name: str) -> int | None:
    return next((i for i, layer in enumerate(model.layers) if layer.name == name and i > 0), None)


def _train(session: _Run, result, strategy, plan: bool, progress: bool) -> dict:
    import keras

    from tltoolkit.architectures import load_model
    from tltoolkit.cache import FeatureCache, cached_dataset
    from tltoolkit.extract import extract_features, feature_extractor
    from tltoolkit.heads import class_weights, copy_head_weights, head_model, transfer_head
    from tltoolkit.training import distribute, phases

    config, spec, out, echo = session.config, session.spec, session.out, session.echo
    chief = distribute.is_chief()
    class_names = result.class_names
    num_classes = len(class_names)
    usable = result.usable()
    train_table, val_table = result.usable("train"), result.usable("validation")
    train_counts = train_table.groupby("label").size().reindex(class_names, fill_value=0)
    runs = session.state["runs"]
    resuming = bool(runs) and runs[-1]["status"] == "running"
    number = runs[-1]["run"] if resuming else len(runs) + 1
    previous = session.finished_runs[-1] if session.finished_runs else None
    old_classes = list(session.old_class_index())
    new_classes = [c for c in class_names if c not in old_classes] if previous else []

    # The base as the last finished run left it (fine-tuned or not): its features are the ones to cache.
    base_file = out / "base.weights.h5"
    weights = str(base_file) if previous and previous.get("base_trained") and base_file.exists() else (
        None if config["weights"] == "none" else config["weights"])
    head_options = dict(hidden=config["hidden"], dropout=config["dropout"], pooling=config["pooling"],
                        l2=config["l2"])
    pooling = config["pooling"] if config["pooling"] in ("avg", "max") else None
    extractor = feature_extractor(spec, weights=weights, image_size=session.size, layer=spec.stage_names[-1],
                                  pooling=pooling, resize=config["resize"], seed=config["seed"])
    decision = _decide(config, spec, train_counts, extractor.base)
    cache = FeatureCache(extractor.spec, config["cache_dir"])
    misses = len(cache.missing(usable["sha256"]))

    notes = [f"data: {len(train_table)} training and {len(val_table)} validation images in {num_classes} classes "
             f"(smallest class: {int(train_counts.min())} training images)",
             f"policy: {decision.reason}"]
    if new_classes:
        notes.append(f"new classes {', '.join(new_classes)}: the head grows from {len(old_classes)} to "
                     f"{num_classes} outputs, the old classes keep their weights")
    if previous:
        notes.append(f"warm start from run {previous['run']}'s model"
                     + (" (its fine-tuned base re-extracts the features)" if weights == str(base_file) else ""))
    if resuming:
        notes.append(f"resuming run {number}, which was interrupted")

    if plan:
        return _plan(session, extractor, decision, notes, misses, len(usable), len(train_table))

    for line in notes:
        echo(line)
    entry = {"run": number, "status": "running", "config": config, "base_id": session.base_id,
             "replicas": strategy.num_replicas_in_sync,
             "chief": chief, "decision": decision.freeze_until,
             "trained_stages": list(decision.trained_stages), "notes": notes, "phases": []}
    if chief:
        (out / "plots").mkdir(parents=True, exist_ok=True)
        runs[:] = [*(runs[:-1] if resuming else runs), entry]
        rundir.write_json(out / "state.json", session.state)
    metrics = rundir.Metrics(out / "metrics.csv")

    def recorder(phase):
        def record(epoch, logs):
            if chief:
                metrics.record(number, phase, epoch, logs)
        return record

    started = time.perf_counter()
    cache, stats = extract_features(usable, extractor, config["cache_dir"], config["batch_size"], progress=progress)
    notes.append(f"features: computed {stats.computed} of {stats.images} images ({stats.images - stats.computed} "
                 f"from the cache) in {time.perf_counter() - started:.1f} s")
    echo(notes[-1])

    has_val = len(val_table) > 0
    weights_by_class = None
    if config["class_weight"] == AUTO:
        weights_by_class = class_weights([int(train_counts[name]) for name in class_names])
    verbose = 1 if progress else 0
    log_dir = out / "logs" if chief else None
    seed = int(config["seed"])
    keras.utils.set_random_seed(seed)

    def prepared(dataset):
        return distribute.shard_by_data(phases.one_hot(dataset, num_classes))

    previous_model = None
    if previous and (out / "model.keras").exists():
        previous_model = phases.find_classifier(load_model(out / "model.keras"))

    # -- phase 1: the head on cached features ---------------------------------------------------------
    with strategy.scope():
        head = head_model(extractor.feature_shape, num_classes, **head_options)
        if previous_model is not None:
            transfer_head(previous_model, head)
        phases.compile_model(head, config["learning_rate"], config["label_smoothing"], config["jit"])
    metrics.drop(number, 1)
    phase1_seconds = 0.0
    if int(config["epochs"]) > 0:
        steps = head_steps_per_epoch(len(train_table), config)
        echo(f"phase 1: the head on cached features, {_head_epochs(config, steps)}")
        train = prepared(cached_dataset(cache, train_table, config["batch_size"], shuffle=True, seed=seed,
                                        repeat=steps is not None))
        val = prepared(cached_dataset(cache, val_table, config["batch_size"], shuffle=False)) if has_val else None
        callbacks = phases.training_callbacks(has_val, int(config["patience"]), config["monitor"], recorder(1),
                                              log_dir and log_dir / f"run{number}-phase1")
        tic = time.perf_counter()
        phases.fit(head, strategy, train, validation_data=val, epochs=int(config["epochs"]), callbacks=callbacks,
                   class_weight=weights_by_class, verbose=verbose, steps_per_epoch=steps)
        phase1_seconds = time.perf_counter() - tic

    # -- the full model, starting from the phase-1 head -----------------------------------------------
    if config["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            base = _fresh_base(extractor.base)
            from tltoolkit.architectures.preprocessing import preprocessing_layer
            from tltoolkit.augment import augmentation

            aug = augmentation(config["augment"], image_size=session.size, seed=seed)
            training, inference, classifier = phases.full_model(
                base, aug, preprocessing_layer(spec.preprocessing, channels=spec.channels), session.size, num_classes, head_options,
                config["bn"])
            copy_head_weights(head, classifier)
    finally:
        keras.mixed_precision.set_global_policy("float32")

    def val_images():
        return phases.one_hot(_images(val_table, session.size, config, shuffle=False), num_classes)

    phase1 = phases.evaluate(inference, val_images()) if has_val else None
    entry["phases"].append({"phase": 1, "seconds": round(phase1_seconds, 2), **_scores(phase1),
                            "summary": _phase_line(1, "head on cached features", phase1, phase1_seconds)})
    echo(entry["phases"][-1]["summary"])

    # -- phase 2: fine-tune the unfrozen stages -------------------------------------------------------
    base_trained = False
    if decision.trained_stages and int(config["fine_tune_epochs"]) > 0:
        from tltoolkit.architectures.stages import freeze_until, spec_stage_ranges, trainable_count

        ranges = spec_stage_ranges(base, spec)
        with strategy.scope():
            freeze_until(base, ranges, decision.freeze_until)
            phases.apply_bn_policy(base, config["bn"])
            multipliers = phases.stage_multipliers(base, ranges, decision.trained_stages, config["stage_lr_decay"])
            steps = max(1, -(-len(train_table) // int(config["batch_size"])))
            schedule = phases.warmup_cosine(config["fine_tune_learning_rate"], steps * int(config["fine_tune_epochs"]),
                                            steps * int(config["warmup_epochs"]))
            phases.compile_model(training, schedule, config["label_smoothing"], config["jit"], multipliers)
        before = [w.copy() for w in classifier.get_weights()]
        backup = out / "checkpoints" / f"run{number}-phase2" if chief else Path(_scratch()) / "backup"
        callbacks = phases.training_callbacks(has_val, int(config["patience"]), config["monitor"], recorder(2),
                                              log_dir and log_dir / f"run{number}-phase2", backup)
        echo(f"phase 2: {' + '.join(decision.trained_stages)} + head, up to {config['fine_tune_epochs']} epochs")
        tic = time.perf_counter()
        cut = _cut_cache(session, base, decision, weights, usable, progress) if _can_cut(config, spec, decision) else None
        if cut is None:
            model = training
            train = prepared(_images(train_table, session.size, config, shuffle=True))
            val = prepared(_images(val_table, session.size, config, shuffle=False)) if has_val else None
        else:
            cut_cache, cut_layer, cut_stats = cut
            with strategy.scope():
                model, tail_head = _tail_on_cut(base, cut_layer, classifier, num_classes, head_options)
                phases.compile_model(model, schedule, config["label_smoothing"], config["jit"], multipliers)
            train = prepared(cached_dataset(cut_cache, train_table, config["batch_size"], shuffle=True, seed=seed))
            val = prepared(cached_dataset(cut_cache, val_table, config["batch_size"], shuffle=False)) if has_val else None
            notes.append(f"phase 2 trains from the cached output of {cut_layer} (no augmentation: the frozen "
                         f"stages give the same output every epoch); computed {cut_stats.computed} of "
                         f"{cut_stats.images} images")
            echo(notes[-1])
        history = phases.fit(model, strategy, train, validation_data=val, epochs=int(config["fine_tune_epochs"]),
                             callbacks=callbacks, class_weight=weights_by_class, verbose=verbose)
        if cut is not None:
            copy_head_weights(tail_head, classifier)  # the stages are shared; the head is a copy
        phase2_seconds = time.perf_counter() - tic
        phase2 = phases.evaluate(inference, val_images()) if has_val else None
        kept = _better(phase2, phase1, config["monitor"])
        if not kept:
            classifier.set_weights(before)
        base_trained = kept
        what = f"{' + '.join(decision.trained_stages)} + head, bn {config['bn']}"
        summary = _phase_line(2, what, phase2, phase2_seconds, len(history.epoch))
        if not kept:
            summary += "; worse than phase 1 on validation: phase 1's model is kept"
        entry["phases"].append({"phase": 2, "seconds": round(phase2_seconds, 2), "kept": kept, **_scores(phase2),
                                "first_epoch": history.epoch[0] if history.epoch else None,
                                "trainable_params": trainable_count(model), "summary": summary})
        echo(summary)

    truth, predicted = phases.predict_labels(inference, val_images()) if has_val else (np.zeros(0), np.zeros(0))
    entry.update(status="finished", base_trained=bool(base_trained or (previous and previous.get("base_trained"))),
                 classes=class_names, new_classes=new_classes, extracted=stats.computed)
    if chief:
        _write_artefacts(session, result, inference, base, base_trained, metrics, truth, predicted)
    return entry


def head_steps_per_epoch(train_images: int, config: dict) -> int | None:
    """Phase 1's steps per epoch when one pass over the data is too few for `min_head_steps` in all
    (None: an epoch is one pass). A small folder then still gives the head enough optimizer steps
    (50 images make 2 steps of 32 per pass), at the price of seconds: the features are cached."""
    passes = -(-train_images // int(config["batch_size"]))
    wanted = -(-int(config["min_head_steps"]) // max(1, int(config["epochs"])))
    return wanted if wanted > passes else None


def _head_epochs(config, steps: int | None) -> str:
    text = f"up to {config['epochs']} epochs"
    return text + (f" of {steps} steps (min_head_steps {config['min_head_steps']})" if steps else "")


def _fresh_base(source):
    """The base cloned in the current strategy's scope (variables made outside it cannot be mirrored),
    with the weights the features were extracted with; a clone keeps the layer names."""
    import keras

    base = keras.models.clone_model(source)
    base.set_weights(source.get_weights())
    return base


def _can_cut(config, spec, decision) -> bool:
    """Phase 2 can start from a cache of the last frozen stage's (or layer's) output when nothing random
    comes before it (no augmentation) and something is frozen."""
    return (bool(config["cut_cache"]) and config["augment"] == "none" and not config["mixed_precision"]
            and decision.freeze_until not in (HEAD, NONE, spec.stage_names[0]))


def _cut_cache(session, base, decision, weights, usable, progress):
    """(cache, cut layer, stats) of the output of the stage (or layer) before the first trained one."""
    from tltoolkit.extract import cut_layer, extract_features, feature_extractor

    config, spec, until = session.config, session.spec, decision.freeze_until
    if until in spec.stage_names:
        frozen = spec.stage_names[spec.stage_names.index(until) - 1]
    else:
        frozen = base.layers[_layer_index(base, until) - 1].name
    extractor = feature_extractor(spec, weights=weights, image_size=session.size, layer=frozen,
                                  resize=config["resize"], seed=config["seed"], dtype="float16")
    cache, stats = extract_features(usable, extractor, config["cache_dir"], config["batch_size"], progress=progress)
    return cache, cut_layer(base, spec, frozen), stats


def _tail_on_cut(base, cut_layer, classifier, num_classes, head_options):
    """cached cut-layer output -> the base's layers after it (shared) -> a copy of the head."""
    import keras

    from tltoolkit.extract import tail_model
    from tltoolkit.heads import copy_head_weights, head_model

    tail = tail_model(base, cut_layer)
    head = head_model(base.output.shape[1:], num_classes, **head_options)
    copy_head_weights(classifier, head)
    inputs = keras.Input(tail.input.shape[1:], name="cut_features")
    features = tail(inputs)
    features = features[0] if isinstance(features, (list, tuple)) else features  # tail_model keeps a list of outputs
    return keras.Model(inputs, head(features), name="tail_classifier"), head


def _images(table, size, config, shuffle: bool):
    from tltoolkit.pipeline import image_dataset

    return image_dataset(table, size, int(config["batch_size"]), resize=config["resize"], shuffle=shuffle,
                         seed=int(config["seed"]), deterministic=not shuffle)


def _scratch() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="tltoolkit-worker-")


def _scores(score) -> dict:
    return {} if score is None else {"val_loss": round(score[0], 4), "val_accuracy": round(score[1], 4)}


def _phase_line(phase: int, what: str, score, seconds: float, epochs: int | None = None) -> str:
    result = f"val_loss {score[0]:.4f}, val_accuracy {score[1]:.3f}" if score else "no validation images"
    ran = f", {epochs} epochs" if epochs is not None else ""
    return f"phase {phase} ({what}): {result}{ran}, {seconds:.1f} s"


def _better(new, old, monitor: str) -> bool:
    """Whether phase 2's validation score holds or beats phase 1's (always, without validation)."""
    if new is None or old is None:
        return True
    if monitor == "val_accuracy":
        return new[1] >= old[1]
    return new[0] <= old[0] or new[1] > old[1]


def _write_artefacts(session, result, inference, base, base_trained, metrics, truth, predicted) -> None:
    from tltoolkit.data import save_class_index

    out = session.out
    rundir.write_snapshot(result.usable(), out / "snapshot.parquet")
    save_class_index(result.class_index, out / "class_index.json")
    rundir.write_json(out / "config.json", session.config)
    if base_trained:
        rundir.save_weights(base, out / "base.weights.h5")
    rundir.save_model(inference, out / "model.keras")
    rundir.plot_curves(metrics.frame, out / "plots" / "curves.png")
    rundir.plot_confusion(truth, predicted, result.class_names, out / "plots" / "confusion.png")
    summary = result.summary()
    rundir.write_json(out / "state.json", session.state)
    from tltoolkit.training.phases import tensorboard_installed

    rundir.write_report(out / "report.md", session.state, summary, metrics.frame, tensorboard_installed())
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


def _plan(session, extractor, decision, notes, misses, images, train_images) -> dict:
    """What a run would do, with a rough time: the extractor's forward pass timed on one batch."""
    import tensorflow as tf

    config = session.config
    batch = tf.zeros((int(config["batch_size"]), *session.size, 3))
    extractor(batch)  # trace
    tic = time.perf_counter()
    extractor(batch)
    per_image = (time.perf_counter() - tic) / int(config["batch_size"])
    fine_tune = bool(decision.trained_stages) and int(config["fine_tune_epochs"]) > 0
    # Training costs about three forward passes (forward, backward); the head alone is negligible.
    seconds = misses * per_image + (3 * per_image * train_images * int(config["fine_tune_epochs"]) if fine_tune else 0)
    lines = [*notes,
             f"cache: {images - misses} hits, {misses} to extract ({extractor.spec.key()})",
             f"phase 1: head on cached features, {_head_epochs(config, head_steps_per_epoch(train_images, config))}",
             (f"phase 2: {' + '.join(decision.trained_stages)} + head, up to {config['fine_tune_epochs']} epochs, "
              f"bn {config['bn']}" if fine_tune else "phase 2: none (nothing unfrozen)"),
             f"estimated time: ~{_duration(seconds)} on this machine (rough: forward passes timed on one batch)",
             f"run directory: {session.out}"]
    for line in lines:
        session.echo(line)
    return {"plan": lines, "decision": decision.freeze_until, "misses": misses, "estimated_seconds": seconds}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
