"""Imports every family module so that each registers its specs (see registry._load_families)."""

from tltoolkit.architectures import (  # noqa: F401
    classic,
    densenet,
    inception,
    resnet,
    resnet_cifar,
    resnet_v2,
    vgg,
)
