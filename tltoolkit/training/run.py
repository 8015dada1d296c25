"""The run directory (`--out runs/NAME`): what a finetune run leaves behind, each file written atomically.

    config.json        every resolved setting (defaults included), per run in `state.json` too
    class_index.json   class name -> output unit
    snapshot.parquet   each image's sha256, path, label and split, for the latest run
    metrics.csv        one row per epoch: run, phase, trial (the freeze point tried), epoch, loss,
                       accuracy, val_loss, val_accuracy, lr
    model.keras        the best model: raw uint8 images of the training size in, probabilities out
    base.weights.h5    the fine-tuned base (the next run extracts its features with it)
    state.json         the runs so far (status, decision, results): a re-run appends, a killed one resumes
    checkpoints/       BackupAndRestore state of an unfinished phase 2
    logs/              TensorBoard
    plots/             curves.png (phase boundaries marked), confusion.png (validation)
    report.md          data, decisions, metrics and where each artefact is
    .lock              held by the one finetune writing the directory: a second one is refused

The files a reader needs together (`ARTEFACTS`: model, class index, config, snapshot, fine-tuned base)
are links through `current` into `.sets/<id>/`: a run writes its whole set into a new folder, then
switches `current` in one rename, so a reader (predict, evaluate, export, the next run) sees the
previous complete set or the new one, never a new class index beside an old model, whatever
interrupts the run (kill -9, a full disk).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from tltoolkit.data.files import atomic_path, read_json, write_json
from tltoolkit.errors import TltoolkitError
from tltoolkit.reports import confusion_figure, confusion_matrix, curves_figure, markdown_table, save_figure

LOCK = ".lock"
ARTEFACTS = ("model.keras", "class_index.json", "config.json", "snapshot.parquet", "base.weights.h5")
METRIC_COLUMNS = ["run", "phase", "trial", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]


def save_model(model, path: Path) -> None:
    with atomic_path(path, suffix=".keras") as temporary:
        model.save(temporary)


def save_weights(model, path: Path) -> None:
    with atomic_path(path, suffix=".weights.h5") as temporary:
        model.save_weights(temporary)


class ArtefactSet:
    """A run's new set of `ARTEFACTS`: write each to `new / name`, then `commit()` switches to it."""

    def __init__(self, out: Path):
        self.out = out
        self.name = uuid.uuid4().hex[:12]
        self.folder = out / ".sets" / self.name
        self.folder.mkdir(parents=True)

    def __truediv__(self, name: str) -> Path:
        return self.folder / name

    def commit(self) -> None:
        out = self.out
        for name in ARTEFACTS:  # what this run did not rewrite (an untrained base) carries over
            if not (self.folder / name).exists() and (out / name).exists():
                try:
                    os.link(os.path.realpath(out / name), self.folder / name)
                except OSError:  # a file system without hard links
                    shutil.copy2(out / name, self.folder / name)
        _replace_with_link(out / "current", Path(".sets") / self.name)  # the switch
        link = {name: Path("current") / name for name in ARTEFACTS}
        for name in ARTEFACTS:  # once per directory (a run directory from before sets holds files)
            if (self.folder / name).exists() and not ((out / name).is_symlink() and
                                                      Path(os.readlink(out / name)) == link[name]):
                _replace_with_link(out / name, link[name])
        for old in (out / ".sets").iterdir():  # earlier sets, and the leftovers of killed runs
            if old.name != self.name:
                shutil.rmtree(old, ignore_errors=True)


def _replace_with_link(path: Path, target: Path) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    os.symlink(target, temporary)
    os.replace(temporary, path)


class Metrics:
    """metrics.csv across phases and runs; rewritten atomically after each epoch, so a killed run
    keeps what it had logged, and a resumed epoch replaces its earlier row."""

    def __init__(self, path: Path):
        self.path = path
        frame = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=METRIC_COLUMNS)
        self.frame = frame.reindex(columns=METRIC_COLUMNS)  # a run directory from before `trial` existed
        self.frame["trial"] = self.frame["trial"].astype(object)

    def drop(self, run: int, phase: int, trial: str = "") -> None:
        self.frame = self.frame[~self._key(run, phase, trial)]

    def _key(self, run, phase, trial):
        return ((self.frame["run"] == run) & (self.frame["phase"] == phase)
                & (self.frame["trial"].fillna("") == trial))

    def record(self, run: int, phase: int, epoch: int, logs: dict, trial: str = "") -> None:
        row = {"run": run, "phase": phase, "trial": trial, "epoch": epoch,
               **{k: logs.get(k) for k in METRIC_COLUMNS[4:]}}
        key = self._key(run, phase, trial) & (self.frame["epoch"] == epoch)
        rows = [r for r in (self.frame[~key], pd.DataFrame([row], columns=METRIC_COLUMNS)) if len(r)]
        self.frame = pd.concat(rows, ignore_index=True).astype({"run": int, "phase": int, "epoch": int})
        with atomic_path(self.path) as temporary:
            self.frame.to_csv(temporary, index=False)


def write_snapshot(table: pd.DataFrame, path: Path) -> None:
    columns = ["sha256", "path", "label", "label_id", "split"]
    with atomic_path(path) as temporary:
        table[columns].reset_index(drop=True).to_parquet(temporary, index=False)


def plot_curves(metrics: pd.DataFrame, path: Path) -> None:
    save_figure(curves_figure(metrics), path)


def plot_confusion(truth, predicted, class_names, path: Path) -> np.ndarray:
    """The validation confusion matrix (rows: true class, columns: predicted), as a PNG; returns it."""
    matrix = confusion_matrix(truth, predicted, len(class_names))
    save_figure(confusion_figure(matrix, class_names, "validation confusion matrix"), path)
    return matrix


def write_report(path: Path, state: dict, summary: pd.DataFrame, metrics: pd.DataFrame, tensorboard: bool) -> None:
    """report.md: the data, each run's decisions and results, and where every artefact is."""
    latest = state["runs"][-1]
    config = latest["config"]
    lines = [f"# Fine-tuning run: {config['base']} on {config['data']}", "",
             f"Runs so far: {len(state['runs'])}. Latest: run {latest['run']} ({latest['status']}).", "",
             "## Data (latest run)", "", markdown_table(summary), ""]
    for run in state["runs"]:
        lines += [f"## Run {run['run']}", ""]
        lines += [f"- {note}" for note in run.get("notes", [])]
        for phase in run.get("phases", []):
            lines.append(f"- {phase['summary']}")
        lines.append("")
        if run.get("head_sweep"):
            lines += [f"### Phase 1: the head settings tried (scored on {run['head_scored_on']})", "",
                      markdown_table(pd.DataFrame(run["head_sweep"])), ""]
        if run.get("trials"):
            lines += ["### Freeze points tried (--freeze-until auto)", "",
                      markdown_table(pd.DataFrame(run["trials"])), ""]
    lines += ["## Artefacts", "",
              "| file | what |", "| --- | --- |",
              "| `model.keras` | the best model: uint8 images in, class probabilities out; `tltoolkit.load_model(path)` (or `keras.models.load_model` after `import tltoolkit.architectures`) |",
              "| `class_index.json` | class name -> output unit |",
              "| `config.json` | every setting of the latest run (the same keys work in `--config`) |",
              "| `snapshot.parquet` | each image's sha256, path, label and split |",
              "| `metrics.csv` | every epoch of every phase and run |",
              "| `plots/curves.png` | loss and accuracy, phase boundaries dotted |",
              "| `plots/confusion.png` | validation confusion matrix |",
              ("| `logs/` | TensorBoard: `tensorboard --logdir logs` |" if tensorboard else
               "| `logs/` | not written: TensorBoard is not installed (`pip install tensorboard`) |"),
              "| `state.json` | the runs, their decisions and results |", ""]
    if len(metrics):
        last = metrics.groupby(["run", "phase", metrics["trial"].fillna("")]).tail(1)[
            ["run", "phase", "trial", "epoch", "loss", "accuracy", "val_loss", "val_accuracy"]]
        lines += ["## Last epoch of each phase", "", markdown_table(last.round(4)), ""]
    with atomic_path(path) as temporary:
        Path(temporary).write_text("\n".join(lines))


class RunState:
    """The run directory's history (`state.json`): which runs finished, and whether this invocation may
    continue them. A re-run may grow the data, not change what the model is; --force starts over."""

    def __init__(self, out: Path, echo, force: bool, plan: bool):
        if out.exists() and not out.is_dir():
            raise TltoolkitError(f"--out {out} is a file; pass a folder for the run")
        self.out, self.echo, self.force, self.plan = out, echo, force, plan
        self.state = read_json(out / "state.json", {"runs": []})
        runs = self.state.get("runs") if isinstance(self.state, dict) else None
        if not (isinstance(runs, list) and all(isinstance(r, dict) and isinstance(r.get("config"), dict)
                                               and "status" in r for r in runs)):
            if not force:
                raise TltoolkitError(f"{out / 'state.json'} is not a finetune state (a mapping with a list of runs); "
                                     f"restore it, or pass --force to start the run directory over")
            self.state = {"runs": []}
        self._lock = None

    def lock(self) -> None:
        """Makes this process the directory's one writer (until `with state:` ends), or refuses in one
        line; also refuses when another run changed state.json since it was read."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = self._exclusive()
        if json.dumps(read_json(self.out / "state.json", {"runs": []})) != json.dumps(self.state):
            raise TltoolkitError(f"another finetune finished in {self.out} while this one was starting; run "
                                 f"it again to continue from that run")

    def _exclusive(self):
        handle = open(self.out / LOCK, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise TltoolkitError(f"another finetune is writing {self.out}; wait for it to finish, or pass "
                                 f"another --out") from None
        return handle

    def __enter__(self):
        return self

    def __exit__(self, *error):
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None
        return False

    @property
    def runs(self) -> list[dict]:
        return self.state["runs"]

    @property
    def finished_runs(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "finished"]

    def check_compatible(self, config: dict, identity, base_id: str) -> None:
        previous = self.finished_runs[-1] if self.finished_runs else (self.runs or [None])[-1]
        if previous is None:
            if self.out.exists() and any(p.name != LOCK for p in self.out.iterdir()) and not self.force:
                raise TltoolkitError(f"--out {self.out} is not empty and holds no finetune run; choose another "
                                     f"folder or pass --force to replace its contents")
            return
        keys = [k for k in identity if previous["config"].get(k) != config.get(k)]
        changed = [f"{k} {previous['config'].get(k)!r} -> {config.get(k)!r}" for k in keys]
        if "base" not in keys and previous.get("base_id", base_id) != base_id:
            changed.append(f"base content {previous['base_id']} -> {base_id}")  # a saved .keras rewritten
        if changed:
            self._refuse_or_reset(", ".join(changed))

    def check_classes(self, classes) -> None:
        lost = sorted(set(self.old_class_index()) - set(classes))
        if lost:
            self._refuse_or_reset(f"classes {', '.join(lost)} of the earlier run are missing from --data")

    def _refuse_or_reset(self, what: str) -> None:
        if not self.force:
            raise TltoolkitError(f"--out {self.out} holds a run that differs ({what}); use another --out, "
                                 f"or --force to start it over")
        if self.plan:
            self.echo(f"--force: would remove the earlier run in {self.out} ({what})")
            return
        if (self.out / LOCK).exists():
            self._exclusive().close()  # never remove a directory another finetune is writing
        shutil.rmtree(self.out)
        self.state = {"runs": []}
        self.echo(f"--force: removed the earlier run in {self.out} ({what})")

    def old_class_index(self) -> dict:
        from tltoolkit.data import load_class_index

        path = self.out / "class_index.json"
        return load_class_index(path) if path.exists() and self.finished_runs else {}

    def save(self) -> None:
        write_json(self.out / "state.json", self.state)
