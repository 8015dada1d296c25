"""`tltoolkit weights convert`: a PyTorch checkpoint (timm .safetensors, torchvision .pth) into our layout.

The file is read without torch and without running its pickle (tltoolkit.architectures.checkpoints),
converted into the architecture's reference classifier and written as a `.weights.h5` (atomically)
that `--weights` and `tltoolkit.build(..., weights=...)` load like any other.
"""

from __future__ import annotations

from pathlib import Path

from tltoolkit.cli.output import check_output_file


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("weights", help="convert PyTorch checkpoints into tltoolkit weights",
                                   description=__doc__)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    convert = actions.add_parser("convert", help="convert a timm .safetensors or torchvision .pth file",
                                 description=__doc__)
    convert.add_argument("file", help="the checkpoint (its format is detected from its content)")
    convert.add_argument("--arch", required=True, help="the architecture id (tltoolkit models)")
    convert.add_argument("--tag", help="the published tag the file is (e.g. tv_in1k, cifar100): its hash is "
                         "checked where one is published, its classes converted and its preprocessing reported")
    convert.add_argument("--out", required=True, help="the output file, ending in .weights.h5")
    convert.add_argument("--force", action="store_true", help="replace an existing --out")
    convert.set_defaults(run=run_convert)


def run_convert(args) -> int:
    from tltoolkit.architectures import get_spec
    from tltoolkit.architectures.registry import Checkpoint
    from tltoolkit.architectures.weights import WeightsError, check_hash, convert_file, published_name, weights_entry

    spec = get_spec(args.arch)
    out = check_output_file(args.out, "--out", (".h5",), args.force)
    if not out.name.endswith(".weights.h5"):
        raise WeightsError(f"--out {out} must end in .weights.h5")
    source = Path(args.file).expanduser()
    if not source.is_file():
        raise WeightsError(f"checkpoint {source} does not exist")
    mode, num_classes = spec.preprocessing, spec.num_classes
    if args.tag:
        entry = weights_entry(spec, published_name(args.tag))
        if not isinstance(entry, Checkpoint):
            raise WeightsError(f"{spec.id}'s {args.tag} weights are a Keras file, not a PyTorch checkpoint; "
                               f"pass it as --weights directly")
        check_hash(source, entry.file_hash, entry.url)
        mode, num_classes = entry.preprocessing.mode, entry.num_classes
    convert_file(spec, source, out, num_classes)
    hint = "" if mode == spec.preprocessing else f" with --preprocessing {mode}"
    print(f"wrote {out}: {spec.id}, {source.name} converted; use it as --weights {out}{hint}")
    return 0
