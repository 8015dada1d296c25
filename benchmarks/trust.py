"""Calibration and rejection on the embedded data: a model fine-tuned on `data/digits59` (digits 5-9) with
the embedded backbone; the temperature and the msp threshold are the ones finetune fitted on its
validation split and stored in model.keras (the energy threshold is chosen the same way here); ECE,
coverage and the rejection of digits 0-4 (`data/digits04-test`, classes it never saw) measured on the
held-out `data/digits59-test`. Writes the table to benchmarks/results/trust.md.

    .venv/bin/python benchmarks/trust.py [--seeds 0 1 2] [--coverage 0.95]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from common import BACKBONE, BASE, DOMAINS, ROOT, write_atomically

OOD = ROOT / "data" / "digits04-test"


def measure(seed: int, coverage: float) -> dict:
    """One fine-tuning run on digits59 (seed `seed`) and its calibration and rejection numbers."""
    import tltoolkit
    from tltoolkit.calibration import expected_calibration_error, logits_model, softmax
    from tltoolkit.inference.classifier import load_classifier
    from tltoolkit.inference.evaluation import evaluation_table
    from tltoolkit.inference.predict import image_table, probabilities
    from tltoolkit.rejection import SCORES, auroc, false_positive_rate, rejection_of, score, threshold_for_coverage

    domain = DOMAINS["digits59"]
    with tempfile.TemporaryDirectory(prefix="tltoolkit-trust-") as folder:
        out = Path(folder) / "run"
        tltoolkit.finetune({"base": BASE, "weights": str(BACKBONE), "data": str(domain.pool), "out": str(out),
                            "cache_dir": str(Path(folder) / "cache"), "seed": seed, "coverage": coverage,
                            **dict(domain.settings)}, progress=False, echo=lambda line: None)
        classifier = load_classifier(out)
        stored = rejection_of(classifier.model)
        logits_of = dataclasses.replace(classifier, model=logits_model(classifier.model))
        val, _, _ = evaluation_table(domain.pool, classifier.class_names, split="validation")
        test, _, _ = evaluation_table(domain.test, classifier.class_names)
        logits = {name: probabilities(logits_of, table) for name, table in
                  (("val", val), ("test", test), ("ood", image_table([str(OOD)])))}
    t = stored["temperature"]
    labels = test["label_id"].to_numpy()
    row = {"images": (len(val), len(test), len(logits["ood"])), "T": t,
           "accuracy": float((logits["test"].argmax(1) == labels).mean()),
           "ECE T=1": expected_calibration_error(softmax(logits["test"]), labels),
           "ECE T": expected_calibration_error(softmax(logits["test"], t), labels)}
    for kind in SCORES:
        known, unknown = (score(logits[name], kind, t) for name in ("test", "ood"))
        threshold = (stored["threshold"] if kind == stored["score"]
                     else threshold_for_coverage(score(logits["val"], kind, t), coverage))
        row |= {f"{kind} coverage": float((known >= threshold).mean()), f"{kind} AUROC": auroc(known, unknown),
                f"{kind} FPR": false_positive_rate(unknown, threshold)}
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--coverage", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trust.md")
    args = parser.parse_args(argv)
    from tltoolkit.rejection import check_coverage

    check_coverage(args.coverage)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices: each seed builds new models on purpose
    rows = {seed: measure(seed, args.coverage) for seed in args.seeds}
    columns = [c for c in next(iter(rows.values())) if c != "images"]
    val, test, ood = next(iter(rows.values()))["images"]
    lines = ["# Calibration and rejection of unknown inputs\n",
             f"Command: `{shlex.join(['python', 'benchmarks/trust.py', *(sys.argv[1:] if argv is None else argv)])}`\n",
             f"{BASE} + data/backbone fine-tuned on data/digits59 per seed (benchmarks/common.py settings); its stored temperature "
             f"T and msp threshold for coverage {args.coverage:g}, fitted by finetune on the {val} validation images "
             f"(the energy threshold chosen on them here); ECE (15 bins), coverage, AUROC and FPR at the threshold "
             f"on {test} held-out digits59-test images vs {ood} digits04-test images (digits 0-4, out of "
             f"distribution); scores at the stored T.\n",
             "| seed | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {seed} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |" for seed, row in rows.items()]
    lines.append("| mean | " + " | ".join(f"{statistics.fmean(r[c] for r in rows.values()):.3f}" for c in columns) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_atomically(args.out, text)


if __name__ == "__main__":
    main()
