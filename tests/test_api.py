"""The Python API: `tltoolkit.build` and `tltoolkit.list_architectures`, plain Keras objects."""

import keras
import numpy as np
import pytest

import tltoolkit


def test_top_level_api_is_plain_keras():
    assert "vgg16" in tltoolkit.list_architectures()
    assert tltoolkit.list_architectures("vgg") == ["vgg11", "vgg13", "vgg16", "vgg19",
                                                   "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    model = tltoolkit.build("vgg11", include_top=False, pooling="max", input_shape=(32, 32, 3))
    assert isinstance(model, keras.Model) and model.output.shape == (None, 512)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(tltoolkit.ArchitectureError, match="unknown option"):
        tltoolkit.build("vgg16", depth=3)
    with pytest.raises(tltoolkit.ArchitectureError, match="at least"):
        tltoolkit.build("vgg16", input_shape=(8, 8, 3))
    with pytest.raises(tltoolkit.ArchitectureError, match="pooling"):
        tltoolkit.build("vgg16", include_top=False, pooling="mean")
    with pytest.raises(tltoolkit.ArchitectureError, match="close matches: EfficientNetB7"):
        tltoolkit.build("keras:EfficientNetB9", weights=None)


def test_saved_keras_model_is_a_base(tmp_path):
    model = tltoolkit.build("vgg11", num_classes=4, input_shape=(32, 32, 3))
    model.save(tmp_path / "mine.keras")
    loaded = tltoolkit.build(str(tmp_path / "mine.keras"))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    with pytest.raises(tltoolkit.ArchitectureError, match="drop num_classes"):
        tltoolkit.build(str(tmp_path / "mine.keras"), num_classes=3)


def test_keras_application_base():
    model = tltoolkit.build("keras:MobileNetV2", weights=None, include_top=False, pooling="avg",
                            input_shape=(32, 32, 3))
    assert model.output.shape == (None, 1280)


def test_lazy_functions_survive_submodule_imports():
    import tltoolkit.inference.evaluation  # noqa: F401  (binds submodules on packages, as finetune's imports do)
    import tltoolkit.inference.predict  # noqa: F401

    assert callable(tltoolkit.predict) and callable(tltoolkit.evaluate)
    assert tltoolkit.evaluate.__name__ == "evaluate" and tltoolkit.predict.__name__ == "predict"
    assert callable(tltoolkit.scan) and callable(tltoolkit.load_model) and callable(tltoolkit.finetune)
