"""P2 and P4 of the feature-cache issue: training epochs on cached features vs recomputing them.

    .venv/bin/python benchmarks/cached_head.py [--images 128] [--image-size 224]

Sizes: `--images` JPEGs of 320x256 in two class folders, batch 16, random-init weights (seeded; the
compute is the same as ImageNet weights'), on this machine's CPUs. Printed, measured in this run,
each as the mean of epochs 2..3 (epoch 1 traces):
- P2: a head epoch on cached ResNet-50 penultimate features vs an epoch of the Keras transfer-learning
  guide's workflow (frozen base inside `fit`, `base(x, training=False)` -> pooling -> Dense); target
  >= 100x.
- P4: an epoch training VGG16's block5 + head from cached block4 outputs (`tail_model`) vs the same
  trainable part with blocks 1-4 recomputed (frozen) in every step; target >= 4x.
The one-off extraction that fills each cache is timed too.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from extraction import write_jpegs  # noqa: E402  (same folder)

EPOCHS = 3


def epoch_seconds(model, dataset) -> float:
    """Mean wall time of epochs 2..EPOCHS of `model.fit` on `dataset`."""
    import keras

    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    model.fit(dataset, epochs=EPOCHS, verbose=0, callbacks=[Timer()], shuffle=False)  # shuffled by the dataset
    return sum(times[1:]) / len(times[1:])


def classifier(base, num_classes: int):
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    return keras.Model(base.input, keras.layers.Dense(num_classes, name="predictions")(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import keras

    import tltoolkit
    from tltoolkit.architectures.preprocessing import preprocessing_layer
    from tltoolkit.features.cache import cached_dataset
    from tltoolkit.data import scan
    from tltoolkit.architectures.stages import tail_model
    from tltoolkit.features.extractor import feature_extractor
    from tltoolkit.features.local import extract_features
    from tltoolkit.pipeline import image_dataset

    work = Path(tempfile.mkdtemp(prefix="tltoolkit-bench-"))
    write_jpegs(work / "data", args.images)
    result = scan(work / "data", cache_dir=work / "scan-cache")
    table, classes = result.usable(), len(result.class_index)
    n, size, batch = args.images, args.image_size, args.batch_size
    images = image_dataset(table, size, batch, shuffle=True, seed=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    print(f"{n} JPEGs 320x256 at {size}x{size}, batch {batch}, {os.cpu_count()} CPU(s)")

    # P2: ResNet-50 penultimate features.
    extractor = feature_extractor("resnet50", weights=None, image_size=size)
    cache, stats = extract_features(table, extractor, work / "cache", batch, progress=False)
    print(f"P2 one-off extraction: {stats.seconds:.1f} s")
    head = keras.Sequential([keras.Input(extractor.feature_shape), keras.layers.Dropout(0.2),
                             keras.layers.Dense(classes)])
    head.compile("adam", loss)
    cached = epoch_seconds(head, cached_dataset(cache, table, batch, seed=0))

    keras.utils.set_random_seed(0)
    base = tltoolkit.build("resnet50", include_top=False, input_shape=(size, size, 3))
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = base(preprocessing_layer("caffe")(inputs), training=False)
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(x))
    guide = keras.Model(inputs, keras.layers.Dense(classes)(x))
    guide.compile("adam", loss)
    frozen = epoch_seconds(guide, images)
    print(f"P2 head epoch: cached {cached * 1000:.1f} ms, frozen base in fit {frozen:.2f} s: "
          f"{frozen / cached:.0f}x faster  (target >= 100x)")

    # P4: VGG16 block5 + head, from cached block4 outputs vs recomputing blocks 1-4.
    extractor = feature_extractor("vgg16", weights=None, image_size=size, layer="block4")
    cache, stats = extract_features(table, extractor, work / "cache", batch, progress=False)
    print(f"P4 one-off block4 extraction: {stats.seconds:.1f} s, maps {extractor.feature_shape}")
    model = classifier(extractor.base, classes)
    tail = tail_model(model, extractor.spec.cut)
    tail.compile("adam", loss)
    from_cache = epoch_seconds(tail, cached_dataset(cache, table, batch, seed=0))

    full = classifier(tltoolkit.build("vgg16", include_top=False, input_shape=(size, size, 3)), classes)
    first_trainable = [layer.name for layer in full.layers].index("block5_conv1")
    for i, layer in enumerate(full.layers):
        layer.trainable = i >= first_trainable
    inputs = keras.Input((size, size, 3))
    recompute = keras.Model(inputs, full(preprocessing_layer("caffe")(inputs)))
    recompute.compile("adam", loss)
    assert sum(v.numpy().size for v in recompute.trainable_weights) == sum(
        v.numpy().size for v in tail.trainable_weights)
    recomputed = epoch_seconds(recompute, images)
    print(f"P4 block5 + head epoch: from cached block4 {from_cache:.2f} s, recomputing blocks 1-4 "
          f"{recomputed:.2f} s: {recomputed / from_cache:.1f}x faster  (target >= 4x)")


if __name__ == "__main__":
    main()
