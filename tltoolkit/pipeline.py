"""The tf.data input pipeline: a scanned table of image files -> batches of raw RGB pixels.

What runs where:
- On the host CPU, inside tf.data (parallel, AUTOTUNE): read the file, decode it, resize it to the
  model's input size, batch, prefetch. Files the scan marked `decoder="pil"` (EXIF orientation, CMYK,
  16-bit, alpha, palette) decode through `tltoolkit.data.load_rgb` (PIL) in a `tf.numpy_function`; all
  others stay in TF ops, which run without the GIL.
- On the accelerator, inside the model: augmentation (`tltoolkit.augment`, training only) and the
  architecture's preprocessing (`tltoolkit.architectures.preprocessing`). So the pipeline's output is
  raw 0..255 pixels, and an exported model takes raw images.
- With a visible GPU, batches are prefetched to it (`prefetch_to_device`), overlapping the host-to-device
  copy with compute.

Large JPEGs are decoded at a reduced DCT scale (1/2, 1/4, 1/8) when the result still covers the target
size: a 4000x3000 photo bound for 224x224 decodes ~8x faster, and the DCT scaling is itself a clean
downsample. The final resize is antialiased where it shrinks an image 2x or more. Both decisions are
made ahead of time, in NumPy, from the scan's facts (`format`, `width`, `height`), and the graph holds
only the decoders the table needs: a folder of small images pays nothing for them, and keeps pace with
`keras.utils.image_dataset_from_directory` (`benchmarks/pipeline.py`). Tables without those facts
(not from a scan) have each file's header read first, with Pillow, which decodes nothing.

Memory is bounded ahead of time too: no image decodes to more than `MAX_DECODED_PIXELS` (the table
is refused, naming the file, before anything is decoded; the scan quarantines such files), and fewer
images decode in parallel when they are large, so that at most `MAX_PIXELS_IN_FLIGHT` are decoded at
once (peak memory ~ parallel decodes x their pixels).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from tltoolkit.data.probe import MAX_DECODED_PIXELS, TOO_MANY_PIXELS, header_facts, too_many_pixels
from tltoolkit.errors import TltoolkitError, one_line

RESIZE_POLICIES = ("center_crop", "stretch", "pad")
DECODERS = ("tf", "pil")
DTYPES = ("uint8", "float32")
JPEG_SCALES = (1, 2, 4, 8)  # the DCT scale denominators libjpeg supports
# Four of the largest images at once (~4 GiB with the resize's float32 copies); as many photos as cores.
MAX_PIXELS_IN_FLIGHT = 4 * MAX_DECODED_PIXELS


def image_dataset(table, image_size, batch_size: int = 32, resize: str = "center_crop", shuffle: bool = False,
                  seed: int | None = None, deterministic: bool = False, repeat: bool = False,
                  dtype: str = "uint8", with_labels: bool = True, drop_remainder: bool = False):
    """A `tf.data.Dataset` of `(images, label_ids)` batches (or images alone with `with_labels=False`).

    `table` is the scan's DataFrame; it needs `path` and `label_id` (`label_id` only with labels), and
    `decoder` (`tf` or `pil`, default `tf`). Images are `[B, H, W, 3]` in `dtype` (`uint8`, or `float32`
    still in 0..255), label ids `int32`. `resize`: `center_crop` (shorter side to the target, then the
    centre; what pretrained nets expect), `stretch` (ignore the aspect ratio) or `pad` (fit inside,
    black borders). `deterministic=True` keeps the table's order (or the seeded shuffle's order) at
    some cost in throughput; otherwise parallel decoding may deliver elements out of order.
    """
    import tensorflow as tf

    size = _image_size(image_size)
    _check_choice("resize", resize, RESIZE_POLICIES)
    _check_choice("dtype", dtype, DTYPES)
    if batch_size < 1:
        raise TltoolkitError(f"batch_size must be at least 1, got {batch_size}")
    columns = _columns(table, with_labels)
    table = _with_header_facts(table)
    routes = _routes(table, size)
    largest = _check_pixels(table, _decoded_pixels(table, size, routes))
    cores = os.cpu_count() or 1  # what AUTOTUNE gives without the autotuner (`dataset_options`)
    parallel = tf.data.AUTOTUNE if largest * cores <= MAX_PIXELS_IN_FLIGHT else max(1, MAX_PIXELS_IN_FLIGHT // largest)
    used = np.unique(routes)  # the graph holds only the decoders this table needs
    if len(used) > 1:
        columns["route"] = np.searchsorted(used, routes).astype("int32")
    antialias = None if _may_need_antialias(table, size, resize, routes) else False

    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        # Shuffling the file names (not the decoded images) keeps the buffer tiny: the whole table fits.
        dataset = dataset.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def load(row):
        decoders = [_DECODERS[route] for route in used]
        image = decoders[0](row["path"], size) if len(used) == 1 else tf.switch_case(
            row["route"], [lambda d=d: d(row["path"], size) for d in decoders])
        image = _resize(image, size, resize, antialias)
        # Bilinear resampling (antialiased or not) averages pixels: it leaves 0..255 only by float
        # rounding, which the uint8 cast's rounding absorbs.
        if dtype == "uint8":
            # Per image, inside the parallel map: batching then copies a quarter of the bytes, and no
            # second pass over the batch is needed (measured ~15% faster than a per-batch cast).
            # Rounds half up (the cast truncates), as the exported serving model does (export.py).
            image = tf.cast(image + 0.5, tf.uint8)
        else:
            image = tf.clip_by_value(image, 0.0, 255.0)
        return (image, row["label"]) if with_labels else image

    dataset = dataset.map(load, num_parallel_calls=parallel, deterministic=deterministic)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.with_options(dataset_options(deterministic))
    if tf.config.list_logical_devices("GPU"):
        # Must be the last transformation; the buffer size is tuned by tf.data.
        return dataset.apply(tf.data.experimental.prefetch_to_device("/gpu:0"))
    return dataset.prefetch(tf.data.AUTOTUNE)


def dataset_options(deterministic: bool = False):
    """The `tf.data.Options` of tltoolkit's input pipelines. Without the autotuner, AUTOTUNE means one
    parallel call per CPU core and a fixed prefetch buffer: the autotuner's own work competed with
    the model for the CPU (feature extraction of ResNet-50 on 2 cores fell from 24 to 18.6 img/s in
    every other run with it, never without it; the pipeline alone ran no slower)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False
    return options


def decode_image_file(path, decoder: str = "tf") -> np.ndarray:
    """One image file as a `[H, W, 3]` uint8 RGB array, decoded the way the pipeline decodes it."""
    _check_choice("decoder", decoder, DECODERS)
    if decoder == "pil":
        from tltoolkit.data import load_rgb

        return load_rgb(str(path))
    import tensorflow as tf

    return _decode_tf(tf.io.read_file(str(path)), None).numpy()


def _image_size(image_size) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise TltoolkitError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return int(size[0]), int(size[1])


def _check_choice(name, value, choices) -> None:
    if value not in choices:
        raise TltoolkitError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")


def _columns(table, with_labels: bool) -> dict:
    """The table's paths and int32 label ids, validated."""
    required = ["path"] + (["label_id"] if with_labels else [])
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise TltoolkitError(f"the image table lacks column(s) {', '.join(missing)}; pass the scan's table "
                             f"(columns path, label_id, decoder)")
    if len(table) == 0:
        raise TltoolkitError("the image table is empty: there are no images to load")
    labels = table["label_id"].to_numpy().astype("int32") if with_labels else np.zeros(len(table), "int32")
    return {"path": table["path"].astype(str).to_numpy(), "label": labels}


def _with_header_facts(table):
    """`table` with `format`, `width` and `height` read from the header of each file whose row lacks
    them, so that its decode is planned and bounded; animated GIFs decode with PIL (TensorFlow's
    decoder decodes every frame before keeping the first)."""
    facts = {"format", "width", "height"} <= set(table.columns)
    unknown = ~((table["width"] > 0) & (table["height"] > 0)).to_numpy() if facts else np.ones(len(table), bool)
    if not unknown.any():
        return table
    paths = table["path"].astype(str).to_numpy()[unknown]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # file reads release the GIL
        try:
            headers = list(pool.map(header_facts, paths))
        except Image.DecompressionBombError as error:  # Pillow's own limit: far over MAX_DECODED_PIXELS
            raise TltoolkitError(f"{TOO_MANY_PIXELS} in an image of the table: {one_line(error)}; downscale it "
                                 f"or scan the files first (the scan quarantines such images)") from None
    table = table.copy()
    decoders = np.array(table["decoder"].fillna("tf") if "decoder" in table.columns else ["tf"] * len(table), object)
    decoders[unknown] = np.where([animated for *_, animated in headers], "pil", decoders[unknown])
    table["decoder"] = decoders
    for position, column in enumerate(("format", "width", "height")):
        values = table[column].to_numpy().copy() if facts else np.zeros(len(table), object if column == "format" else int)
        values[unknown] = [header[position] for header in headers]
        table[column] = values
    return table


def _decoded_pixels(table, size, routes) -> np.ndarray:
    """The pixels each row decodes to: its route's DCT scale applied (PIL's draft mode scales JPEGs
    too, keeping `max(size)` per side); `MAX_DECODED_PIXELS` where its size is unknown."""
    if not {"format", "width", "height"} <= set(table.columns):
        return np.full(len(table), MAX_DECODED_PIXELS)
    height, width = table["height"].to_numpy().astype(np.int64), table["width"].to_numpy().astype(np.int64)
    draft = sum((np.minimum(height, width) // max(size) >= s).astype(int) for s in JPEG_SCALES[1:])
    scale = np.where(routes == PIL, draft, np.where(routes < PROBE, routes, FULL))
    ratio = np.where(table["format"].isin(("JPEG", "MPO")).to_numpy(), np.array(JPEG_SCALES)[scale], 1)
    pixels = -(-height // ratio) * -(-width // ratio)
    return np.where(routes == PROBE, MAX_DECODED_PIXELS, pixels)


def _check_pixels(table, pixels: np.ndarray) -> int:
    """The most pixels a row decodes to; a one-line error naming the first row over the limit."""
    over = np.flatnonzero(pixels > MAX_DECODED_PIXELS)
    if len(over):
        row = table.iloc[over[0]]
        more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
        raise TltoolkitError(f"{row['path']}{more}: {TOO_MANY_PIXELS}: "
                             f"{too_many_pixels((row['width'], row['height']), int(pixels[over[0]]))} "
                             f"or leave it out (the scan quarantines such images)")
    return int(pixels.max())


# How each row is decoded, decided in NumPy from the facts (`decoder`, `format`, `width`, `height`)
# so that per-image work in the graph is only the decode itself. Rows whose header could not be
# read (`PROBE`) read the JPEG header in the graph; Pillow reads every format TF does, so their decode fails.
FULL, JPEG_HALF, JPEG_QUARTER, JPEG_EIGHTH, PROBE, PIL = range(6)


def _routes(table, size) -> np.ndarray:
    """Each row's decoder: `FULL` (any format at full size), a JPEG DCT scale, `PROBE` or `PIL`."""
    decoders = table["decoder"].fillna("tf").to_numpy() if "decoder" in table.columns else np.full(len(table), "tf")
    bad = sorted(set(decoders) - set(DECODERS))
    if bad:
        raise TltoolkitError(f"unknown decoder(s) {', '.join(map(repr, bad))} in the table; use tf or pil")
    routes = np.full(len(table), PROBE)
    if {"format", "width", "height"} <= set(table.columns):
        height, width = table["height"].to_numpy(), table["width"].to_numpy()
        known = (height > 0) & (width > 0)
        scale = np.minimum(height // size[0], width // size[1])
        scaled = sum((scale >= s).astype(int) for s in JPEG_SCALES[1:])  # 0 = full size, 1..3 = 1/2..1/8
        jpeg = table["format"].isin(("JPEG", "MPO")).to_numpy()
        routes = np.where(known, np.where(jpeg, scaled, FULL), PROBE)
    return np.where(decoders == "pil", PIL, routes)


def _may_need_antialias(table, size, policy, routes) -> bool:
    """False when no row can reach the antialiasing threshold of `_resize` (a 2x reduction), so the
    graph skips that per-image decision; True when some row might (or its size is unknown)."""
    if (routes >= PROBE).any():
        return True
    ratio = np.array(JPEG_SCALES)[routes]  # FULL, JPEG_HALF.. are 0..3: their DCT scale's index
    height = -(-table["height"].to_numpy() // ratio)  # libjpeg's scaled size rounds up
    width = -(-table["width"].to_numpy() // ratio)
    if policy == "center_crop":  # bounds on the crop window (`_resize` rounds it)
        height, width = (np.minimum(height, width * size[0] / size[1] + 1),
                         np.minimum(width, height * size[1] / size[0] + 1))
    return bool(((height >= 2 * size[0]) | (width >= 2 * size[1])).any())


def _decode_full(path, size):
    import tensorflow as tf

    return _decode_tf(tf.io.read_file(path), None)


def _decode_jpeg_at(ratio):
    def decode(path, size):
        import tensorflow as tf

        return tf.io.decode_jpeg(tf.io.read_file(path), channels=3, ratio=ratio)
    return decode


def _decode_probe(path, size):
    import tensorflow as tf

    return _decode_tf(tf.io.read_file(path), size)


def _decode_pil(path, size):
    import tensorflow as tf

    from tltoolkit.data import load_rgb

    # PIL's JPEG draft mode gives the same DCT-scale speed-up as the JPEG routes.
    image = tf.numpy_function(lambda p: load_rgb(p, min_side=max(size)), [path], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    return image


def _decode_tf(data, size):
    """Decodes with TF: any format TF knows (GIF: first frame), as 3-channel uint8; a JPEG larger than
    `size` in both sides at a reduced DCT scale."""
    import tensorflow as tf

    def any_format():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image

    if size is None:
        return any_format()

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)
        scale = tf.minimum(shape[0] // size[0], shape[1] // size[1])
        index = tf.reduce_sum(tf.cast(scale >= tf.constant(JPEG_SCALES[1:]), tf.int32))
        return tf.switch_case(index, [lambda s=s: tf.io.decode_jpeg(data, channels=3, ratio=s)
                                      for s in JPEG_SCALES])

    return tf.cond(tf.io.is_jpeg(data), jpeg, any_format)


_DECODERS = {FULL: _decode_full, JPEG_HALF: _decode_jpeg_at(2), JPEG_QUARTER: _decode_jpeg_at(4),
             JPEG_EIGHTH: _decode_jpeg_at(8), PROBE: _decode_probe, PIL: _decode_pil}


def _resize(image, size, policy, antialias: bool | None = None):
    """float32 [H, W, 3] in 0..255 from a uint8 image of any size, by `policy`."""
    import tensorflow as tf

    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    if policy == "center_crop":
        # The largest centred window with the target's aspect ratio, then one resize: the same geometry
        # as resizing the shorter side and cropping, with fewer pixels to resize.
        crop_h = tf.minimum(height, tf.cast(tf.round(tf.cast(width * size[0], tf.float32) / size[1]), tf.int32))
        crop_w = tf.minimum(width, tf.cast(tf.round(tf.cast(height * size[1], tf.float32) / size[0]), tf.int32))
        height, width = tf.maximum(crop_h, 1), tf.maximum(crop_w, 1)
        # tf.slice, not tf.image.crop_to_bounding_box: the window is valid by construction, and its
        # runtime shape assertions cost ~5% of the pipeline's throughput.
        image = tf.slice(image, [(shape[0] - height) // 2, (shape[1] - width) // 2, 0], [height, width, 3])
    # Bilinear sampling reaches every source pixel up to a 2x reduction; beyond that, skipped pixels
    # alias, so the (2.5x slower) antialiasing filter runs only there. JPEGs rarely need it after the
    # DCT-scaled decode. `antialias=False`: the caller knows that no image gets there.
    def resized(antialias: bool):
        if policy == "pad":
            return tf.image.resize_with_pad(image, size[0], size[1], antialias=antialias)
        return tf.image.resize(image, size, antialias=antialias)

    if antialias is None:
        image = tf.cond(tf.maximum(height // size[0], width // size[1]) >= 2, lambda: resized(True),
                        lambda: resized(False))
    else:
        image = resized(antialias)
    image.set_shape([size[0], size[1], 3])
    return image
