"""The README's architecture table is generated from the registry and must not drift from it."""

import io
import re
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


def test_architecture_doc_names_only_modules_that_exist():
    root = README.parent
    doc = (root / "docs" / "architecture.md").read_text()
    assert "docs/architecture.md" in README.read_text()
    named = set(re.findall(r"(?<![\w./])((?:[a-z_]+/)+(?:[a-z_]+\.py)?|[a-z_]+\.py)(?![\w/])", doc))
    missing = [path for path in named if not (root / path).exists() and not (root / "tltoolkit" / path).exists()]
    assert len(named) > 40 and not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_imports_between_modules_form_no_cycle_but_load_models_registrations():
    """docs/architecture.md's rule: the packages and top-level modules import one another without a
    cycle, except `architectures.api.load_model` importing the modules that register layers."""
    import ast
    import graphlib

    graph = {}
    for path in (README.parent / "tltoolkit").rglob("*.py"):
        unit = path.relative_to(README.parent / "tltoolkit").parts[0].removesuffix(".py")
        if unit in ("cli", "__main__", "__init__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                       [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            for module in modules:
                parts = module.split(".")
                if parts[0] == "tltoolkit" and len(parts) > 1 and parts[1] != unit and not (
                        path.name == "api.py" and unit == "architectures" and isinstance(node, ast.Import)):
                    graph.setdefault(unit, set()).add(parts[1])
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError naming the cycle
