"""What the accuracy benchmarks share: the embedded domains and backbone, drawing n images per class
into a manifest, one `tltoolkit.finetune` run scored on a held-out folder, table cells, atomic writes.

Used by transfer_table.py, head_quality.py and vs_plain_keras.py (run from the repository root:
`.venv/bin/python benchmarks/NAME.py`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = "resnet20_cifar"
BACKBONE = ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5"


@dataclasses.dataclass(frozen=True)
class Domain:
    """A pool of class folders to draw training images from, its held-out test folder, and the finetune
    settings the domain needs whatever the benchmark (flipped digits are not digits)."""

    name: str
    title: str
    made_by: str
    settings: tuple = ()

    @property
    def pool(self) -> Path:
        return ROOT / "data" / self.name

    @property
    def test(self) -> Path:
        return ROOT / "data" / f"{self.name}-test"


DOMAINS = {
    "digits59": Domain("digits59", "digits 5-9 (UCI optdigits via scikit-learn)", "python tools/make_sample_data.py",
                       (("augment", "none"),)),
    "animals": Domain("animals", "animal silhouettes, 10 classes (animal-mnist)", "python tools/make_animal_data.py"),
}


def add_common_arguments(parser, n_default: list[str], seeds_default: list[int]) -> None:
    parser.add_argument("--domains", nargs="+", choices=list(DOMAINS), default=list(DOMAINS),
                        help=f"default: {' '.join(DOMAINS)}")
    parser.add_argument("--n", nargs="+", default=n_default,
                        help=f"training images per class: numbers and/or 'all' (default: {' '.join(n_default)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=seeds_default,
                        help="each seed draws the n images per class (and seeds training)")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/<script>.md (<script>-quick.md with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run (numbers mean little)")


def finish_arguments(parser, args, script: str):
    for n in args.n:
        if n != "all" and not (n.isdigit() and int(n) > 0):
            parser.error(f"--n takes positive numbers or 'all', got {n!r}")
    args.out = args.out or ROOT / "benchmarks" / "results" / f"{script}{'-quick' if args.quick else ''}.md"
    return args


def pool_files(domain: Domain) -> dict[str, list[Path]]:
    classes = {folder.name: sorted(folder.glob("*.png")) for folder in sorted(domain.pool.iterdir()) if folder.is_dir()} \
        if domain.pool.is_dir() else {}
    if not classes or not all(classes.values()):
        raise SystemExit(f"{domain.pool} has no class folders of PNGs; make them with `{domain.made_by}`")
    return classes


def write_manifest(path: Path, domain: Domain, n: str, seed: int) -> str:
    """A manifest of n images per class of `domain`'s pool drawn by `seed`; returns the row's label
    (`all` with its range of images per class). No split column: finetune splits as it always does.
    Manifests may only name images under their own folder, and links leaving it are quarantined (the
    scan's policy): a copy of the pool (a few MB of small PNGs) sits beside them."""
    import shutil

    import numpy as np
    import pandas as pd

    copy = path.parent / domain.name
    if not copy.exists():
        shutil.copytree(domain.pool, copy)
    classes = pool_files(domain)
    rng = np.random.default_rng(seed)
    rows = []
    for label, files in classes.items():
        if n != "all" and int(n) > len(files):
            raise SystemExit(f"--n {n} exceeds the {len(files)} images of class {label} in {domain.pool}")
        chosen = files if n == "all" else [files[i] for i in sorted(rng.choice(len(files), int(n), replace=False))]
        rows += [(f"{domain.name}/{label}/{f.name}", label) for f in chosen]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(path, index=False)
    sizes = [len(files) for files in classes.values()]
    return f"all ({min(sizes)}–{max(sizes)})" if n == "all" else n


def manifest_for(work: Path, domain: Domain, n: str, seed: int) -> tuple[Path, str]:
    manifest = work / f"{domain.name}-n{n}-seed{seed}.csv"
    return manifest, write_manifest(manifest, domain, n, seed)


def cache_dir(work: Path) -> Path:
    """The feature cache every run of a grid shares."""
    return work / "cache"


@dataclasses.dataclass
class Run:
    accuracy: float  # on the domain's test folder
    seconds: float  # the whole finetune call (scan, extraction the cache lacks, phases, saving)
    entry: dict  # finetune's state.json entry: decision, phases (with their seconds), notes
    out: Path


def run_finetune(domain: Domain, manifest: Path, work: Path, seed: int, **settings) -> Run:
    """finetune on `manifest` with the backbone, the domain's settings and `settings` (DEFAULTS for the
    rest), in a fresh folder under `work` with the grid's shared cache; scored on `domain.test`."""
    import tltoolkit

    out = Path(tempfile.mkdtemp(prefix=f"{domain.name}-", dir=work))
    config = {"base": BASE, "weights": str(BACKBONE), "data": str(manifest), "out": str(out),
              "cache_dir": str(cache_dir(work)), "seed": seed, **dict(domain.settings), **settings}
    started = time.perf_counter()
    entry = tltoolkit.finetune(config, progress=False, echo=lambda line: None)
    seconds = time.perf_counter() - started
    return Run(tltoolkit.evaluate(out, str(domain.test)).accuracy, seconds, entry, out)


def phase_seconds(entry: dict, phase: int) -> float:
    return sum(p["seconds"] for p in entry["phases"] if p["phase"] == phase)


def mean_spread(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def cell(values: list[tuple]) -> str:
    """Per seed (accuracy, seconds, finetune's decision or None) -> mean ± std [min–max], mean seconds
    (decisions ×count)."""
    accuracies = [v[0] for v in values]
    decisions = collections.Counter(v[2] for v in values if v[2])
    decided = f" ({', '.join(f'{d} ×{c}' for d, c in decisions.items())})" if decisions else ""
    return (f"{mean_spread(accuracies)} [{min(accuracies):.3f}–{max(accuracies):.3f}], "
            f"{statistics.fmean(v[1] for v in values):.0f} s{decided}")


def count_images(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*/*.png"))


def document(title: str, intro: str, results: dict, section, command: str, complete: bool,
             total_seconds: float) -> str:
    """The Markdown file: title, command, machine, `intro`, then per domain a heading and
    `section(rows)` (its table's lines)."""
    lines = [f"# {title}" + ("" if complete else " (PARTIAL)"), "", f"Command: `{command}`", "",
             f"Machine: {os.cpu_count()} CPU core(s), {platform.machine()}, no GPU used; "
             f"{total_seconds / 60:.1f} min in all.", "", intro, ""]
    for name, rows in results.items():
        domain = DOMAINS[name]
        lines += [f"## {domain.title}: `data/{name}`, {count_images(domain.test)} test images", "",
                  *section(rows), ""]
    if not complete:
        lines += ["PARTIAL: the grid was interrupted; only the runs above were measured (a row's last "
                  "cells may have fewer seeds).", ""]
    return "\n".join(lines)


def run_grid(args, script: str, argv, measure, render, prepare=None) -> None:
    """For each domain, n and seed: draws the manifest and calls `measure(domain, manifest, work, seed,
    prepared)` (`prepared`: what `prepare(domain, work)` returned once per domain), collecting its
    results as `{domain: {row label: [result per seed]}}`; after each, rewrites `args.out` atomically
    with `render(results, command, complete, total_seconds)` (an interrupted grid leaves the rows it
    measured, marked partial); prints the file at the end."""
    command = shlex.join(["python", f"benchmarks/{script}.py", *(sys.argv[1:] if argv is None else argv)])
    for name in args.domains:
        pool_files(DOMAINS[name])  # before any training: a missing folder fails now
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices: each run builds new models on purpose
    results: dict = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"tltoolkit-{script}-") as folder:
        work = Path(folder)
        for name in args.domains:
            domain = DOMAINS[name]
            prepared = prepare(domain, work) if prepare else None
            for n in args.n:
                for seed in args.seeds:
                    manifest, label = manifest_for(work, domain, n, seed)
                    result = measure(domain, manifest, work, seed, prepared)
                    results.setdefault(name, {}).setdefault(label, []).append(result)
                    complete = name == args.domains[-1] and n == args.n[-1] and seed == args.seeds[-1]
                    write_atomically(args.out, render(results, command, complete, time.perf_counter() - started))
    print()
    print(args.out.read_text(), end="")
    print(f"(written to {args.out})")


def write_atomically(path: Path, text: str) -> None:
    from tltoolkit.data.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Path(temporary).write_text(text)
