"""`tltoolkit rank`: which frozen base suits your images best, before fine-tuning any.

    tltoolkit rank --data ./cats --base resnet50 --base vgg16 --base keras:EfficientNetB0 --out rank/
    tltoolkit rank --data data/digits59 --base resnet20_cifar@data/backbone/digits04_resnet20_cifar.weights.h5 \\
        --base resnet20_cifar@none --out rank/

Each --base is BASE[@WEIGHTS] (an architecture id, keras:NAME or a saved .keras base; WEIGHTS as --weights,
which is the default). Per base, on features through the feature cache: k-NN accuracy (cosine, k chosen on
the training split), the linear probe's accuracy (the finetune head sweep) and LogME (You et al. 2021), each
timed, and the base's extraction cost in ms per image. Prints the table (Markdown) and writes rank.csv,
rank.md and rank.png (scores against extraction cost) into --out.
"""

from __future__ import annotations

import argparse
import sys

from tltoolkit.cli.audit import add_common_arguments, feature_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("rank", help="rank frozen bases on a folder (k-NN, linear probe, LogME)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--base", action="append", required=True, help="BASE[@WEIGHTS]; repeat for each base")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(run=run)


def run(args) -> int:
    from tltoolkit.rank import check_outputs, markdown, rank, write_rank

    check_outputs(args.out, args.force)  # before any work
    frame = rank(args.data, args.base, args.weights, log=lambda message: print(message, file=sys.stderr),
                 **feature_options(args))
    write_rank(frame, args.out, args.force)
    print(markdown(frame), end="")
    return 0
