"""The architecture zoo: a registry of specs and Functional-API builders (see registry.py).

The family modules below are the manifest (as in timm's `models/__init__`): each registers its specs
when imported, so the registry is complete once this package is imported, and the registry itself
imports no family. Their order is the registry's (and `tltoolkit models`') order.
"""

from tltoolkit.architectures import layers  # noqa: F401  (registers the custom layers with Keras)
from tltoolkit.architectures import (  # noqa: F401  (imported to register their specs, in this order)
    classic,
    densenet,
    googlenet,
    inception_v3,
    inception_v4,
    inception_resnet_v2,
    resnet,
    resnet_cifar,
    resnet_v2,
    vgg,
)
from tltoolkit.architectures.api import build, load_model
from tltoolkit.architectures.registry import (
    ArchitectureError,
    ArchSpec,
    Checkpoint,
    Preprocessing,
    Reference,
    TorchLayout,
    WeightsFile,
    all_specs,
    get_spec,
    list_architectures,
    register,
)

__all__ = [
    "ArchSpec",
    "ArchitectureError",
    "Checkpoint",
    "Preprocessing",
    "Reference",
    "TorchLayout",
    "WeightsFile",
    "all_specs",
    "build",
    "load_model",
    "get_spec",
    "list_architectures",
    "register",
]
