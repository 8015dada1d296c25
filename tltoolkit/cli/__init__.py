"""The `tltoolkit` command: a thin argparse layer over the Python API.

Each subcommand lives in its own module here, exposing `add_parser(subparsers)`, which registers
its parser and sets `run=function(args) -> int`. Errors meant for users are `TltoolkitError`s: one
line on stderr, exit status 2 (with TLTOOLKIT_DEBUG=1: raised, with the full traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from tltoolkit.errors import TltoolkitError, debugging, disk_error

COMMANDS = ["models", "layers", "augment", "scan", "extract", "audit", "rank", "finetune", "predict", "evaluate",
            "calibrate", "export", "weights"]


def _quiet_native_logs() -> None:
    """Hides TensorFlow's native start-up lines (CUDA, oneDNN, XLA) from CLI users.

    Since TF adopted absl logging they go straight to file descriptor 2 and ignore
    TF_CPP_MIN_LOG_LEVEL. So fd 2 points at /dev/null and Python's `sys.stderr` gets its own copy
    of the real stderr: our messages, warnings and tracebacks still show. Set TLTOOLKIT_TF_LOGS=1
    to see everything.
    """
    if os.environ.get("TLTOOLKIT_TF_LOGS"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.stderr.flush()
        real_stderr = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:  # no usable fd 2 (embedded interpreters): nothing to hide
        return
    sys.stderr = os.fdopen(real_stderr, "w", buffering=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tltoolkit", description="Transfer learning for image classification with classic CNNs."
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"tltoolkit.cli.{name}").add_parser(subparsers)
    return parser


def _version() -> str:
    from tltoolkit import __version__

    return f"tltoolkit {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_native_logs()
    try:
        try:
            return args.run(args) or 0
        except Exception as error:  # a full or read-only disk: one line too
            if debugging() or isinstance(error, TltoolkitError) or (disk := disk_error(error)) is None:
                raise
            raise disk from error
    except TltoolkitError as error:
        if debugging():
            error.__suppress_context__ = False  # show the exception the one-line message was made from
            raise
        print(f"tltoolkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
