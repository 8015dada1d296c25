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


def test_every_declared_dependency_is_used():
    """No dependency installed for nothing: each install_requires entry is imported by the package
    (tensorboard through keras.callbacks.TensorBoard). keras-cv left: see the README's augmentation."""
    import configparser
    import re

    root = README.parent
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    declared = [re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower()
                for line in config["options"]["install_requires"].split("\n") if line.strip()]
    used_as = {"tensorflow-datasets": r"import tensorflow_datasets", "pillow": r"from PIL import",
               "tensorboard": r"keras\.callbacks\.TensorBoard\("}
    code = "\n".join(path.read_text() for path in (root / "tltoolkit").rglob("*.py"))
    unused = [name for name in declared
              if not re.search(used_as.get(name, rf"^\s*(import|from) {re.escape(name)}\b"), code, re.M)]
    assert "keras" in declared and not unused, f"declared but never imported: {unused}"
