"""One image file: its content hash, whether it decodes, what it needs to become 8-bit RGB, and which
decoder the pipeline should use for it.

Speed: a file is read once; the SHA-256 and the decode work on the same bytes. JPEGs are decoded in
Pillow's draft mode (libjpeg's DCT scaling to 1/8 size): every byte of the entropy-coded data is
still read, so a truncated file still fails, at a fraction of a full decode's cost. Results are
cached by the scan (path, size, mtime), so a file is probed again only when it changes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tltoolkit.errors import one_line

# Extensions a scan looks at; any other file (and any hidden file) is ignored. HEIC/AVIF are listed so
# that phone photos are reported as `unsupported format` instead of silently skipped.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".heic", ".heif", ".avif",
})

# What tf.io.decode_image(channels=3, expand_animations=False) decodes to the right pixels, checked
# per mode by tests/test_data.py::test_tf_rows_decode_with_tensorflow_like_pil.
_TF_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"}
_ORIENTATION = 0x0112
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_SNIFFED = {b"ftypheic": "HEIC", b"ftypheix": "HEIC", b"ftypmif1": "HEIF", b"ftypavif": "AVIF"}
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF")
# Pillow warns (with its site-packages path) between MAX_IMAGE_PIXELS and twice that, where it refuses;
# the scan records the size and quarantines what Pillow refuses, so the warning says nothing to users.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MAX_FILE_BYTES = 1 << 30  # larger files are quarantined unread: no image a classifier takes is 1 GiB
# At most this many pixels are decoded per image (8192x8192: 192 MiB of uint8 RGB, ~1 GiB with the
# resize's float32 copies); the scan quarantines larger images and the pipeline refuses them, since a
# PNG or GIF of 3 MB on disk can decode to gigabytes. JPEGs count at the DCT scale that decodes them.
MAX_DECODED_PIXELS = 1 << 26
TOO_MANY_PIXELS = "too many pixels"


def _tf_decodes_webp() -> bool:
    """tf.io.decode_image reads WebP from TensorFlow 2.18 on; older versions go through Pillow."""
    try:
        major, minor = importlib.metadata.version("tensorflow").split(".")[:2]
    except importlib.metadata.PackageNotFoundError:
        return False
    return (int(major), int(minor)) >= (2, 18)


TF_DECODES_WEBP = _tf_decodes_webp()


def quarantined(reason: str, detail: str = "", size: int = 0, sha256: str = "") -> dict:
    return {"sha256": sha256, "size": size, "status": "quarantined", "reason": reason, "detail": detail,
            "decoder": "", "format": "", "width": 0, "height": 0}


def probe_file(path: str) -> dict:
    """The scan's facts about one file, as a dict of table columns; never raises for a bad file, never
    blocks or reads without end: only regular files (links resolved) of at most MAX_FILE_BYTES are read."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # /dev/zero reads forever, a FIFO blocks forever
            return quarantined("not a regular file", _kind(info.st_mode))
        if info.st_size > MAX_FILE_BYTES:
            return quarantined("too large", f"{info.st_size} bytes, more than {MAX_FILE_BYTES}", info.st_size)
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return quarantined("missing", "file not found")
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        return quarantined("unreadable", getattr(error, "strerror", None) or one_line(error))
    if len(data) > MAX_FILE_BYTES:  # grew since the stat
        return quarantined("too large", f"more than {MAX_FILE_BYTES} bytes", len(data))
    return probe_bytes(data)


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")]
    return next((what for test, what in kinds if test(mode)), "not a file")


def probe_bytes(data: bytes) -> dict:
    if not data:
        return quarantined("empty", "0 bytes")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        sniffed = _SNIFFED.get(data[4:12])
        if sniffed:
            return quarantined("unsupported format", f"{sniffed} (convert to JPEG or PNG)", len(data), sha256)
        if data.startswith(_IMAGE_MAGIC):
            return quarantined("unreadable", "image header is damaged", len(data), sha256)
        return quarantined("not an image", "no known image signature", len(data), sha256)
    except Image.DecompressionBombError as error:
        return quarantined(TOO_MANY_PIXELS, one_line(error), len(data), sha256)
    except Exception as error:  # Pillow raises many types for hostile headers
        return quarantined(_failure_reason(error), one_line(error), len(data), sha256)
    # Before anything is decoded; JPEGs at 1/8 scale, the least the pipeline may decode of them.
    pixels = decoded_pixels(image.format, *image.size, ratio=8)
    if pixels > MAX_DECODED_PIXELS:
        return quarantined(TOO_MANY_PIXELS, too_many_pixels(image.size, pixels), len(data), sha256)
    try:
        conversions, needs_pil = _plan(image, data)
        width, height = image.size if _orientation(image) < 5 else image.size[::-1]  # before draft shrinks it
        if image.format in ("JPEG", "MPO"):
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        if _has_transparency(image):
            conversions.append("alpha-composited")
            needs_pil = True
        if needs_pil:
            to_rgb(image)  # the pipeline will do this; prove it works now
    except Exception as error:
        return quarantined(_failure_reason(error), one_line(error), len(data), sha256)
    return {"sha256": sha256, "size": len(data), "status": "converted" if conversions else "ok",
            "reason": ",".join(conversions), "detail": "", "decoder": "pil" if needs_pil else "tf",
            "format": image.format or "", "width": width, "height": height}


def decoded_pixels(fmt, width, height, ratio: int = 1) -> int:
    """The pixels of an image's decode: a JPEG's at DCT scale 1/`ratio` (libjpeg rounds up), others' in full."""
    if fmt not in ("JPEG", "MPO"):
        ratio = 1
    return -(-width // ratio) * -(-height // ratio)


def too_many_pixels(size, pixels: int) -> str:
    """Why an image is refused, and the fix, for a detail column or an error message."""
    return (f"{size[0]}x{size[1]} decodes to {pixels} pixels, more than MAX_DECODED_PIXELS ({MAX_DECODED_PIXELS}, "
            f"tltoolkit.data.probe); downscale it")


def _plan(image: Image.Image, data: bytes) -> tuple[list[str], bool]:
    """The conversions an image needs to become 8-bit RGB, and whether TensorFlow's decoder would get
    them wrong (so the pipeline must use Pillow)."""
    mode, fmt = image.mode, image.format
    conversions: list[str] = []
    needs_pil = fmt not in _TF_FORMATS or (fmt == "WEBP" and not TF_DECODES_WEBP)
    if _orientation(image) in range(2, 9):
        conversions.append("exif-rotated")  # TF's decoders ignore EXIF
        needs_pil = True
    if mode == "CMYK":
        conversions.append("cmyk")  # Adobe's inverted CMYK needs Pillow's handling
        needs_pil = True
    elif mode in ("L", "LA", "1") or mode in _HIGH_BIT_MODES:
        conversions.append("grayscale")
    elif mode in ("P", "PA"):
        conversions.append("palette")
    elif mode not in ("RGB", "RGBA"):
        conversions.append(f"mode {mode}")
        needs_pil = True
    if mode in _HIGH_BIT_MODES or (fmt == "PNG" and data[24:25] == b"\x10"):  # IHDR bit depth
        conversions.append("16-bit")  # TF scales 16-bit PNGs to 8 bits itself; Pillow reads RGB ones as 8
        needs_pil |= fmt != "PNG"
    if fmt == "BMP" and mode != "RGB":
        needs_pil = True  # TF's BMP decoder reads palette indices as grey levels
    if getattr(image, "is_animated", False):
        conversions.append("first-frame")
        needs_pil = True  # TensorFlow's GIF decoder decodes every frame before keeping the first
    return conversions, needs_pil


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block: show the pixels as stored
        return 1


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in _ALPHA_MODES:
        return image.getchannel("A").getextrema()[0] < 255
    return "transparency" in image.info


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, upright: EXIF orientation applied, 16-bit scaled (not clipped), CMYK and palette
    converted, transparency composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_BIT_MODES:
        array = np.asarray(image, dtype=np.float64)
        if image.mode != "F":
            array = array / 257.0  # 0..65535 -> 0..255
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path, min_side: int | None = None) -> np.ndarray:
    """The pixels of an image file as the pipeline should see them: uint8, (height, width, 3), upright.
    The pipeline calls this (in a tf.numpy_function) for rows whose `decoder` is `pil`. `min_side`
    lets a JPEG decode at a reduced DCT scale that keeps at least that many pixels per side."""
    if isinstance(path, bytes):  # tf.numpy_function passes strings as bytes
        path = os.fsdecode(path)
    with Image.open(path) as image:
        if min_side:
            image.draft(image.mode, (min_side, min_side))
        return np.asarray(to_rgb(image))


def header_facts(path: str) -> tuple[str, int, int, bool]:
    """(format, width, height, animated) from a file's header, decoding nothing; ("", 0, 0, False)
    when it has none Pillow reads. Pillow's own bomb check raises `Image.DecompressionBombError`."""
    try:
        with Image.open(path) as image:
            return image.format or "", image.width, image.height, bool(getattr(image, "is_animated", False))
    except Image.DecompressionBombError:
        raise
    except Exception:  # the decode will say what is wrong with it
        return "", 0, 0, False


def _failure_reason(error: Exception) -> str:
    message = str(error).lower()  # Pillow says "image file is truncated" and "Truncated File Read"
    return "truncated" if "truncated" in message or "broken data stream" in message else "unreadable"
