"""The class index: class name -> integer id, the meaning of each output unit of a model.

Ids are given once and never change: the first index sorts the names (as Keras'
`image_dataset_from_directory` does, so ids agree with it); classes seen later are appended, sorted
among themselves. Saved as JSON `{"name": id, ...}` in id order.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping

from tltoolkit.data.files import atomic_write_bytes
from tltoolkit.errors import TltoolkitError


def extend_class_index(names: Iterable[str], existing: Mapping[str, int] | None = None) -> dict[str, int]:
    """`existing` with every new name appended (new ids after the old ones, old ids unchanged)."""
    index = _validated(dict(existing or {}), "the given class index")
    for name in sorted(set(names) - set(index)):
        index[name] = len(index)
    return index


def save_class_index(index: Mapping[str, int], path) -> None:
    index = _validated(dict(index), "the class index to save")
    text = json.dumps(dict(sorted(index.items(), key=lambda item: item[1])), indent=2, ensure_ascii=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def load_class_index(path) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as file:
            index = json.load(file)
    except FileNotFoundError:
        raise TltoolkitError(f"no class index at {path}; `scan` creates one from the class folders") from None
    except (OSError, ValueError) as error:
        raise TltoolkitError(f"cannot read class index {path}: {error}; it should be JSON like {{\"cat\": 0, \"dog\": 1}}") from None
    if not isinstance(index, dict):
        raise TltoolkitError(f"class index {path} is a JSON {type(index).__name__}; it should be an object like {{\"cat\": 0, \"dog\": 1}}")
    return _validated(index, f"class index {path}")


def _validated(index: dict, what: str) -> dict[str, int]:
    if any(not isinstance(name, str) or isinstance(i, bool) or not isinstance(i, int) for name, i in index.items()):
        raise TltoolkitError(f"{what} must map class names to integer ids, like {{\"cat\": 0, \"dog\": 1}}")
    if sorted(index.values()) != list(range(len(index))):
        raise TltoolkitError(f"{what} has ids {sorted(index.values())}; ids must be 0..{len(index) - 1}, each used once")
    return index
