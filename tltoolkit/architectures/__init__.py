"""The architecture zoo: a registry of specs and Functional-API builders (see registry.py)."""

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
