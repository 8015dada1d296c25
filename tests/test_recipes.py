"""Every recipe notebook in recipes/ is what recipes/make_recipes.py writes from its jupytext source
(recipes/NN_name.py), and runs top to bottom in smoke mode, as CI runs it (with nbclient, in a real
IPython kernel); a new notebook is picked up the moment it is added."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "recipes").glob("*.ipynb"))
SOURCES = sorted((ROOT / "recipes").glob("[0-9][0-9]_*.py"))


def make_recipes():
    spec = importlib.util.spec_from_file_location("make_recipes", ROOT / "recipes" / "make_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_recipes():
    assert {"02_feature_extraction.ipynb", "04_architecture_tour.ipynb"} <= {p.name for p in NOTEBOOKS}
    assert [p.stem for p in SOURCES] == [p.stem for p in NOTEBOOKS], "every notebook has its .py source"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_recipe_source_is_python_in_jupytext_form(source):
    text = source.read_text()
    ast.parse(text, filename=str(source))  # plain Python a linter reads: cells are comments, magics too
    # As jupytext writes it, so opening and saving it in Jupyter (jupytext) does not rewrite it.
    assert jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent") == text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_recipe_has_badge_install_and_parameters_cells(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    title, install = book.cells[0], book.cells[1]
    assert title.cell_type == "markdown"
    assert re.search(rf"\(https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/main/recipes/{re.escape(path.name)}\)",
                     title.source), "the Open in Colab badge must link to this notebook"
    assert install.cell_type == "code" and "find_spec(\"tltoolkit\") is None" in install.source
    parameters = [cell for cell in book.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1 and "SMOKE =" in parameters[0].source


def test_generated_notebooks_are_up_to_date():
    done = subprocess.run([sys.executable, str(ROOT / "recipes" / "make_recipes.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_regenerating_a_notebook_gives_its_committed_cells(source, tmp_path):
    build = make_recipes().notebook
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert build(source).cells == committed.cells
    # The cells do come from the source: an edit there shows in the notebook, the shared header stays.
    edited = tmp_path / source.name
    edited.write_text(source.read_text() + "\n# %%\nprint('edited')\n")
    rebuilt = build(edited).cells
    assert rebuilt[:-1] == committed.cells and rebuilt[-1].source == "print('edited')"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_recipe_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("TLTOOLKIT_SMOKE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the feature cache and scan cache
    book = nbformat.read(path, as_version=4)
    # Runs in an empty folder: the notebook must find the sample data by itself and write only there.
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on any cell error
    outputs = [output for cell in book.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "expected at least one chart"
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.iterdir()}
    assert written <= {"cache", "recipe-output"}, written
    if path.name == "02_feature_extraction.ipynb":
        about = json.loads((tmp_path / "recipe-output/02_feature_extraction/train/_extract.json").read_text())
        assert (about["model"], about["count"]) == ("resnet20_cifar", 718)
    if path.name == "07_audit_and_rank.ipynb":
        import pandas as pd

        out = tmp_path / "recipe-output/07_audit_and_rank"
        assert pd.read_csv(out / "rank/rank.csv")["base"].iloc[0].endswith("digits04_resnet20_cifar.weights.h5")
        found = pd.read_parquet(out / "audit/audit.parquet")
        assert set(found.loc[found["kind"] == "outlier", "path"].map(lambda p: p.split("/")[-1])) >= {"cat.png"}
        assert found["path"].str.contains("flipped_").sum() >= 20, "most of the 35 planted label flips found"
