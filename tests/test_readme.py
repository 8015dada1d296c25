"""The README's architecture table is generated from the registry and must not drift from it."""

import io
from pathlib import Path

from tltoolkit.architectures.inspect import models_table
from tltoolkit.cli.output import print_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_architecture_table_matches_the_registry():
    text = README.read_text()
    start = text.index("<!-- models-table:start -->\n") + len("<!-- models-table:start -->\n")
    end = text.index("<!-- models-table:end -->")
    frame = models_table()
    frame["params"] = frame["params"].map("{:,}".format)
    expected = io.StringIO()
    print_table(frame, "markdown", expected)
    assert text[start:end] == expected.getvalue(), "regenerate with `tltoolkit models --format markdown`"


def test_readme_has_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
