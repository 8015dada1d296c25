"""Ten-crop TTA as one forward pass of 10 x batch vs a Python loop of 10 forward passes.

    .venv/bin/python benchmarks/tta.py [--arch resnet20_cifar] [--batch 32] [--image-size 32]

Random-init weights (the compute is the same as trained weights'), random uint8 images already at
the ten-crop load size, on this machine. Each variant is a compiled `tf.function`; printed: the
median of 5 timed calls after 2 warm-up calls, images/s and their ratio, and the largest difference
between the two results (they must agree to float rounding).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20_cifar")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()

    import tensorflow as tf

    from tltoolkit.architectures import build
    from tltoolkit.compare import median_seconds
    from tltoolkit.inference.tta import load_size, ten_crop

    size = (args.image_size, args.image_size)
    model = build(args.arch, input_shape=(*size, 3), num_classes=10)
    images = tf.random.uniform((args.batch, *load_size(size, "ten-crop"), 3), 0, 255, seed=0)

    @tf.function
    def batched(x):  # what tltoolkit.inference does
        views = ten_crop(x, size)
        flat = tf.reshape(views, [-1, *size, 3])
        return tf.reduce_mean(tf.reshape(tf.nn.softmax(model(flat, training=False)), [args.batch, 10, -1]), axis=1)

    @tf.function
    def looped(x):  # one forward pass per crop
        views = ten_crop(x, size)
        return tf.reduce_mean(tf.stack([tf.nn.softmax(model(views[:, v], training=False)) for v in range(10)]), axis=0)

    difference = float(tf.reduce_max(tf.abs(batched(images) - looped(images))))
    one, loop = median_seconds(batched, images, calls=5), median_seconds(looped, images, calls=5)
    print(f"{args.arch} {size[0]}x{size[1]}, batch {args.batch} (x10 views), {os.cpu_count()} CPUs")
    print(f"one forward pass of 10 x batch: {args.batch / one:8.1f} images/s")
    print(f"python loop over the 10 crops:  {args.batch / loop:8.1f} images/s")
    print(f"ratio (batched / loop): {loop / one:.2f}x; max probability difference {difference:.2e}")


if __name__ == "__main__":
    main()
