"""Does the bookkeeping scale? Wall time and peak RSS per command as the folder grows (issue 17).

    .venv/bin/python benchmarks/scale.py [--sizes 10000 100000 1000000] [--classes 10] [--work DIR] [--keep]

For each size: a folder of tiny 32x32 PNGs in `--classes` class folders (noise in each class's colour,
generated once per size in parallel and kept under `--work` with `--keep`), then, each command in its
own process with its own caches under the size's folder:
- scan (first): every file read, hashed and probed; scan (unchanged): sizes and mtimes only;
- extract: `resnet20_cifar` (random weights, seeded: a tiny base, so the per-image bookkeeping, not the
  model, dominates) to Parquet, with the feature cache;
- finetune --plan on the same base and data: planning only (what would be extracted, the decision);
- finetune phase 1: the head on the cached features (`--freeze-until head`), after extract filled the
  cache: a run whose features are all cached extracts nothing (issue 17's shared cache).
Peak RSS is each process's maximum resident set (`os.wait4`'s rusage). Printed per size, then the
per-image RSS slope between the smallest and the largest size (KB per extra image; target <= 0.5) and
files per second. Writes (atomically, after every size) benchmarks/results/scale.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common

BASE = ["--base", "resnet20_cifar", "--weights", "none", "--seed", "0"]
COMMANDS = ("scan (first)", "scan (unchanged)", "extract", "finetune --plan", "finetune phase 1")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--work", type=Path, help="where the folders and caches go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders for a re-run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.md")
    args = parser.parse_args(argv)
    if min(args.sizes) < args.classes * 2 or args.classes < 2:
        parser.error("each size needs at least two images per class, and at least two classes")
    return args


def _write_chunk(task) -> None:
    import numpy as np
    from PIL import Image

    folder, classes, start, stop = task
    for i in range(start, stop):
        label = i % classes
        rng = np.random.default_rng(i)
        colour = np.array([(37 * label) % 256, (91 * label) % 256, (173 * label) % 256])
        pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype("uint8")
        Image.fromarray(pixels).save(Path(folder) / f"c{label:02d}" / f"{i:07d}.png", compress_level=1)


def make_folder(folder: Path, size: int, classes: int) -> float:
    """`size` distinct PNGs in `classes` class folders; seconds taken (0 if it was there already)."""
    done = folder / ".complete"
    if done.exists():
        return 0.0
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    for label in range(classes):
        (folder / f"c{label:02d}").mkdir(parents=True)
    step = 5_000
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_write_chunk, [(str(folder), classes, i, min(i + step, size)) for i in range(0, size, step)]))
    done.touch()
    return time.perf_counter() - started


def measured(arguments: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `tltoolkit ARGUMENTS` in its own process; fails loudly."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "tltoolkit", *arguments], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"tltoolkit {' '.join(arguments)} failed ({process.returncode}):\n{stderr.decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux: KB


def measure_size(root: Path, size: int, classes: int) -> dict:
    data, work = root / f"images-{size}", root / f"work-{size}"
    generated = make_folder(data, size, classes)
    print(f"{size:,} images: generated in {generated:.0f} s" if generated else f"{size:,} images: kept from before",
          flush=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cache = work / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "xdg"), "PYTHONPATH": str(Path(__file__).parents[1])}
    runs = {
        "scan (first)": ["scan", "--data", str(data), "--cache-dir", str(cache)],
        "scan (unchanged)": ["scan", "--data", str(data), "--cache-dir", str(cache)],
        "extract": ["extract", *BASE, "--data", str(data), "--out", str(work / "features"), "--cache-dir",
                    str(cache), "--quiet"],
        "finetune --plan": ["finetune", *BASE, "--data", str(data), "--out", str(work / "run"), "--cache-dir",
                            str(cache), "--plan"],
        "finetune phase 1": ["finetune", *BASE, "--data", str(data), "--out", str(work / "run"), "--cache-dir",
                             str(cache), "--freeze-until", "head", "--augment", "none", "--quiet"],
    }
    result = {}
    for name in COMMANDS:
        result[name] = measured(runs[name], env)
        print(f"  {name:18s} {result[name][0]:8.1f} s  peak RSS {result[name][1]:8.0f} MB  "
              f"{size / result[name][0]:9.0f} images/s", flush=True)
    return result


def render(results: dict[int, dict], command: str, complete: bool, seconds: float) -> str:
    sizes = sorted(results)
    lines = ["# Scale: wall time and peak RSS per command as the folder grows", "",
             f"Command: `{command}`", "", f"Machine: {os.cpu_count()} CPU core(s), {platform.machine()}; {seconds / 60:.1f} min in all.", "",
             "Tiny 32x32 PNGs in 10 class folders; each command in its own process (peak RSS: its maximum "
             "resident set); resnet20_cifar with random weights.", "",
             "| command | " + " | ".join(f"{s:,} images: s, MB" for s in sizes) + " | RSS per extra image |",
             "|" + " --- |" * (len(sizes) + 2)]
    for name in COMMANDS:
        cells = [f"{results[s][name][0]:.1f} s, {results[s][name][1]:.0f} MB" for s in sizes]
        slope = ((results[sizes[-1]][name][1] - results[sizes[0]][name][1]) * 1024 / (sizes[-1] - sizes[0])
                 if len(sizes) > 1 else float("nan"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {slope:.2f} KB |")
    if not complete:
        lines += ["", "PARTIAL: interrupted; only the sizes above were measured."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    root = args.work or Path(tempfile.mkdtemp(prefix="tltoolkit-scale-"))
    started, results = time.perf_counter(), {}
    try:
        for size in sorted(args.sizes):
            results[size] = measure_size(root, size, args.classes)
            common.write_atomically(args.out, render(results, command, len(results) == len(args.sizes),
                                                     time.perf_counter() - started))
            if not args.keep:
                shutil.rmtree(root / f"images-{size}", ignore_errors=True)
            shutil.rmtree(root / f"work-{size}", ignore_errors=True)
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(render(results, command, True, time.perf_counter() - started))


if __name__ == "__main__":
    main()
