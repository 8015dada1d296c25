"""Writing a table the way the user asked: aligned text, CSV or JSON, to stdout."""

from __future__ import annotations

import sys

FORMATS = ("table", "csv", "json")


def add_format_argument(parser, default="table") -> None:
    parser.add_argument("--format", choices=FORMATS, default=default, help="output format (default: %(default)s)")


def print_table(frame, fmt: str, stream=None) -> None:
    stream = stream or sys.stdout
    if fmt == "csv":
        frame.to_csv(stream, index=False)
    elif fmt == "json":
        stream.write(frame.to_json(orient="records", indent=2) + "\n")
    else:
        stream.write(frame.to_string(index=False) + "\n")
