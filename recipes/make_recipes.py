"""Writes the recipe notebooks from their sources, so that every recipe starts the same way.

    python recipes/make_recipes.py           # (re)writes recipes/NN_*.ipynb from recipes/NN_*.py
    python recipes/make_recipes.py --check   # exit 1 if a notebook differs from what this writes

Each recipe's source is a jupytext percent-format script, `recipes/NN_name.py`: a title cell (the heading,
then the introduction), a code cell tagged `parameters` choosing the Colab and the smoke settings, then
the recipe. The notebook adds to it what every recipe shares: an "Open in Colab" badge under the heading,
an install cell (a no-op where tltoolkit is installed) that defines `ROOT` and `run_cli`, and the smoke
switch (`TLTOOLKIT_SMOKE=1`/`0` forces a setting; smoke is the default off Colab) at the top of the
parameters cell. Edit the .py files, not the .ipynb files, and run this script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
COLAB = "https://colab.research.google.com/github/OWNER/REPO/blob/main/recipes/{name}"  # placeholder repo
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

INSTALL = '''\
# Installs tltoolkit where it is missing (Colab); a no-op where it is installed (CI, a checkout).
import importlib.util
import os
import pathlib
import subprocess
import sys

REPO = "https://github.com/OWNER/REPO"  # placeholder: see recipes/README.md
if importlib.util.find_spec("tltoolkit") is None:
    !git clone --quiet --depth 1 {REPO} tltoolkit-repo
    %pip install --quiet ./tltoolkit-repo
    importlib.invalidate_caches()
import tltoolkit


def repository_root() -> pathlib.Path:
    """The checkout holding data/, the embedded sample data."""
    here = pathlib.Path.cwd()
    for folder in (pathlib.Path(tltoolkit.__file__).parents[1], here, *here.parents, here / "tltoolkit-repo"):
        if (folder / "data" / "digits59").is_dir():
            return folder.resolve()
    raise FileNotFoundError("no data/digits59 found: run this notebook from a tltoolkit checkout")


def run_cli(*args):
    """Runs `tltoolkit ARGS` as in a terminal, shows its output, raises if it fails."""
    print("$ tltoolkit", " ".join(args))
    done = subprocess.run([sys.executable, "-m", "tltoolkit", *args], capture_output=True, text=True)
    print(done.stdout + done.stderr)
    done.check_returncode()


ROOT = repository_root()
print("tltoolkit", tltoolkit.__version__, "| sample data in", ROOT / "data")'''

SMOKE_SWITCH = '''\
IN_COLAB = "google.colab" in sys.modules
SMOKE = os.environ.get("TLTOOLKIT_SMOKE", "0" if IN_COLAB else "1") == "1"'''


PARAMETERS_NOTE = ("**Parameters.** On Colab the full settings run; elsewhere (and in CI) a small smoke setting "
                   "that only shows the steps work. Set `TLTOOLKIT_SMOKE=1` or `0` to force one.")


def sources() -> list[Path]:
    return sorted(HERE.glob("[0-9][0-9]_*.py"))


def notebook(source: Path) -> nbformat.NotebookNode:
    """The Colab notebook of one recipe source."""
    book = jupytext.read(source, fmt="py:percent")
    name = source.with_suffix(".ipynb").name
    first = book.cells[:2]
    if len(first) < 2 or first[0].cell_type != "markdown" or not first[0].source.startswith("# ") or (
            first[1].metadata.get("tags") != ["parameters"]):
        sys.exit(f"{source.name}: start with a markdown cell '# Title' and a code cell tagged parameters")
    title, parameters, *recipe = book.cells
    heading, _, intro = title.source.partition("\n\n")
    badge = f"[![Open In Colab]({BADGE})]({COLAB.format(name=name)})"
    cells = [new_markdown_cell(f"{heading}\n\n{badge}\n\n{intro}"), new_code_cell(INSTALL),
             new_markdown_cell(PARAMETERS_NOTE),
             new_code_cell(f"{SMOKE_SWITCH}\n{parameters.source}", metadata=parameters.metadata), *recipe]
    for number, cell in enumerate(cells):
        cell["id"] = f"{name.split('_')[0]}-{number:02d}"  # stable ids: the files change only when cells do
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}, "colab": {"provenance": []}})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report notebooks that differ; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        path = source.with_suffix(".ipynb")
        text = nbformat.writes(notebook(source)) + "\n"
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(text)
            temporary.replace(path)
    orphans = sorted({p.name for p in HERE.glob("*.ipynb")} - {s.with_suffix(".ipynb").name for s in sources()})
    if orphans:
        print(f"no source for {', '.join(orphans)}: add its .py (jupytext --to py:percent) or delete it",
              file=sys.stderr)
        return 1
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python recipes/make_recipes.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
