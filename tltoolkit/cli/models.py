"""`tltoolkit models`: every registered architecture with its size, cost, input and stages."""

from __future__ import annotations

from tltoolkit.cli.output import add_format_argument, print_table


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the architectures", description=__doc__)
    parser.add_argument("--family", help="only this family (e.g. resnet, vgg, inception)")
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
        "weights": ",".join(s.weights) or "-",
        "options": ",".join(s.options) or "-",
    } for s in specs]
    return pd.DataFrame(rows)


def run(args) -> int:
    frame = models_table(args.family)
    if args.format in ("table", "markdown"):
        frame["params"] = frame["params"].map("{:,}".format)
    print_table(frame, args.format)
    return 0
