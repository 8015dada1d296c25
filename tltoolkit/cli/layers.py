"""`tltoolkit layers ARCH`: the stages of an architecture, their layer ranges, output shapes and the
trainable parameter count if frozen until each stage (`--freeze-until STAGE` trains STAGE and all
after it)."""

from __future__ import annotations

from tltoolkit.cli.output import add_format_argument, print_table


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("layers", help="show stages and freeze points", description=__doc__)
    parser.add_argument("arch", help="architecture id (see `tltoolkit models`), keras:NAME (stages derived from "
                        "its graph: one per drop in resolution) or a saved .keras base")
    parser.add_argument("--image-size", type=int, help="input size (default: the architecture's)")
    parser.add_argument("--all-layers", action="store_true", help="list every layer, not only stages")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from tltoolkit.architectures.inspect import stages_table  # builds a model: TensorFlow loads here

    frame = stages_table(args.arch, args.image_size, args.all_layers)
    if args.format == "table":
        frame["trainable params"] = frame["trainable params"].map("{:,}".format)
    print_table(frame, args.format)
    return 0
