"""What the training runs and evaluations write for people: markdown tables, confusion matrices, the
contact sheet of chosen images, and figures saved atomically.

Figures are `matplotlib.figure.Figure` objects, never pyplot's: that leaves the caller's backend (a
notebook's) alone.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tltoolkit.data.files import atomic_path


def markdown_table(frame: pd.DataFrame) -> str:
    # pandas' to_markdown needs the optional `tabulate` package; a pipe table is four lines of code.
    def row(cells):
        return "| " + " | ".join(str(c) for c in cells) + " |\n"

    return row(frame.columns) + row(["---"] * len(frame.columns)) + "".join(
        row(values) for values in frame.itertuples(index=False))


# Installed fonts with CJK glyphs, tried after matplotlib's own DejaVu Sans (which has none), so class
# names in Chinese or Japanese render instead of as boxes wherever one of them is installed.
FALLBACK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei",
                  "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN", "Microsoft YaHei", "SimHei",
                  "PingFang SC", "Hiragino Sans GB", "Arial Unicode MS")


def save_figure(figure, path) -> Path:
    """Every figure tltoolkit writes: laid out (here, once its fonts are final) and saved as a PNG,
    atomically. A glyph no installed font has is drawn as a box without matplotlib's per-glyph warning
    reaching the user."""
    from matplotlib.text import Text

    fallback = _installed_fallback_fonts()
    if fallback:
        for text in figure.findobj(Text):
            text.set_fontfamily([*text.get_fontfamily(), *fallback])
    with atomic_path(path) as temporary, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        if figure.get_layout_engine() is None:  # a figure made with its own (constrained) layout keeps it
            figure.tight_layout()
        figure.savefig(temporary, format="png", dpi=100)
    return Path(path)


@functools.cache
def _installed_fallback_fonts() -> tuple[str, ...]:
    """The `FALLBACK_FONTS` matplotlib finds installed, looked up once a process."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return tuple(name for name in FALLBACK_FONTS if name in installed)


def confusion_matrix(truth, predicted, classes: int, normalize: bool = False) -> np.ndarray:
    """`[true, predicted]` counts; normalised: each true class's row sums to 1 (0 without images)."""
    truth, predicted = np.asarray(truth, int), np.asarray(predicted, int)
    counts = np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    if not normalize:
        return counts
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def confusion_figure(matrix: np.ndarray, class_names, title: str, normalize: bool = False):
    """A confusion matrix as a figure (true classes down, predictions across); cells are written in
    when there are at most 30 classes."""
    from matplotlib.figure import Figure

    n = len(class_names)
    side = min(20.0, max(5.0, 2.5 + 0.45 * n))
    figure = Figure(figsize=(side + 1.5, side))
    axes = figure.add_subplot()
    shown = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, matrix.max()))
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(n)
    axes.set_xticks(ticks, class_names, rotation=90 if n > 6 else 0)
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if n <= 30:
        threshold = (1 if normalize else max(1, matrix.max())) / 2
        for (row, column), value in np.ndenumerate(matrix):
            axes.text(column, row, f"{value:.2f}" if normalize else str(value), ha="center", va="center",
                      fontsize=8, color="white" if value > threshold else "black")
    return figure


def contact_sheet(rows: pd.DataFrame, title: str, columns: int = 4, images=None):
    """The images of `rows` (path, decoder, label, predicted, probability) in a grid, each titled with
    its true and predicted labels; mistakes in red. `images`: arrays to show instead of the files (e.g.
    Grad-CAM overlays), one per row."""
    from matplotlib.figure import Figure

    from tltoolkit.pipeline import decode_image_file  # TensorFlow, only when a sheet is drawn

    count = max(1, len(rows))
    columns = min(columns, count)
    lines = -(-count // columns)
    figure = Figure(figsize=(2.6 * columns, 2.9 * lines + 0.4))
    figure.suptitle(title)
    for position, row in enumerate(rows.itertuples(index=False), start=1):
        axes = figure.add_subplot(lines, columns, position)
        axes.imshow(decode_image_file(row.path, row.decoder or "tf") if images is None else images[position - 1])
        axes.set_axis_off()
        wrong = row.label != row.predicted
        axes.set_title(f"true: {row.label}\npred: {row.predicted} ({row.probability:.2f})", fontsize=9,
                       color="tab:red" if wrong else "black")
    return figure


def curves_figure(metrics: pd.DataFrame):
    """Loss and accuracy over every epoch of every run, a dashed line where a phase or run begins."""
    from matplotlib.figure import Figure

    frame = metrics.reset_index(drop=True)
    x = np.arange(1, len(frame) + 1)
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for column, style in ((metric, "-"), (f"val_{metric}", "--")):
            if column in frame and frame[column].notna().any():
                axis.plot(x, frame[column].astype(float), style, marker=".", label=column)
        parts = frame[["run", "phase", "trial"]].fillna("")
        starts = frame.index[(parts != parts.shift()).any(axis=1)]
        for start in starts:
            axis.axvline(start + 0.5, color="grey", linestyle=":", linewidth=1)
            run, phase, trial = parts.loc[start]
            axis.annotate(f"run {run} phase {phase} {trial}".strip(), (start + 0.6, 0.98),
                          xycoords=("data", "axes fraction"), fontsize=7, va="top", rotation=90, color="grey")
        axis.set_xlabel("epoch (all phases and runs)")
        axis.set_title(metric)
        axis.legend(fontsize=8)
    return figure
