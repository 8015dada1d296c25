"""Plain functions that write real image files of every kind a user's folder holds: good ones,
convertible ones (CMYK, 16-bit, EXIF-rotated, ...) and broken ones. Shared by the data and pipeline
tests; each returns what it wrote so a test can compare against it."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image


def pattern(height=32, width=48, seed=0) -> np.ndarray:
    """A random RGB image whose top-left quadrant is pure red: a wrong orientation shows."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    array[: height // 2, : width // 2] = (255, 0, 0)
    return array


def write_image(path, array, **save_options) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **save_options)
    return str(path)


def write_good_images(folder, count, seed=0, size=(32, 48), ext=".png") -> list[str]:
    """`count` distinct images (different seeds give different bytes, so different hashes)."""
    return [write_image(os.path.join(folder, f"img_{seed}_{i}{ext}"), pattern(*size, seed=seed * 100_003 + i))
            for i in range(count)]


def write_exif_rotated_jpeg(path, upright) -> str:
    """Stores the pixels turned 90 degrees counter-clockwise with EXIF orientation 6 ("rotate 90 CW
    to display"), as phone cameras do: a viewer that honours EXIF shows `upright`."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return write_image(path, np.ascontiguousarray(np.rot90(upright, k=1)), quality=95, exif=exif.tobytes())


def write_png16(path, array8) -> str:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one, so the chunks are written by hand)."""
    height, width, _ = array8.shape
    pixels = (array8.astype(">u2") * 257).reshape(height, width * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return str(path)


def jpeg_bytes(array, quality=95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_every_kind(folder, seed=0) -> dict[str, tuple[str, str]]:
    """Writes one file of each kind into `folder`; returns {file name: (status, reason)} as a scan
    should report it. Files a scan ignores (hidden, non-image extensions) map to ("ignored", "")."""
    os.makedirs(folder, exist_ok=True)
    join = lambda name: os.path.join(folder, name)  # noqa: E731
    base = lambda k: pattern(seed=10_000_000 + seed * 1000 + k)  # seeds no other helper uses  # noqa: E731
    expected = {}

    write_image(join("rgb.jpg"), base(1), quality=95)
    write_image(join("rgb.png"), base(2))
    write_image(join("rgb.bmp"), base(3))
    write_image(join("rgb.webp"), base(4), lossless=True)
    expected.update({n: ("ok", "") for n in ("rgb.jpg", "rgb.png", "rgb.bmp", "rgb.webp")})

    Image.fromarray(base(5)).convert("L").save(join("gray.jpg"))
    Image.fromarray(base(6)).convert("CMYK").save(join("cmyk.jpg"))
    write_png16(join("rgb16.png"), base(7))
    Image.fromarray((base(8)[..., 0].astype(np.uint16) * 257)).save(join("gray16.png"))
    rgba = np.dstack([base(9), np.full((32, 48), 255, np.uint8)])
    rgba[:, 24:, 3] = 0  # right half transparent: must come out white
    Image.fromarray(rgba).save(join("rgba.png"))
    Image.fromarray(base(10)).convert("P").save(join("palette.gif"))
    Image.fromarray(base(11)).convert("P").save(join("palette.bmp"))
    write_exif_rotated_jpeg(join("exif_rotated.jpg"), base(12))
    expected.update({
        "gray.jpg": ("converted", "grayscale"),
        "cmyk.jpg": ("converted", "cmyk"),
        "rgb16.png": ("converted", "16-bit"),
        "gray16.png": ("converted", "16-bit"),
        "rgba.png": ("converted", "alpha-composited"),
        "palette.gif": ("converted", "palette"),
        "palette.bmp": ("converted", "palette"),
        "exif_rotated.jpg": ("converted", "exif-rotated"),
    })

    open(join("empty.jpg"), "wb").close()
    data = jpeg_bytes(base(13))
    with open(join("truncated.jpg"), "wb") as file:
        file.write(data[: len(data) // 2])
    with open(join("truncated_header.jpg"), "wb") as file:  # cut inside the headers
        file.write(data[:300])
    with open(join("text.png"), "w") as file:
        file.write("this is not a picture\n")
    with open(join("phone.heic"), "wb") as file:
        file.write(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    expected.update({
        "empty.jpg": ("quarantined", "empty"),
        "truncated.jpg": ("quarantined", "truncated"),
        "truncated_header.jpg": ("quarantined", "truncated"),
        "text.png": ("quarantined", "not an image"),
        "phone.heic": ("quarantined", "unsupported format"),
    })

    with open(join(".DS_Store"), "wb") as file:
        file.write(b"\x00\x00\x00\x01Bud1")
    with open(join("notes.txt"), "w") as file:
        file.write("labels are folder names\n")
    expected.update({".DS_Store": ("ignored", ""), "notes.txt": ("ignored", "")})
    return expected


def plant_defects(source, out, flip: float = 0.05, copies: int = 10, per_class: int | None = None, seed: int = 0,
                  strangers=()):
    """A manifest folder made from `source`'s class folders with known defects: a `flip` share of the
    labels changed to another class, `copies` images copied into the other split, resized by 5/4 and
    re-encoded as JPEG, and the `strangers` (image files from elsewhere) under random labels. The images
    are in `out/images/`, the manifest is `out/manifest.csv` (path, label, split: a seeded fifth is
    validation). Returns (manifest, flipped paths, {copy: original}, stranger paths)."""
    import shutil

    import pandas as pd

    rng = np.random.default_rng(seed)
    classes = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)))
    rows = []
    for label in classes:
        names = sorted(os.listdir(os.path.join(source, label)))[:per_class]
        os.makedirs(os.path.join(out, "images", label), exist_ok=True)
        for name in names:
            shutil.copyfile(os.path.join(source, label, name), os.path.join(out, "images", label, name))
            rows.append((os.path.join("images", label, name), label))
    table = pd.DataFrame(rows, columns=["path", "label"])
    table["split"] = np.where(rng.random(len(table)) < 0.2, "validation", "train")
    flipped = rng.choice(len(table), round(flip * len(table)), replace=False)
    for i in flipped:
        table.loc[i, "label"] = rng.choice([c for c in classes if c != table.loc[i, "label"]])
    originals = rng.choice(np.setdiff1d(np.arange(len(table)), flipped), copies, replace=False)
    copied, extra = {}, []
    os.makedirs(os.path.join(out, "images", "copies"), exist_ok=True)
    for i in originals:
        original = table.loc[i]
        with Image.open(os.path.join(out, original["path"])) as image:
            resized = image.convert("RGB").resize((image.width * 5 // 4, image.height * 5 // 4), Image.BILINEAR)
        path = os.path.join("images", "copies", f"copy_{i}.jpg")
        resized.save(os.path.join(out, path), quality=90)
        other = "train" if original["split"] == "validation" else "validation"
        extra.append((path, original["label"], other))
        copied[os.path.join(out, path)] = os.path.join(out, original["path"])
    planted = set()
    for number, stranger in enumerate(strangers):
        path = os.path.join("images", "copies", f"stranger_{number}{os.path.splitext(stranger)[1]}")
        shutil.copyfile(stranger, os.path.join(out, path))
        extra.append((path, rng.choice(classes), "train" if rng.random() < 0.8 else "validation"))
        planted.add(os.path.join(out, path))
    table = pd.concat([table, pd.DataFrame(extra, columns=table.columns)], ignore_index=True)
    manifest = os.path.join(out, "manifest.csv")
    table.to_csv(manifest, index=False)
    return manifest, {os.path.join(out, table.loc[i, "path"]) for i in flipped}, copied, planted
