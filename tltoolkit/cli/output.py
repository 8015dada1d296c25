"""Writing a table the way the user asked: aligned text, CSV or JSON, to stdout."""

from __future__ import annotations

import sys

from tltoolkit.reports import markdown_table

FORMATS = ("table", "csv", "json", "markdown")


def add_format_argument(parser, default="table") -> None:
    parser.add_argument("--format", choices=FORMATS, default=default, help="output format (default: %(default)s)")


def check_output_file(path, flag: str, suffixes, force: bool):
    """The `Path` of an output file named by `flag`, refused (one line) when its suffix is not one of
    `suffixes` or it exists and `force` is not set: checked before the work, never after it."""
    from pathlib import Path

    from tltoolkit.errors import TltoolkitError

    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise TltoolkitError(f"{flag} {path} must end in {' or '.join(suffixes)}")
    if path.exists() and not force:
        raise TltoolkitError(f"{flag} {path} already exists; pass --force to replace it or choose another name")
    return path


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
