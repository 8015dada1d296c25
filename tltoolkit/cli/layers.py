"""`tltoolkit layers ARCH`: the stages of an architecture, their layer ranges, output shapes and the
trainable parameter count if frozen until each stage (`--freeze-until STAGE` trains STAGE and all
after it)."""

from __future__ import annotations

from tltoolkit.cli.output import add_format_argument, print_table


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("layers", help="show stages and freeze points", description=__doc__)
    parser.add_argument("arch", help="architecture id (see `tltoolkit models`) or keras:NAME")
    parser.add_argument("--image-size", type=int, help="input size (default: the architecture's)")
    parser.add_argument("--all-layers", action="store_true", help="list every layer, not only stages")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def stages_table(arch: str, image_size: int | None = None, all_layers: bool = False):
    import pandas as pd

    from tltoolkit.architectures import build, get_spec
    from tltoolkit.architectures.api import KERAS_PREFIX
    from tltoolkit.architectures.stages import (
        NONE, StageRange, spec_stage_ranges, trainable_counts_per_stage)

    keras_app = arch.startswith(KERAS_PREFIX)
    spec = None if keras_app else get_spec(arch)
    shape = None
    if image_size:
        shape = (image_size, image_size, 3 if spec is None else spec.channels)
    model = build(arch, input_shape=shape)
    if spec is None or all_layers:
        # Without registered stages, every layer is a freeze point.
        ranges = [StageRange(layer.name, i, i + 1) for i, layer in enumerate(model.layers)][1:]
    else:
        ranges = spec_stage_ranges(model, spec)
    counts = trainable_counts_per_stage(model, ranges)
    rows = [{"freeze-until": NONE, "layers": f"0-{len(model.layers) - 1}", "first layer": model.layers[0].name,
             "output": "", "trainable params": counts[NONE]}]
    for r in ranges:
        last = model.layers[r.stop - 1] if r.stop > r.start else None
        rows.append({
            "freeze-until": r.name,
            "layers": f"{r.start}-{r.stop - 1}" if last else "(empty)",
            "first layer": model.layers[r.start].name if last else "-",
            "output": str(tuple(last.output.shape[1:])) if last else "-",
            "trainable params": counts[r.name],
        })
    return pd.DataFrame(rows)


def run(args) -> int:
    frame = stages_table(args.arch, args.image_size, args.all_layers)
    if args.format == "table":
        frame["trainable params"] = frame["trainable params"].map("{:,}".format)
    print_table(frame, args.format)
    return 0
