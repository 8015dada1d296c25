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


def run(args) -> int:
    from tltoolkit.architectures.inspect import models_table

    if args.compare:
        return run_compare(args)
    frame = models_table(args.family)
    if args.format in ("table", "markdown"):
        frame["params"] = frame["params"].map("{:,}".format)
    print_table(frame, args.format)
    return 0


def run_compare(args) -> int:
    from tltoolkit.compare import compare, comparison_figure
    from tltoolkit.reports import save_figure

    out = check_output_file(args.out, "--out", (".png",), args.force)
    frame = compare(args.compare, quick=args.quick)
    save_figure(comparison_figure(frame), out)
    if args.format in ("table", "markdown"):
        frame = frame.round({"GMACs": 3, "activation_MB": 1, "latency_ms": 1, "throughput": 1, "top1": 3})
        frame["params"] = frame["params"].map("{:,}".format)
    print_table(frame, args.format)
    print(f"wrote {out}")
    return 0
