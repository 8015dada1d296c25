"""Feature extraction's compute on CPU runtimes (issue 18): TensorFlow fp32 against OpenVINO fp32, bf16
and int8 (tltoolkit.runtimes), as img/s ratios measured in one run, with each one's fidelity.

    .venv/bin/python benchmarks/cpu_runtime.py            # ResNet-50 without top at 224, batch 16
    .venv/bin/python benchmarks/cpu_runtime.py --quick    # ResNet-20 (CIFAR) at 32: a smoke run

The model is an extractor's: raw pixels -> the architecture's preprocessing -> the base, average-pooled,
random weights (seeded; the compute is the same as pretrained weights'; this machine has no internet)
unless `--weights` names a file (random weights' features say less about int8's fidelity: try
`--quick --weights data/backbone/digits04_resnet20_cifar.weights.h5`).
Images are the embedded animal silhouettes (data/animals, 32x32) resized to the model's size: int8 is
calibrated on `--calibration` of them and fidelity measured on `--sample` others. Rates: after a warm-up
call of each, `--rounds` rounds run every runtime in turn for `--calls` calls on the same batch (so a
busy machine slows them all alike); the rate is the median over rounds. Compare ratios only from one run
on an otherwise idle machine: under load they move a lot (see /work/shared/reference/cpu-runtimes.md).

The input-pipeline check (issue 18: the pipeline keeps up with the faster model): `--pipeline-images`
generated JPEGs (256x256, as benchmarks/pipeline.py makes them) through `tltoolkit.pipeline.image_dataset`
to the model's size, its best pass of `--rounds` against the fastest OpenVINO model rate of the same run,
printed as a ratio (target >= 1.2x the bf16 rate).

Disk to cache (issue 18's target is on it): the same JPEGs through `tltoolkit.features.extract_features`
(decode, resize, forward, shards written) into a fresh cache per runtime, the extractor built (and int8
calibrated on the folder's own images, as `extract` does) beforehand; img/s against TensorFlow fp32's compute-only rate above.

Downstream (`--downstream`): `finetune --freeze-until head` (phase 1 on the cached features) on every
training image of data/animals and data/digits59 with the embedded ResNet-20 backbone at 32x32, once per
precision: phase 1's validation accuracy and the saved model's test accuracy on the held-out folder (the
saved model runs TensorFlow fp32, so this also shows a head fit on bf16/int8 features serving fp32 ones).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

# The CPU flags that decide what OpenVINO can run natively (Linux /proc/cpuinfo names).
FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def extractor_model(arch: str, size: int, weights=None):
    import keras

    import tltoolkit
    from tltoolkit.architectures.preprocessing import preprocessing_layer

    keras.utils.set_random_seed(0)
    base = tltoolkit.build(arch, weights=weights, include_top=False, pooling="avg", input_shape=(size, size, 3))
    pixels = keras.Input((size, size, 3), name="pixels")
    return keras.Model(pixels, base(preprocessing_layer(tltoolkit.get_spec(arch).preprocessing)(pixels)))


def load_images(files, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
                     for f in files])


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return " ".join(flag for flag in FLAGS if flag in flags) or "none of " + " ".join(FLAGS)


def median_rates(predicts: dict, batch: np.ndarray, rounds: int, calls: int) -> dict:
    for predict in predicts.values():
        predict(batch)  # warm-up: first-call allocations and caches
    seconds = {name: [] for name in predicts}
    for _ in range(rounds):
        for name, predict in predicts.items():
            started = time.perf_counter()
            for _ in range(calls):
                predict(batch)
            seconds[name].append((time.perf_counter() - started) / calls)
    return {name: len(batch) / statistics.median(times) for name, times in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--weights", help="a weights file (default: random; fidelity on real weights means more)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2, help="calls per runtime per round")
    parser.add_argument("--calibration", type=int, default=300, help="int8 calibration images")
    parser.add_argument("--sample", type=int, default=64, help="images the fidelity is measured on")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"],
                        choices=["fp32", "bf16", "int8"], help="OpenVINO precisions to measure")
    parser.add_argument("--pipeline-images", type=int, default=256,
                        help="JPEGs for the input-pipeline check (0: skip it)")
    parser.add_argument("--downstream", action="store_true",
                        help="also finetune --freeze-until head per precision on the embedded data (a few minutes)")
    parser.add_argument("--quick", action="store_true", help="ResNet-20 (CIFAR) at 32, 3 rounds: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.arch, args.image_size, args.rounds, args.calibration, args.sample = "resnet20_cifar", 32, 3, 32, 32

    from importlib.metadata import version

    import openvino
    import tensorflow as tf

    from tltoolkit.runtimes import compare_features, compile_runtime

    files = sorted((ROOT / "data" / "animals").glob("*/*.png"))
    if len(files) < args.calibration + args.sample:
        raise SystemExit(f"data/animals has {len(files)} images, fewer than --calibration + --sample; "
                         "make them with `python tools/make_animal_data.py`")
    order = np.random.default_rng(0).permutation(len(files))
    calibration_files = [files[i] for i in order[:args.calibration]]
    sample = load_images([files[i] for i in order[args.calibration:args.calibration + args.sample]], args.image_size)
    batch = sample[:args.batch_size]
    if len(batch) < args.batch_size:
        raise SystemExit(f"--sample {args.sample} is smaller than --batch-size {args.batch_size}")

    model = extractor_model(args.arch, args.image_size, args.weights)
    runtimes = {"tensorflow fp32": compile_runtime(model, "tf", "fp32")}
    for precision in args.precisions:
        options = {}
        if precision == "int8":
            options = dict(calibration=(load_images(calibration_files[i:i + 32], args.image_size)
                                        for i in range(0, len(calibration_files), 32)),
                           calibration_hashes=[hashlib.sha256(f.read_bytes()).hexdigest() for f in calibration_files])
        runtimes[f"openvino {precision}"] = compile_runtime(model, "openvino", precision, batch_size=args.batch_size,
                                                            **options)
    rates = median_rates({name: runtime.predict for name, runtime in runtimes.items()}, batch, args.rounds, args.calls)

    print(f"{args.arch} without top at {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"{'weights ' + args.weights if args.weights else 'random weights'}; "
          f"{args.rounds} interleaved rounds of {args.calls} calls, medians")
    core = openvino.Core()
    print(f"CPU: {core.get_property('CPU', 'FULL_DEVICE_NAME')}, {os.cpu_count()} cores, flags: {cpu_flags()}; "
          f"OpenVINO capabilities: {' '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}")
    print(f"TensorFlow {tf.__version__}, OpenVINO {version('openvino')}"
          + (f", NNCF {version('nncf')} (int8 calibrated on {args.calibration} images)" if "int8" in args.precisions else ""))
    print("\n| runtime | img/s | vs TF fp32 | cosine mean / min vs TF fp32 | max difference / largest feature |")
    print("| --- | --- | --- | --- | --- |")
    baseline = rates["tensorflow fp32"]
    reference = runtimes["tensorflow fp32"](sample)
    for name, runtime in runtimes.items():
        row = f"| {name} | {rates[name]:.1f} | {rates[name] / baseline:.2f} |"
        if name == "tensorflow fp32":
            print(row + " – | – |")
            continue
        close = compare_features(runtime(sample), reference)
        print(row + f" {close.cosine_mean:.6f} / {close.cosine_min:.6f} | {close.max_relative_difference:.1e} |")
    print(f"\nfidelity on {len(sample)} images; command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    if args.pipeline_images:
        pipeline = pipeline_rate(args.pipeline_images, args.image_size, args.batch_size, args.rounds)
        fastest = max((name for name in rates if name != "tensorflow fp32"), key=rates.get, default="tensorflow fp32")
        compared = [name for name in ("openvino bf16", fastest) if name in rates]
        print(f"input pipeline ({args.pipeline_images} JPEGs 256 -> {args.image_size}, center_crop, batch "
              f"{args.batch_size}): {pipeline:.1f} img/s = "
              + ", ".join(f"{pipeline / rates[name]:.1f}x {name}" for name in dict.fromkeys(compared))
              + " (target: >= 1.2x openvino bf16)")
        print(f"\ndisk to cache ({args.pipeline_images} JPEGs 256 -> {args.image_size}, batch {args.batch_size}):")
        for name, rate in disk_rates(args).items():
            print(f"- {name}: {rate:.1f} img/s = {rate / baseline:.2f}x TensorFlow fp32's compute-only rate")
    if args.downstream:
        downstream(list(dict.fromkeys(["fp32", *args.precisions])))


def pipeline_rate(count: int, image_size: int, batch_size: int, rounds: int) -> float:
    """img/s of `tltoolkit.pipeline.image_dataset` on `count` generated JPEGs: its best of `rounds` passes."""
    import tempfile

    from benchmarks.pipeline import best_rates, make_folder
    from tltoolkit.data import scan
    from tltoolkit.pipeline import image_dataset

    with tempfile.TemporaryDirectory() as temp:
        folder = make_folder(Path(temp) / "images", count, 256)
        table = scan(folder, cache_dir=Path(temp) / "cache").usable()
        return best_rates({"pipeline": image_dataset(table, image_size, batch_size)}, rounds)["pipeline"]


def disk_rates(args) -> dict:
    """img/s of `extract_features` from `args.pipeline_images` generated JPEGs into a fresh cache, per
    runtime (the extractor built beforehand, as `extract` builds it: int8 calibrates on the folder)."""
    import tempfile

    from benchmarks.pipeline import make_folder
    from tltoolkit.data import scan
    from tltoolkit.features.extractor import feature_extractor, runtime_arguments
    from tltoolkit.features.local import extract_features

    rates = {}
    with tempfile.TemporaryDirectory() as temp:
        table = scan(make_folder(Path(temp) / "images", args.pipeline_images, 256), cache_dir=Path(temp) / "scans").usable()
        for runtime, precision in [("tf", "fp32")] + [("openvino", p) for p in args.precisions]:
            extractor = feature_extractor(args.arch, args.weights, (args.image_size, args.image_size),
                                          **runtime_arguments(runtime, precision, table, args.batch_size, False))
            extract_features(table.head(args.batch_size), extractor, Path(temp) / "warm-up", args.batch_size,
                             progress=False)  # tracing and first-call allocations
            _, stats = extract_features(table, extractor, Path(temp) / f"{runtime}-{precision}", args.batch_size,
                                        progress=False)
            rates[f"{'tensorflow' if runtime == 'tf' else runtime} {precision}"] = stats.images_per_second
    return rates


def downstream(precisions) -> None:
    """Phase 1 per precision on the embedded domains: validation and test accuracy against fp32's."""
    import tempfile

    from benchmarks.common import DOMAINS, manifest_for, run_finetune

    print("\ndownstream: finetune --freeze-until head, every training image, embedded ResNet-20 backbone, seed 0")
    print("\n| domain | precision | phase-1 val_accuracy | vs fp32 (points) | test accuracy | vs fp32 (points) |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as temp:
        for domain in (DOMAINS["animals"], DOMAINS["digits59"]):
            manifest, _ = manifest_for(Path(temp), domain, "all", 0)
            reference = None
            for precision in precisions:
                run = run_finetune(domain, manifest, Path(temp), 0, freeze_until="head", augment="none",
                                   runtime="tf" if precision == "fp32" else "openvino", precision=precision)
                scores = (run.entry["phases"][0]["val_accuracy"], run.accuracy)
                reference = reference or scores
                print(f"| {domain.name} | {precision} | {scores[0]:.4f} | {100 * (scores[0] - reference[0]):+.1f} | "
                      f"{scores[1]:.4f} | {100 * (scores[1] - reference[1]):+.1f} |")


if __name__ == "__main__":
    main()
