"""Calibration and rejection on the embedded data: a model fine-tuned on `data/digits59` (digits 5-9) with
the embedded backbone; temperature and rejection thresholds fitted on its validation split; ECE,
coverage and the rejection of digits 0-4 (`data/digits04-test`, classes it never saw) measured on the
held-out `data/digits59-test`.

    .venv/bin/python benchmarks/trust.py [--seed 0] [--coverage 0.95]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
from pathlib import Path

from common import BACKBONE, BASE, DOMAINS, ROOT

OOD = ROOT / "data" / "digits04-test"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coverage", type=float, default=0.95)
    args = parser.parse_args(argv)

    import tltoolkit
    from tltoolkit.calibration import expected_calibration_error, fit_temperature, logits_model, softmax
    from tltoolkit.evaluate import evaluation_table, image_table, load_classifier, probabilities
    from tltoolkit.rejection import SCORES, auroc, check_coverage, false_positive_rate, score, threshold_for_coverage

    check_coverage(args.coverage)
    domain = DOMAINS["digits59"]
    with tempfile.TemporaryDirectory(prefix="tltoolkit-trust-") as folder:
        out = Path(folder) / "run"
        tltoolkit.finetune({"base": BASE, "weights": str(BACKBONE), "data": str(domain.pool), "out": str(out),
                            "cache_dir": str(Path(folder) / "cache"), "seed": args.seed, **dict(domain.settings)},
                           progress=False, echo=lambda line: None)
        classifier = load_classifier(out)
        logits_of = dataclasses.replace(classifier, model=logits_model(classifier.model))
        val, _, _ = evaluation_table(domain.pool, classifier.class_names, split="validation")
        test, _, _ = evaluation_table(domain.test, classifier.class_names)
        logits = {name: probabilities(logits_of, table) for name, table in
                  (("val", val), ("test", test), ("ood", image_table([str(OOD)])))}

    t = fit_temperature(logits["val"], val["label_id"].to_numpy())
    labels = test["label_id"].to_numpy()
    accuracy = float((logits["test"].argmax(1) == labels).mean())
    print(f"Command: `{shlex.join(['python', 'benchmarks/trust.py', *(sys.argv[1:] if argv is None else argv)])}`\n")
    print(f"{BASE} + data/backbone, fine-tuned on data/digits59 (seed {args.seed}): {len(val)} validation images, "
          f"{len(test)} held-out (digits59-test, accuracy {accuracy:.3f}), {len(logits['ood'])} out-of-distribution "
          f"(digits04-test)\n")
    print(f"| temperature (fitted on validation) | ECE held-out, T=1 | ECE held-out, T={t:.2f} |")
    print("|---|---|---|")
    print(f"| {t:.3f} | {expected_calibration_error(softmax(logits['test']), labels):.4f} | "
          f"{expected_calibration_error(softmax(logits['test'], t), labels):.4f} |\n")
    print(f"| score (T={t:.2f}) | threshold for coverage {args.coverage:g} on validation | coverage on held-out | "
          f"AUROC held-out vs digits 0-4 | FPR at the threshold |")
    print("|---|---|---|---|---|")
    for kind in SCORES:
        known, unknown = (score(logits[name], kind, t) for name in ("test", "ood"))
        threshold = threshold_for_coverage(score(logits["val"], kind, t), args.coverage)
        print(f"| {kind} | {threshold:.4f} | {(known >= threshold).mean():.3f} | {auroc(known, unknown):.3f} | "
              f"{false_positive_rate(unknown, threshold):.3f} |")


if __name__ == "__main__":
    main()
