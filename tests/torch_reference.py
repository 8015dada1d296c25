"""torch, torchvision and timm for the checkpoint tests (the test extra installs them; tltoolkit never imports them).

PyPI's torchvision wheels are built against CUDA torch; with the CPU torch wheel their compiled ops
(nms, ...) do not load, yet torchvision registers fake kernels for two of them at import and fails.
Then the two schemas are declared and torchvision imported again; the models the tests build never
call those ops. Where the ops load (matching builds), nothing is declared.
"""

import sys

import torch

try:
    import torchvision
except RuntimeError:  # "operator torchvision::nms does not exist": the compiled ops did not load
    for _module in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
        del sys.modules[_module]
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for _op in ("nms", "qnms"):
        _LIBRARY.define(f"{_op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

import timm  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

__all__ = ["AkamasterResNet", "RobustBenchWideResNet", "randomize_batch_norm", "save_safetensors", "timm", "torch",
           "torchvision"]


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


class _ZeroPadShortcut(torch.nn.Module):
    """Option A as akamaster writes it: every second pixel, planes // 4 zero channels on each side."""

    def __init__(self, planes: int):
        super().__init__()
        self.planes = planes

    def forward(self, x):
        return torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.planes // 4, self.planes // 4))


class _AkamasterBlock(torch.nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _ZeroPadShortcut(planes) if stride != 1 or in_planes != planes else nn.Sequential()

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class AkamasterResNet(torch.nn.Module):
    """akamaster/pytorch_resnet_cifar10's resnet.ResNet (option A), the network of its CIFAR-10 files:
    the same module names, so the same state dict keys (`layer1.0.conv1.weight`, `linear.bias`)."""

    def __init__(self, blocks: int, num_classes: int = 10):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()  # functional in the original; a module here so a hook sees the stem's output
        width, stages = 16, []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            stages.append(nn.Sequential(*(_AkamasterBlock(width if i == 0 else planes, planes, stride if i == 0 else 1)
                                          for i in range(blocks))))
            width = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        return self.linear(torch.flatten(torch.nn.functional.avg_pool2d(out, out.shape[3]), 1))


class _WideBlock(torch.nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        nn = torch.nn
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.convShortcut = None if in_planes == planes else nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False)

    def forward(self, x):
        preact = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(preact))))
        return out + (x if self.convShortcut is None else self.convShortcut(preact))


class _Stage(torch.nn.Module):
    def __init__(self, blocks, in_planes, planes, stride):
        super().__init__()
        self.layer = torch.nn.Sequential(*(_WideBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                                           for i in range(blocks)))

    def forward(self, x):
        return self.layer(x)


class RobustBenchWideResNet(torch.nn.Module):
    """RobustBench's WideResNet (model_zoo/architectures/wide_resnet.py, from TRADES) at its defaults:
    the network of its "Standard" CIFAR-10 model; the same module names (`block1.layer.0.bn1`, `fc`)."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10):
        super().__init__()
        nn = torch.nn
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = _Stage(n, widths[0], widths[1], 1)
        self.block2 = _Stage(n, widths[1], widths[2], 2)
        self.block3 = _Stage(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        out = self.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))
        return self.fc(torch.flatten(torch.nn.functional.avg_pool2d(out, 8), 1))
