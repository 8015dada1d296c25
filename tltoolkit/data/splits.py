"""Stable train/validation splits: an image's split is decided by its content hash.

Rule, per image: `validation` iff the first 64 bits of its SHA-256, read as a fraction of 2**64, fall
below `val_split`. The split depends on nothing but the image's bytes, so adding images never moves
an image that is already there, and a copy of the file anywhere gets the same split.

Small classes: by chance a class may get no validation image (a 5-image class at 0.2 does one time
in three). Such a class (at least 2 images) sends its lowest-hash image to validation. That choice
can only ever move an image from validation back to training (when the class later gets an image
below the threshold, or one with a lower hash), never from training to validation, so a model
never gets evaluated on an image it trained on. Images with a split given by the source (a manifest's
`split` column) keep it and count towards their class.
"""

from __future__ import annotations

import pandas as pd

from tltoolkit.errors import TltoolkitError

TRAIN, VALIDATION = "train", "validation"


def hash_fraction(sha256: str) -> float:
    """The image's position in [0, 1), uniform over images."""
    return int(sha256[:16], 16) / 2**64


def check_val_split(val_split: float) -> float:
    if not 0 <= val_split < 1:
        raise TltoolkitError(f"--val-split {val_split} is outside [0, 1); use e.g. 0.2 for 20% validation")
    return float(val_split)


def assign_splits(rows: pd.DataFrame, val_split: float) -> pd.Series:
    """The split of each row of `rows` (columns `label`, `sha256`, `split`: given or empty)."""
    val_split = check_val_split(val_split)
    position = rows["sha256"].map(hash_fraction)
    given = rows["split"] != ""
    split = rows["split"].where(given, (position < val_split).map({True: VALIDATION, False: TRAIN}))
    if val_split == 0:
        return split
    for _, members in rows.groupby("label", sort=False):
        free = members.index[~given[members.index]]
        if len(members) >= 2 and len(free) and not (split[members.index] == VALIDATION).any():
            split[position[free].idxmin()] = VALIDATION
    return split
