"""The second benchmark domain: tools/make_animal_data.py's rules, and the committed data/animals* folders.

(Regenerating the folders needs the animal-mnist package, a `bench` extra, not a test dependency:
`python tools/make_animal_data.py --out /tmp/x` then `diff -r data/animals /tmp/x/animals`.)
"""

from __future__ import annotations

import collections
import io
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_animal_data as animals  # noqa: E402


def test_near_copies_keep_their_first_image_per_class():
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    nudged = distinct[0].copy()
    nudged[0, 0] ^= 1  # one grey level off: a copy
    images = np.stack([distinct[0], distinct[1], distinct[0][:, ::-1], nudged, distinct[2], distinct[0]])
    labels = np.array([0, 0, 0, 0, 0, 1])  # the last is the first image again, in another class
    assert animals.first_of_duplicates(images, labels).tolist() == [0, 1, 4, 5]


def test_layout_is_seeded_disjoint_and_sized():
    labels = np.repeat(np.arange(len(animals.CLASSES)), 12)
    kept = np.arange(len(labels))
    first, second = animals.layout(labels, kept, pool=7, test=3), animals.layout(labels, kept, pool=7, test=3)
    assert first == second
    assert not set(first["animals"]) & set(first["animals-test"])
    for name, per_class in (("animals", 7), ("animals-test", 3)):
        assert collections.Counter(labels[first[name]].tolist()) == {c: per_class for c in range(len(animals.CLASSES))}
    with pytest.raises(SystemExit, match="fewer than --pool 10"):
        animals.layout(labels, kept, pool=10, test=3)


def test_rgb_is_the_grey_image_padded_with_background():
    grey = np.arange(28 * 28, dtype=np.uint8).reshape(1, 28, 28)
    rgb = animals.as_rgb(grey)
    assert rgb.shape == (1, 32, 32, 3)
    assert (rgb[0, 2:30, 2:30, 1] == grey[0]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb[0, :2].max() == rgb[0, :, -2:].max() == 0


def test_the_unpickler_admits_arrays_only():
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    loaded = animals._ArraysOnly(io.BytesIO(pickle.dumps(array))).load()
    assert (loaded == array).all()
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        animals._ArraysOnly(io.BytesIO(pickle.dumps(collections.OrderedDict()))).load()


def test_committed_folders_are_copy_free_disjoint_class_folders_of_32px_rgb():
    canonical, stems = {}, {}
    for name, per_class in (("animals", 150), ("animals-test", 50)):
        files = sorted((ROOT / "data" / name).glob("*/*.png"))
        assert collections.Counter(p.parent.name for p in files) == {c: per_class for c in animals.CLASSES}
        keys = set()
        for path in files:
            with Image.open(path) as image:
                assert image.mode == "RGB" and image.size == (32, 32), path
                pixels = np.asarray(image)[..., 0]
            keys.add(min(pixels.tobytes(), pixels[:, ::-1].tobytes()))  # an image and its mirror: one key
        assert len(keys) == len(files), f"{name} holds exact or mirrored copies"
        canonical[name], stems[name] = keys, {p.stem for p in files}
    assert not canonical["animals"] & canonical["animals-test"]
    assert not stems["animals"] & stems["animals-test"]  # file name = source index
