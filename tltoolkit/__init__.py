"""tltoolkit: transfer learning for image classification with classic CNNs, on Keras 3.

The Python API is plain Keras objects: `tltoolkit.build("vgg16", weights="imagenet")` returns a
Functional `keras.Model`. Attributes are imported lazily so that `import tltoolkit` (and the CLI's
start-up) does not pay for TensorFlow until a model is needed.
"""

__version__ = "0.1.0"

_LAZY = {
    "build": "tltoolkit.architectures",
    "list_architectures": "tltoolkit.architectures",
    "get_spec": "tltoolkit.architectures",
    "all_specs": "tltoolkit.architectures",
    "ArchitectureError": "tltoolkit.architectures",
    "scan": "tltoolkit.data",
    "image_dataset": "tltoolkit.pipeline",
    "augmentation": "tltoolkit.augment",
    "load_model": "tltoolkit.architectures",
    "finetune": "tltoolkit.training.finetune",
    "attach_head": "tltoolkit.heads",
    "head_model": "tltoolkit.heads",
    "predict": "tltoolkit.inference.predict",
    "evaluate": "tltoolkit.inference.evaluation",
    "calibrate": "tltoolkit.inference.calibrate",
}

from tltoolkit.errors import TltoolkitError  # noqa: E402


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tltoolkit' has no attribute {name!r}")


__all__ = ["TltoolkitError", "__version__", *_LAZY]
