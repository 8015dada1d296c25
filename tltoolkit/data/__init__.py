"""Image sources, validation and quarantine, stable splits and the class index.

    result = tltoolkit.data.scan("./cats", val_split=0.2)   # or "labels.csv", "tfds:beans"
    result.summary()            # images per class and split
    result.usable("train")      # the rows to train on
    result.write_report("scan.csv")

Contract with `tltoolkit.pipeline`: `ScanResult.table` has one row per image file, columns
- `path`: absolute path (str). TFDS examples are written once as files (see `sources`), so every
  source yields files.
- `label` (str; "" when the file is in no class folder), `label_id` (int from the class index; -1
  for quarantined rows).
- `sha256` of the file's bytes, `size` in bytes, `format` (Pillow's name), `width`, `height`
  (upright, after EXIF orientation).
- `status`: `ok` (8-bit RGB as stored), `converted` (usable after the conversions named in
  `reason`: `exif-rotated`, `cmyk`, `grayscale`, `16-bit`, `alpha-composited`, `palette`,
  `first-frame`, `mode X`), `duplicate` (same bytes as a row kept earlier, named in `detail`; same
  label and split), `quarantined` (unusable, `reason` one of `empty`, `truncated`, `not an image`,
  `unsupported format`, `unreadable`, `missing`, `no label`, `label conflict`; `detail` says more).
- `split`: `train` or `validation` for usable and duplicate rows, "" for quarantined ones.
- `decoder`: `tf` when `tf.io.decode_image(bytes, channels=3, expand_animations=False)` gives the
  right pixels directly; `pil` when the file needs Pillow: decode it with `load_rgb(path)` (in a
  `tf.numpy_function`). `load_rgb` is the one definition of "right pixels" for both.
`ScanResult.usable()` is what to train on: ok and converted rows, one per distinct image.
"""

from tltoolkit.data.class_index import extend_class_index, load_class_index, save_class_index
from tltoolkit.data.probe import IMAGE_EXTENSIONS, load_rgb
from tltoolkit.data.scan import COLUMNS, STATUSES, ScanResult, scan
from tltoolkit.data.splits import TRAIN, VALIDATION, hash_fraction

__all__ = [
    "COLUMNS", "IMAGE_EXTENSIONS", "STATUSES", "TRAIN", "VALIDATION", "ScanResult", "extend_class_index",
    "hash_fraction", "load_class_index", "load_rgb", "save_class_index", "scan",
]
