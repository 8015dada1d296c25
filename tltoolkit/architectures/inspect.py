"""Tables about the architectures, for people: the registry (`models_table`, what `tltoolkit models`
lists) and a model's stages (`stages_table`, what `tltoolkit layers` shows)."""

from __future__ import annotations

import pandas as pd

from tltoolkit.architectures.api import build
from tltoolkit.architectures.bases import build_base, resolve_base
from tltoolkit.architectures.registry import ArchitectureError, all_specs, close_matches
from tltoolkit.architectures.stages import NONE, StageRange, spec_stage_ranges, trainable_counts_per_stage


def models_table(family=None) -> pd.DataFrame:
    """The registry as a pandas DataFrame: the numbers are the specs' pinned values (tests check
    them against built models), so listing builds nothing."""
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


# What the table says of an architecture without published weights: none exists in timm or torchvision (nor,
# as far as we found, elsewhere); tests/test_torch_parity.py checks the two packages for each such id.
NO_PUBLIC_CHECKPOINT = "no public checkpoint"


def _weights_columns(spec) -> dict:
    entries = list(spec.weights.values())
    if not entries:
        return {"weights": "-", "source": NO_PUBLIC_CHECKPOINT, "licence": "-", "top1": "-"}

    def joined(values):
        return ", ".join(dict.fromkeys(values)) or "-"

    return {"weights": ", ".join(e.tag if e.dataset == "imagenet" else f"{e.dataset}:{e.tag}" for e in entries) or "-",
            "source": joined(e.origin for e in entries),
            "licence": joined(e.licence or "unstated" for e in entries),
            "top1": ", ".join("-" if e.top1 is None else f"{100 * e.top1:.1f}" for e in entries) or "-"}


def stages_table(arch: str, image_size: int | None = None, all_layers: bool = False) -> pd.DataFrame:
    """The stages of `arch` (or every layer) with their layer ranges, output shapes and the trainable
    parameter count when frozen until each (`tltoolkit layers`)."""
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
