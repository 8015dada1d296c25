"""The tf.data pipeline on real image files the tests write: shapes, resize geometry, PIL conversions,
order, and errors."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from tltoolkit.errors import TltoolkitError
from tltoolkit.pipeline import RESIZE_POLICIES, decode_image_file, image_dataset

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def solid(path, color, size=(24, 16), fmt=None):
    Image.new("RGB", size, color).save(path, fmt)
    return str(path)


def thirds(path, width=96, height=32):
    """A wide PNG: red left third, green middle third, blue right third."""
    pixels = np.zeros((height, width, 3), np.uint8)
    for i, color in enumerate((RED, GREEN, BLUE)):
        pixels[:, i * width // 3:(i + 1) * width // 3] = color
    Image.fromarray(pixels).save(path)
    return str(path)


def table(paths, decoder="tf"):
    return pd.DataFrame({"path": paths, "label_id": range(len(paths)), "decoder": decoder})


def first_batch(frame, size, **kwargs):
    images, labels = next(iter(image_dataset(frame, size, **kwargs)))
    return images.numpy(), labels.numpy()


@pytest.mark.parametrize("policy", RESIZE_POLICIES)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_shapes_and_dtypes(tmp_path, policy, dtype):
    paths = [solid(tmp_path / f"{i}.png", GREEN, size=(20 + 7 * i, 30)) for i in range(5)]
    batches = list(image_dataset(table(paths), (12, 10), batch_size=2, resize=policy, dtype=dtype))
    # Without deterministic=True, parallel batching may deliver the short last batch early.
    assert sorted(tuple(b[0].shape) for b in batches) == [(1, 12, 10, 3), (2, 12, 10, 3), (2, 12, 10, 3)]
    assert batches[0][0].dtype == dtype and batches[0][1].dtype == tf.int32
    images = np.concatenate([b[0].numpy() for b in batches]).astype(float)
    assert images.max() <= 255 and images.min() >= 0


def test_center_crop_keeps_the_centre(tmp_path):
    images, _ = first_batch(table([thirds(tmp_path / "wide.png")]), 16, resize="center_crop")
    np.testing.assert_array_equal(images[0], np.broadcast_to(GREEN, (16, 16, 3)))


def test_stretch_keeps_everything_and_pad_adds_borders(tmp_path):
    frame = table([thirds(tmp_path / "wide.png")])
    stretched, _ = first_batch(frame, 15, resize="stretch")
    assert tuple(stretched[0, 7, 0]) == RED and tuple(stretched[0, 7, 7]) == GREEN
    assert tuple(stretched[0, 7, 14]) == BLUE
    padded, _ = first_batch(frame, 30, resize="pad")  # 96x32 fits as 30x10: 10 black rows above and below
    assert padded[0, :9].max() == 0 and padded[0, 21:].max() == 0
    assert tuple(padded[0, 15, 0]) == RED and tuple(padded[0, 15, 29]) == BLUE


def test_exif_rotated_photo_comes_out_upright(tmp_path):
    upright = np.zeros((40, 20, 3), np.uint8)  # portrait: red top half, blue bottom half
    upright[:20], upright[20:] = RED, BLUE
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # the sensor's landscape pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = str(tmp_path / "phone.jpg")
    stored.save(path, quality=95, exif=exif)

    assert decode_image_file(path, "tf").shape == (20, 40, 3)  # why such files need the PIL decoder
    pil = decode_image_file(path, "pil")
    assert pil.shape == (40, 20, 3)
    assert np.abs(pil.astype(int) - upright).mean() < 4
    images, _ = first_batch(table([path], decoder="pil"), (40, 20), resize="stretch")
    assert np.abs(images[0, 5, 10].astype(int) - RED).max() < 10
    assert np.abs(images[0, 35, 10].astype(int) - BLUE).max() < 10


def test_pil_conversions_give_three_channels_and_the_right_colours(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(cmyk, quality=95)  # red in CMYK
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.full((16, 16), 128 * 257, np.uint16)).save(gray16)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (0, 0, 0, 0)  # transparent left half: white once composited
    rgba[:, 8:] = (0, 0, 255, 255)  # opaque blue right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)
    gray8 = solid(tmp_path / "gray.png", 0, size=(16, 16))
    Image.new("L", (16, 16), 77).save(gray8)

    expected = {"cmyk.jpg": RED, "gray16.png": (128, 128, 128), "palette.png": GREEN, "gray.png": (77,) * 3}
    paths = [str(tmp_path / name) for name in expected] + [str(tmp_path / "rgba.png")]
    images, _ = first_batch(table(paths, decoder="pil"), 16, resize="stretch", deterministic=True)
    assert images.shape == (5, 16, 16, 3)
    for image, colour in zip(images, expected.values()):
        assert np.abs(image[8, 8].astype(int) - colour).max() <= 3, colour
    assert tuple(images[4, 8, 2]) == WHITE and tuple(images[4, 8, 13]) == BLUE


def test_mixed_tf_and_pil_rows_and_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frame = pd.DataFrame({"path": [str(tmp_path / "anim.gif"), solid(tmp_path / "g.png", GREEN)],
                          "label_id": [0, 1], "decoder": ["tf", "pil"]})
    images, labels = first_batch(frame, 8, deterministic=True)
    assert list(labels) == [0, 1]
    assert np.abs(images[0].astype(int) - RED).max() <= 2 and tuple(images[1, 4, 4]) == GREEN


def test_large_jpeg_decodes_at_reduced_scale_with_the_same_result(tmp_path):
    rng = np.random.default_rng(0)
    smooth = tf.image.resize(rng.integers(0, 256, (1, 12, 16, 3)).astype("float32"), (384, 512)).numpy()[0]
    path = str(tmp_path / "big.jpg")
    Image.fromarray(smooth.astype(np.uint8)).save(path, quality=95)
    images, _ = first_batch(table([path]), 32, resize="stretch")
    full = tf.image.resize(decode_image_file(path).astype("float32"), (32, 32), antialias=True).numpy()
    assert np.abs(images[0].astype(float) - full).mean() < 2


def test_large_reductions_are_antialiased(tmp_path):
    checkerboard = (np.indices((128, 128)).sum(axis=0) % 2 * 255).astype(np.uint8)
    path = str(tmp_path / "fine.png")
    Image.fromarray(checkerboard).convert("RGB").save(path)
    for policy in RESIZE_POLICIES:  # plain bilinear would sample the 0/255 pattern itself
        images, _ = first_batch(table([path]), 20, resize=policy)
        assert np.abs(images[0, 6:10].astype(int) - 128).max() <= 2, policy


def test_deterministic_order_and_seeded_shuffle(tmp_path):
    paths = [solid(tmp_path / f"{i:02d}.png", (i * 10, 0, 0)) for i in range(20)]
    frame = table(paths)
    images, labels = first_batch(frame, 8, batch_size=20, deterministic=True)
    assert list(labels) == list(range(20))
    assert list(images[:, 0, 0, 0]) == [i * 10 for i in range(20)]  # each image travels with its label

    def shuffled(seed):
        return first_batch(frame, 8, batch_size=20, shuffle=True, seed=seed, deterministic=True)[1].tolist()
    assert shuffled(1) == shuffled(1) != list(range(20))
    assert sorted(shuffled(1)) == list(range(20))


def test_repeat_drop_remainder_and_images_only(tmp_path):
    paths = [solid(tmp_path / f"{i}.png", RED) for i in range(3)]
    dataset = image_dataset(table(paths), 8, batch_size=2, repeat=True, drop_remainder=True, with_labels=False)
    shapes = [batch.shape for batch in dataset.take(4)]
    assert shapes == [(2, 8, 8, 3)] * 4


@pytest.mark.parametrize("kwargs, message", [
    ({"frame": pd.DataFrame({"file": ["a.png"]})}, "lacks column.*path, label_id"),
    ({"frame": pd.DataFrame({"path": [], "label_id": []})}, "empty"),
    ({"resize": "squash"}, "unknown resize 'squash'; use one of center_crop, stretch, pad"),
    ({"dtype": "float16"}, "unknown dtype"),
    ({"size": (0, 4)}, "image_size must be"),
    ({"frame": pd.DataFrame({"path": ["a"], "label_id": [0], "decoder": ["cv2"]})}, "decoder.*'cv2'"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    frame = kwargs.pop("frame", pd.DataFrame({"path": ["a.png"], "label_id": [0]}))
    size = kwargs.pop("size", 8)
    with pytest.raises(TltoolkitError, match=message):
        image_dataset(frame, size, **kwargs)


def test_every_usable_file_of_a_scan_reaches_the_pipeline_upright_with_three_channels(tmp_path):
    from images import write_every_kind, write_good_images

    from tltoolkit.data import load_rgb, scan

    write_every_kind(tmp_path / "cats" / "misty")
    write_good_images(tmp_path / "cats" / "tigger", 4)
    usable = scan(tmp_path / "cats", cache_dir=tmp_path / "cache").usable()
    assert (usable["decoder"] == "pil").any() and (usable["decoder"] == "tf").any()
    # The generated images are 32x48, so "stretch" to 32x48 leaves the decoded pixels as they are.
    dataset = image_dataset(usable, (32, 48), batch_size=len(usable), resize="stretch", deterministic=True)
    images, labels = (t.numpy() for t in next(iter(dataset)))
    assert images.shape == (len(usable), 32, 48, 3)
    assert list(labels) == list(usable["label_id"])
    for image, path in zip(images, usable["path"]):
        assert np.abs(image.astype(int) - load_rgb(path)).mean() < 3, path
    upright = images[list(usable["path"].str.endswith("exif_rotated.jpg")).index(True)]
    assert np.abs(upright[:12, :20].astype(int) - RED).max() < 40  # the pattern's red top-left quadrant


def test_decoders_planned_from_the_scan_give_what_per_image_decisions_give(tmp_path):
    """The scan's facts (format, width, height) pick each file's decoder and the antialiasing ahead of
    time; a table without them decides per image in the graph. Both must give the same pixels."""
    from images import pattern, write_exif_rotated_jpeg, write_image

    from tltoolkit.data import scan
    from tltoolkit.pipeline import FULL, JPEG_EIGHTH, JPEG_HALF, PIL, _routes

    folder = tmp_path / "data"
    shapes = {"big.jpg": (384, 512), "medium.jpg": (70, 100), "wide.jpg": (40, 120), "small.png": (20, 30),
              "fine.png": (128, 128)}
    for i, (name, shape) in enumerate(shapes.items()):
        write_image(str(folder / "ab"[i % 2] / name), pattern(*shape, seed=i), quality=95)
    write_exif_rotated_jpeg(str(folder / "b" / "rotated.jpg"), pattern(48, 64))
    scanned = scan(folder, cache_dir=tmp_path / "cache").usable().sort_values("path", ignore_index=True)
    routes = dict(zip(scanned["path"].map(lambda p: p.rsplit("/", 1)[-1]), _routes(scanned, (32, 32))))
    assert routes == {"big.jpg": JPEG_EIGHTH, "medium.jpg": JPEG_HALF, "wide.jpg": FULL, "small.png": FULL,
                      "fine.png": FULL, "rotated.jpg": PIL}
    per_image = scanned[["path", "label_id", "decoder"]]
    for policy in RESIZE_POLICIES:
        tf_rows = scanned[scanned["decoder"] == "tf"]
        for rows in (scanned, tf_rows, tf_rows[~tf_rows["path"].str.endswith(("big.jpg", "fine.png"))]):
            planned, _ = first_batch(rows, 32, batch_size=len(rows), resize=policy, deterministic=True)
            decided, _ = first_batch(per_image.loc[rows.index], 32, batch_size=len(rows), resize=policy,
                                     deterministic=True)
            np.testing.assert_array_equal(planned, decided, err_msg=policy)


def test_images_over_the_pixel_limit_are_quarantined_by_the_scan_and_refused_by_the_pipeline(tmp_path):
    """A 9000x8000 PNG is 72 M pixels (over MAX_DECODED_PIXELS) in ~100 kB on disk. The scan and the
    pipeline read its header only: neither decodes it (each step would take seconds and 200 MB)."""
    import subprocess
    import sys

    from images import write_good_images

    from tltoolkit.data import scan
    from tltoolkit.data.probe import MAX_DECODED_PIXELS

    huge = tmp_path / "data" / "a" / "huge.png"
    huge.parent.mkdir(parents=True)
    Image.new("L", (9000, 8000)).save(huge)
    assert 9000 * 8000 > MAX_DECODED_PIXELS and huge.stat().st_size < 1e6
    write_good_images(tmp_path / "data" / "a", 2)
    write_good_images(tmp_path / "data" / "b", 2, seed=1)
    row = scan(tmp_path / "data", cache_dir=tmp_path / "cache").table.set_index("path").loc[str(huge)]
    assert row["status"] == "quarantined" and row["reason"] == "too many pixels"
    assert "9000x8000 decodes to 72000000 pixels, more than MAX_DECODED_PIXELS" in row["detail"]
    with pytest.raises(TltoolkitError, match=r"huge.png: too many pixels: 9000x8000 .* downscale it"):
        image_dataset(table([str(huge)]), 32)  # a table without the scan's facts: its header is read
    # A large JPEG counts at the DCT scale that decodes it: 9000x8000 at 1/8 for 224 passes.
    photo = str(tmp_path / "photo.jpg")
    Image.new("RGB", (9000, 8000), RED).save(photo, quality=50)
    script = ("import sys, resource; from tltoolkit.pipeline import image_dataset; import pandas as pd\n"
              "images = next(iter(image_dataset(pd.DataFrame({'path': [sys.argv[1]]}), 224, 1, with_labels=False)))\n"
              "print(images.shape[1], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")
    small = solid(tmp_path / "small.jpg", RED, size=(300, 300))
    peaks = []
    for path in (small, photo):
        done = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        side, peak_mb = map(int, done.stdout.split())
        assert side == 224
        peaks.append(peak_mb)
    assert peaks[1] - peaks[0] < 100, peaks  # decoded in full: 216 MB, and 864 MB more as float32


def test_large_images_decode_fewer_at_once(monkeypatch):
    """Peak memory ~ parallel decodes x their pixels: with images near the limit, at most
    MAX_PIXELS_IN_FLIGHT pixels decode at once however many cores there are."""
    from tltoolkit import pipeline

    frame = pd.DataFrame({"path": ["a.png"] * 3, "label_id": [0] * 3, "format": ["PNG"] * 3,
                          "width": [8000] * 3, "height": [8000] * 3})
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 16)
    maps = [d for d in _inputs(image_dataset(frame, 32)) if type(d).__name__ == "_ParallelMapDataset"]
    assert int(maps[0]._num_parallel_calls) == pipeline.MAX_PIXELS_IN_FLIGHT // (8000 * 8000) == 4
    small = frame.assign(width=640, height=480)
    maps = [d for d in _inputs(image_dataset(small, 32)) if type(d).__name__ == "_ParallelMapDataset"]
    assert int(maps[0]._num_parallel_calls) == tf.data.AUTOTUNE  # one per core


def _inputs(dataset):
    while True:
        yield dataset
        inputs = dataset._inputs()
        if not inputs:
            return
        dataset = inputs[0]
