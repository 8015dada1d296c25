"""Weights: the official-file path (through keras.utils.get_file) and local files, offline."""

import dataclasses
import hashlib
import warnings

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from tltoolkit.architectures import build, get_spec
from tltoolkit.architectures.registry import WeightsFile
from tltoolkit.architectures.weights import WeightsError, load_weights

SHAPE = (32, 32, 3)


def images(n=2, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def write_legacy_h5(model, path):
    """The layout of keras.applications' `*_tf_dim_ordering_tf_kernels*.h5` files."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "models"


def test_legacy_notop_h5_loads_into_base_and_new_head(tmp_path):
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=SHAPE)
    path = write_legacy_h5(reference, tmp_path / "vgg16_notop.h5")

    features = build("vgg16", weights=str(path), include_top=False, input_shape=SHAPE)
    np.testing.assert_allclose(features(images()), reference(images()), atol=1e-4)

    classifier = build("vgg16", weights=str(path), num_classes=3, input_shape=SHAPE)
    base = keras.Model(classifier.input, classifier.get_layer("block5_pool").output)
    np.testing.assert_allclose(base(images()), reference(images()), atol=1e-4)


def test_legacy_top_h5_loads_the_whole_model(tmp_path):
    reference = keras.applications.VGG16(weights=None, input_shape=SHAPE)
    path = write_legacy_h5(reference, tmp_path / "vgg16_top.h5")
    ours = build("vgg16", weights=str(path), input_shape=SHAPE)
    np.testing.assert_allclose(ours(images()), reference(images()), atol=1e-6)


def test_file_of_another_architecture_is_refused(tmp_path):
    other = keras.applications.VGG19(weights=None, include_top=False, input_shape=SHAPE)
    path = write_legacy_h5(other, tmp_path / "vgg19_notop.h5")
    with pytest.raises(WeightsError, match="another architecture"):
        build("vgg16", weights=str(path), include_top=False, input_shape=SHAPE)


def test_failed_load_leaves_the_model_as_it_was(tmp_path):
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=SHAPE)
    path = write_legacy_h5(reference, tmp_path / "damaged.h5")
    with h5py.File(path, "r+") as f:  # the last conv's kernel no longer fits: fails after 12 layers loaded
        del f["block5_conv3/block5_conv3/kernel"]
        f["block5_conv3/block5_conv3/kernel"] = np.zeros((3, 3, 512, 7), "float32")
    model = build("vgg16", include_top=False, input_shape=SHAPE)
    before = model.get_weights()
    with pytest.raises(WeightsError, match="does not fit vgg16"):
        load_weights(model, get_spec("vgg16"), path)
    assert_same_weights(model.get_weights(), before)


def test_keras_formats_round_trip(tmp_path):
    source = build("vgg16", num_classes=5, input_shape=SHAPE)
    source.save(tmp_path / "run.keras")
    source.save_weights(tmp_path / "run.weights.h5")

    same_head = build("vgg16", weights=str(tmp_path / "run.weights.h5"), num_classes=5, input_shape=SHAPE)
    np.testing.assert_allclose(same_head(images()), source(images()), atol=1e-6)

    new_head = build("vgg16", weights=str(tmp_path / "run.keras"), num_classes=3, input_shape=SHAPE)
    for name in ("block1_conv1", "block5_conv3", "fc2"):
        assert_same_weights(new_head.get_layer(name).get_weights(), source.get_layer(name).get_weights())


def test_missing_local_file_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build("vgg16", weights=str(tmp_path / "nope.h5"), include_top=False, input_shape=SHAPE)


def test_imagenet_offline_names_file_url_and_folder(keras_home):
    with pytest.raises(WeightsError) as error:
        build("vgg16", weights="imagenet", include_top=False, input_shape=SHAPE)
    message = str(error.value)
    assert "\n" not in message
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert get_spec("vgg16").weights["imagenet"].notop_url in message
    assert str(keras_home) in message


def test_imagenet_file_with_wrong_hash_is_refused_and_kept(keras_home):
    keras_home.mkdir(parents=True)
    target = keras_home / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    target.write_bytes(b"not the published file")
    with pytest.raises(WeightsError, match="does not match the published md5 hash"):
        build("vgg16", weights="imagenet", include_top=False, input_shape=SHAPE)
    assert target.read_bytes() == b"not the published file"


def test_imagenet_download_path_checks_hash_and_loads(tmp_path, keras_home):
    """The real fetch path (keras.utils.get_file, hash check, cache) over a file:// URL."""
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=SHAPE)
    served = write_legacy_h5(reference, tmp_path / "served_notop.h5")
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    spec = dataclasses.replace(get_spec("vgg16"), weights={"imagenet": WeightsFile(
        url=(tmp_path / "served_top.h5").as_uri(), file_hash="0" * 32,
        notop_url=served.as_uri(), notop_hash=md5)})

    model = build("vgg16", include_top=False, input_shape=SHAPE)
    path = load_weights(model, spec, "imagenet")
    assert path == keras_home / "served_notop.h5" and path.exists()
    np.testing.assert_allclose(model(images()), reference(images()), atol=1e-4)

    bad = dataclasses.replace(spec, weights={"imagenet": dataclasses.replace(
        spec.weights["imagenet"], notop_url=(tmp_path / "other_notop.h5").as_uri())})
    (tmp_path / "other_notop.h5").write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="could not download other_notop.h5"):
        load_weights(model, bad, "imagenet")
    assert not (keras_home / "other_notop.h5").exists()


def test_architecture_without_published_weights(keras_home):
    with pytest.raises(WeightsError, match="no published 'imagenet' weights.*vgg16"):
        build("nin", weights="imagenet", include_top=False)


def test_an_unknown_tag_lists_the_architectures_tags():
    with pytest.raises(WeightsError, match=r"resnet18 has no published 'imagenet:b9_in1k' weights; its tags: "
                                           r"imagenet \(tv_in1k\), imagenet:a1_in1k"):
        build("resnet18", weights="imagenet:b9_in1k", input_shape=SHAPE)


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    from tests.torch_reference import randomize_batch_norm, torch, torchvision

    torch.manual_seed(0)
    model = randomize_batch_norm(torchvision.models.resnet18(weights=None))
    path = tmp_path_factory.mktemp("served") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path


def _served(path, tag="tv_in1k", file_hash=None, mode="torch"):
    from tltoolkit.architectures.registry import Checkpoint, Preprocessing

    return Checkpoint(tag=tag, url=path.as_uri(), file_hash=file_hash, origin="torchvision", licence="BSD-3-Clause",
                      preprocessing=Preprocessing(mode, 224, 0.875, "bilinear"), top1=None, source="")


def test_a_checkpoint_tag_downloads_converts_once_and_loads_the_cache(resnet18_checkpoint, keras_home):
    """The real path over a file:// URL: get_file, the sha256-prefix check, conversion, the cached .weights.h5."""
    sha256 = hashlib.sha256(resnet18_checkpoint.read_bytes()).hexdigest()
    spec = dataclasses.replace(get_spec("resnet18"), weights={"imagenet": _served(resnet18_checkpoint, file_hash=sha256[:8])})
    direct = build("resnet18", weights=str(resnet18_checkpoint), num_classes=3, input_shape=SHAPE)

    model = build("resnet18", num_classes=3, input_shape=SHAPE)  # a new head: the base loads
    path = load_weights(model, spec, "imagenet:tv_in1k")
    assert path == keras_home / f"resnet18.tv_in1k.{sha256[:16]}.weights.h5"
    assert (keras_home / "resnet18.pth").exists()
    base = keras.Model(model.input, model.get_layer("conv5_block2_out").output)
    direct_base = keras.Model(direct.input, direct.get_layer("conv5_block2_out").output)
    np.testing.assert_allclose(base(images()), direct_base(images()), atol=1e-5)

    converted = path.stat().st_mtime_ns
    again = build("resnet18", input_shape=SHAPE)
    assert load_weights(again, spec, "imagenet") == path and path.stat().st_mtime_ns == converted


def test_a_checkpoint_that_fails_its_published_hash_is_refused_and_removed(resnet18_checkpoint, keras_home):
    spec = dataclasses.replace(get_spec("resnet18"), weights={"imagenet": _served(resnet18_checkpoint, file_hash="0badc0de")})
    with pytest.raises(WeightsError, match="could not download resnet18.pth .*does not match the published sha256"):
        load_weights(build("resnet18", input_shape=SHAPE), spec, "imagenet")
    assert not (keras_home / "resnet18.pth").exists()


def test_offline_the_message_names_the_file_its_url_and_the_folder(tmp_path, keras_home):
    missing = tmp_path / "resnet18-f37072fd.pth"
    spec = dataclasses.replace(get_spec("resnet18"), weights={"imagenet": _served(missing, file_hash="f37072fd")})
    with pytest.raises(WeightsError) as error:
        load_weights(build("resnet18", input_shape=SHAPE), spec, "imagenet")
    message = str(error.value)
    assert f"could not download {missing.name}" in message and missing.as_uri() in message
    assert f"put it in {keras_home}/" in message and "\n" not in message


def test_the_tags_preprocessing_is_the_models_and_keys_its_features(resnet18_checkpoint):
    from tltoolkit.architectures.bases import resolve_base
    from tltoolkit.architectures.weights import preprocessing_mode, published_id

    vgg16 = get_spec("vgg16")
    assert preprocessing_mode(vgg16, "imagenet") == "caffe"  # keras.applications' file
    assert preprocessing_mode(vgg16, "imagenet:tv_in1k") == "torch"  # torchvision's
    assert preprocessing_mode(vgg16, str(resnet18_checkpoint)) == "torch"  # a PyTorch checkpoint file
    assert resolve_base("vgg16", weights="imagenet:tv_in1k").preprocessing == "torch"
    assert resolve_base("vgg16", weights="imagenet").preprocessing == "caffe"
    one, other = _served(resnet18_checkpoint, "tv_in1k"), _served(resnet18_checkpoint, "tf_in1k", mode="tf")
    assert published_id(one) != published_id(other)  # the same file, two recipes: never the same features


def test_base_only_weights_file_loads_into_a_new_head_without_warnings(tmp_path):
    base = build("vgg11", include_top=False, input_shape=SHAPE)
    base.save_weights(tmp_path / "base.weights.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras' "Skipping ... freshly-initialized" would fail here
        classifier = build("vgg11", weights=str(tmp_path / "base.weights.h5"), num_classes=4, input_shape=SHAPE)
    features = keras.Model(classifier.input, classifier.get_layer("block5_pool").output)
    np.testing.assert_allclose(features(images()), base(images()), atol=1e-6)


def test_a_hub_tag_in_the_keras_cache_loads_offline_and_keys_the_features(keras_home, tmp_path):
    """timm's Hub files have no published hash: one put where the message says is checked by structure."""
    from tests.torch_reference import randomize_batch_norm, save_safetensors, timm, torch
    from tltoolkit.features.extractor import feature_extractor

    torch.manual_seed(0)
    keras_home.mkdir(parents=True)
    save_safetensors(randomize_batch_norm(timm.create_model("resnet18", pretrained=False)),
                     keras_home / "resnet18.a1_in1k.safetensors")
    extractor = feature_extractor("resnet18", weights="imagenet:a1_in1k", image_size=32, layer="conv5", pooling="avg")
    sha256 = hashlib.sha256((keras_home / "resnet18.a1_in1k.safetensors").read_bytes()).hexdigest()
    assert extractor.spec.weights == f"imagenet:a1_in1k:sha256:{sha256}:torch/224/0.95/bicubic"
    assert extractor.spec.preprocessing == "torch"
    assert (keras_home / f"resnet18.a1_in1k.{sha256[:16]}.weights.h5").exists()

    (keras_home / "resnet18.a1_in1k.safetensors").write_bytes(b"{}")  # damaged: refused, never half-loaded
    with pytest.raises(WeightsError):
        build("resnet18", weights="imagenet:a1_in1k", input_shape=SHAPE)
