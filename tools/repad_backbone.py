"""Moves the embedded backbone to the option-A shortcut of akamaster's checkpoints, keeping its function.

    python tools/repad_backbone.py

`resnetN_cifar`'s option-A shortcut once appended its zero channels after the input's; it now puts
half before and half after, as akamaster/pytorch_resnet_cifar10 (whose CIFAR-10 checkpoints it loads)
does. The embedded backbone (tools/train_backbone.py) was trained with the old placement. Channels of
a stage's residual stream can be permuted freely (every layer that reads or writes the stream is
permuted with them), so the same network exists for the new placement: this script computes it and
checks, on the digits 0-4 test images, that the new file in the new builder gives the old file's
feature maps in the old placement (permuted) within 1e-4, then replaces the file and its record's
hash. It runs once: the record's `repadded` entry says it has (a second run would permute again).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILE = ROOT / "data" / "backbone" / "digits04_resnet20_cifar.weights.h5"
RECORD = FILE.with_name("digits04_resnet20_cifar.json")


def old_placement(model, on: bool) -> None:
    """Every option-A shortcut of `model` with its zero channels after the input's (on) or split (off)."""
    from tltoolkit.architectures.resnet_cifar import SubsampleZeroPad

    for layer in model.layers:
        if isinstance(layer, SubsampleZeroPad):
            layer.before = 0 if on else (layer.filters - layer.input.shape[-1]) // 2


def stream_permutations(model) -> dict[str, np.ndarray]:
    """Per stage: p with new_channel[j] = old_channel[p[j]] for its residual stream."""
    from tltoolkit.architectures.resnet_cifar import SubsampleZeroPad

    permutations, previous = {}, None
    for layer in model.layers:
        if isinstance(layer, SubsampleZeroPad):
            inner, filters = layer.input.shape[-1], layer.filters
            before = (filters - inner) // 2
            carried = previous if previous is not None else np.arange(inner)
            zeros = np.arange(inner, filters)  # the old placement's zero channels, in order
            permutations[layer.name.split("_")[0]] = np.concatenate(
                [zeros[:before], carried, zeros[before:]])
            previous = permutations[layer.name.split("_")[0]]
    return permutations


def permuted_weights(model) -> None:
    """The residual-stream channels of each stage permuted in place: what writes the stream (a block's
    second conv and BN) on its outputs, what reads it (a block's first conv) on its inputs."""
    perms = {int(stage[4:]): p for stage, p in stream_permutations(model).items()}
    for layer in model.layers:
        match = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", layer.name)
        if not match or not layer.weights:
            continue
        stage, block, position, kind = int(match[1]), int(match[2]), match[3], match[4]
        weights = layer.get_weights()
        if position == "1" and kind == "conv":  # reads the stream: the previous stage's in a first block
            reads = perms.get(stage if block > 1 else stage - 1)
            if reads is not None:
                weights[0] = weights[0][:, :, reads, :]
        elif position == "2" and perms.get(stage) is not None:  # writes the stream
            writes = perms[stage]
            weights = ([weights[0][..., writes], *[w[writes] for w in weights[1:]]] if kind == "conv"
                       else [w[writes] for w in weights])
        layer.set_weights(weights)


def digits(limit: int = 182) -> np.ndarray:
    from PIL import Image

    files = sorted((ROOT / "data" / "digits04-test").glob("*/*.png"))[:limit]
    return np.stack([np.asarray(Image.open(f).convert("RGB"), dtype="float32") for f in files])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    record = json.loads(RECORD.read_text())
    if "repadded" in record:
        print(f"{FILE.name} is already repadded ({record['repadded']})")
        return 0

    import tltoolkit
    from tltoolkit.architectures.preprocessing import preprocessing_layer
    from tltoolkit.architectures import get_spec

    pixels = preprocessing_layer(get_spec("resnet20_cifar").preprocessing, channels=3)(digits())
    old = tltoolkit.build("resnet20_cifar", weights=str(FILE), include_top=False)
    old_placement(old, True)
    want = np.asarray(old(pixels, training=False))
    perm = stream_permutations(old)["conv4"]
    new = tltoolkit.build("resnet20_cifar", weights=str(FILE), include_top=False)
    permuted_weights(new)
    got = np.asarray(new(pixels, training=False))
    difference = float(np.abs(got - want[..., perm]).max())
    print(f"max |repadded - old| on {len(pixels)} images: {difference:.2e} (largest feature {np.abs(want).max():.1f})")
    if difference > 1e-4:
        print("not equal: file left as it was")
        return 1
    from tltoolkit.architectures.weights import file_digest
    from tltoolkit.data.files import atomic_path

    with atomic_path(FILE, suffix=".weights.h5") as temporary:
        new.save_weights(temporary)
        digest = file_digest(temporary, "sha256")
    record.update(weights_sha256=digest, repadded="python tools/repad_backbone.py: option-A zero channels split "
                  "before/after the input's (was: after), the same function up to a permutation of channels")
    with atomic_path(RECORD) as temporary:
        Path(temporary).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {FILE} (sha256 {digest[:12]}...) and its record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
