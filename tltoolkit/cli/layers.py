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


def stages_table(arch: str, image_size: int | None = None, all_layers: bool = False):
    import pandas as pd

    from tltoolkit.architectures import build
    from tltoolkit.architectures.bases import build_base, resolve_base
    from tltoolkit.architectures.stages import NONE, StageRange, spec_stage_ranges, trainable_counts_per_stage

    # A saved model's stages do not depend on its preprocessing, which it does not record.
    spec = resolve_base(arch, image_size, "none" if arch.endswith(".keras") else None)
    if spec.derived:  # keras:NAME, a saved .keras: the base its stages were derived on
        model = build_base(spec, None, image_size or spec.default_size)
    else:
        model = build(arch, input_shape=image_size and (image_size, image_size, spec.channels))
    if all_layers:
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
