"""Figures for people: class names in any script are saved without library warnings reaching the user."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from tltoolkit.reports import confusion_figure, save_figure


def test_cjk_class_names_are_saved_without_glyph_warnings(tmp_path):
    names = ["猫", "狗", "cat"]  # CJK: DejaVu Sans, matplotlib's own font, has none of these glyphs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = save_figure(confusion_figure(np.eye(3), names, "验证集混淆矩阵"), tmp_path / "confusion.png")
    assert not [str(w.message) for w in caught if "Glyph" in str(w.message)]
    assert Image.open(path).size[0] > 100
