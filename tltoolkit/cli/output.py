"""Writing a table the way the user asked: aligned text, CSV or JSON, to stdout."""

from __future__ import annotations

import sys

FORMATS = ("table", "csv", "json", "markdown")


def add_format_argument(parser, default="table") -> None:
    parser.add_argument("--format", choices=FORMATS, default=default, help="output format (default: %(default)s)")


def print_table(frame, fmt: str, stream=None) -> None:
    stream = stream or sys.stdout
    if fmt == "csv":
        frame.to_csv(stream, index=False)
    elif fmt == "json":
        stream.write(frame.to_json(orient="records", indent=2) + "\n")
    elif fmt == "markdown":
        stream.write(markdown_table(frame))
    else:
        stream.write(frame.to_string(index=False) + "\n")


def markdown_table(frame) -> str:
    # pandas' to_markdown needs the optional `tabulate` package; a pipe table is four lines of code.
    def row(cells):
        return "| " + " | ".join(str(c) for c in cells) + " |\n"

    return row(frame.columns) + row(["---"] * len(frame.columns)) + "".join(
        row(values) for values in frame.itertuples(index=False))
