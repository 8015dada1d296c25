"""torch, torchvision and timm for the checkpoint tests (the test extra installs them; tltoolkit never imports them).

PyPI's torchvision wheels are built against CUDA torch; with the CPU torch wheel their compiled ops
(nms, ...) do not load, yet torchvision registers fake kernels for two of them at import. Declaring
their schemas first lets it import; the models the tests build never call them.
"""

import torch

if not hasattr(torch.ops.torchvision, "nms"):
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for _op in ("nms", "qnms"):
        _LIBRARY.define(f"{_op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import timm  # noqa: E402
import torchvision  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

__all__ = ["randomize_batch_norm", "save_safetensors", "timm", "torch", "torchvision"]


def randomize_batch_norm(model, seed: int = 0):
    """Non-trivial BatchNorm statistics and affine parameters, so a swapped mean/var or gamma/beta shows;
    gamma below 1 keeps deep residual stacks' random activations (and logits) near unit scale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.rand(n, generator=generator) - 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(0.4 * torch.rand(n, generator=generator) + 0.2)
                module.bias.copy_(0.2 * torch.rand(n, generator=generator) - 0.1)
    return model.eval()


def save_safetensors(model, path):
    """A state dict as timm publishes it on the Hugging Face Hub."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
