"""The architecture zoo: a registry of specs and Functional-API builders (see registry.py)."""

from tltoolkit.architectures.api import build
from tltoolkit.architectures.registry import (
    ArchitectureError,
    ArchSpec,
    Reference,
    WeightsFile,
    all_specs,
    get_spec,
    list_architectures,
    register,
)

__all__ = [
    "ArchSpec",
    "ArchitectureError",
    "Reference",
    "WeightsFile",
    "all_specs",
    "build",
    "get_spec",
    "list_architectures",
    "register",
]
