"""`tltoolkit extract` on another CPU runtime or precision (tltoolkit.runtimes): the runtime is part of
the feature-cache key, and the features match TensorFlow's on real files through the real pipeline."""

import dataclasses

from tltoolkit.features.extractor import FeatureSpec

# Keys computed on main before runtimes were wired in (d4274d5): the default runtime must keep them.
OLD_KEYS = {
    FeatureSpec(arch="resnet20_cifar", weights="random-init:0", image_size=(32, 32), resize="center_crop",
                preprocessing="torch", cut="avg_pool", pooling=None, dtype="float32"):
        "resnet20_cifar-187c0c91f1678603a7679c4f",
    FeatureSpec(arch="resnet50", weights="imagenet:abc", image_size=(224, 224), resize="pad", preprocessing="caffe",
                cut="conv4", pooling="avg", dtype="float16", views=2, augmentation="light", seed=3):
        "resnet50-7ef667c92fcab308d5d110d9",
}


def test_the_default_runtime_keeps_every_old_key_and_another_precision_gets_its_own():
    for spec, key in OLD_KEYS.items():
        assert spec.key() == key
        assert dataclasses.replace(spec, runtime={"runtime": "tf", "precision": "fp32"}).key() == key
        bf16 = dataclasses.replace(spec, runtime={"runtime": "openvino", "precision": "bf16", "openvino": "2026.4.1",
                                                  "inference_precision": "bf16"})
        fp32 = dataclasses.replace(bf16, runtime={**bf16.runtime, "precision": "fp32", "inference_precision": "f32"})
        assert len({key, bf16.key(), fp32.key()}) == 3
        assert bf16.to_json()["runtime"]["precision"] == "bf16" and "runtime" not in spec.to_json()
