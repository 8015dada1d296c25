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
