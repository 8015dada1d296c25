"""`tltoolkit models`: every registered architecture with its size, cost, input, stages and weights.

`weights` lists each architecture's published tags, the one `imagenet` loads first (`imagenet:TAG`
selects another); weights trained on another dataset show as `DATASET:TAG` (`cifar10:chenyaofo`: the first
per dataset is also plain `cifar10`). `source`, `licence` and `top1` (published top-1 on the weights'
dataset, %) follow in the same order.
"""

from __future__ import annotations

from tltoolkit.cli.output import add_format_argument, check_output_file, print_table


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the architectures", description=__doc__)
    parser.add_argument("--family", help="only this family (e.g. resnet, vgg, inception)")
    parser.add_argument("--compare", nargs="+", metavar="ARCH", help="build, measure and chart these "
                        "architectures: params, GMACs, activation memory, latency, throughput, top-1")
    parser.add_argument("--quick", action="store_true", help="with --compare: time at 64x64, batch 4")
    parser.add_argument("--out", default="compare.png", help="with --compare: the chart (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="with --compare: replace an existing chart")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def models_table(family=None):
    """The registry as a pandas DataFrame: the numbers are the specs' pinned values (tests check
    them against built models), so listing builds nothing."""
    import pandas as pd

    from tltoolkit.architectures import all_specs
    from tltoolkit.architectures.registry import ArchitectureError, close_matches

    specs = all_specs(family)
    if family is not None and not specs:
        families = sorted({s.family for s in all_specs()})
        raise ArchitectureError(f"no family {family!r}; families: {', '.join(families)} ({close_matches(family, families)})")
    rows = [{
        "id": s.id,
        "family": s.family,
        "params": s.params,
        "GMACs": round(s.macs, 3),
        "input": "x".join(str(d) for d in s.default_input_shape),
        "stages": " ".join(s.stage_names),
        **_weights_columns(s),
        "options": ",".join(s.options) or "-",
    } for s in specs]
    return pd.DataFrame(rows)


def _weights_columns(spec) -> dict:
    entries = list(spec.weights.values())

    def joined(values):
        return ", ".join(dict.fromkeys(values)) or "-"

    return {"weights": ", ".join(e.tag if e.dataset == "imagenet" else f"{e.dataset}:{e.tag}" for e in entries) or "-",
            "source": joined(e.origin for e in entries),
            "licence": joined(e.licence or "unstated" for e in entries),
            "top1": ", ".join("-" if e.top1 is None else f"{100 * e.top1:.1f}" for e in entries) or "-"}


def run(args) -> int:
    if args.compare:
        return run_compare(args)
    frame = models_table(args.family)
    if args.format in ("table", "markdown"):
        frame["params"] = frame["params"].map("{:,}".format)
    print_table(frame, args.format)
    return 0


def run_compare(args) -> int:
    from tltoolkit.compare import compare, comparison_figure
    from tltoolkit.evaluate import save_figure

    out = check_output_file(args.out, "--out", (".png",), args.force)
    frame = compare(args.compare, quick=args.quick)
    save_figure(comparison_figure(frame), out)
    if args.format in ("table", "markdown"):
        frame = frame.round({"GMACs": 3, "activation_MB": 1, "latency_ms": 1, "throughput": 1, "top1": 3})
        frame["params"] = frame["params"].map("{:,}".format)
    print_table(frame, args.format)
    print(f"wrote {out}")
    return 0
