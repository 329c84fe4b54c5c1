"""PyTorch eager's side of ``conv_cpu.py``: train steps per second of ResNet-20 and Conv-4.

Run by ``conv_cpu.py`` with a Python that has PyTorch (never a dependency of ``lottery``);
prints one JSON object per case on stdout. The networks are OpenLTH's ``cifar_resnet_20``
(3x3 convolutions without bias, BatchNorm, 1x1 projection shortcuts) and Frankle & Carbin's
Conv-4, the same shapes and parameter counts as ours. One step is what ours is: random crop
(zero padding 4) and horizontal flip of the batch, forward, cross-entropy, backward, SGD with
momentum 0.9 and weight decay 1e-4; masked as OpenLTH's ``PrunedModel`` does (the weights
multiplied by their masks before each forward pass).

    python benchmarks/conv_cpu_torch.py --cases resnet20,conv4 --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from torch import nn
from torch.nn import functional


class Block(nn.Module):
    def __init__(self, f_in: int, f_out: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = nn.Sequential()
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride, bias=False), nn.BatchNorm2d(f_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return functional.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """OpenLTH's ``cifar_resnet_20``: 272,474 parameters."""

    def __init__(self, width: int = 16, blocks: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        layers, current = [], width
        for stage in range(3):
            features = width * 2**stage
            for index in range(blocks):
                layers.append(Block(current, features, stage > 0 and index == 0))
                current = features
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(current, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(functional.relu(self.bn(self.conv(x))))
        return self.fc(functional.adaptive_avg_pool2d(out, 1).flatten(1))


class Conv4(nn.Module):
    """Frankle & Carbin's Conv-4: 2,425,930 parameters."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(8192, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


CASES = {"resnet20": (ResNet20, 128), "conv4": (Conv4, 60)}


def crop_flip(images: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Per example: a random 32x32 crop of the zero-padded image, mirrored with p = 1/2."""
    n, _, height, width = images.shape
    on = {"device": images.device}
    padded = functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), **on)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), **on)
    rows = (dy + torch.arange(height, **on).view(1, height, 1)).expand(n, height, width)
    cols = dx + torch.arange(width, **on).view(1, 1, width)
    cols = torch.where(torch.rand(n, 1, 1, **on) < 0.5, cols,
                       dx + (width - 1) - torch.arange(width, **on))
    batch = torch.arange(n, **on).view(n, 1, 1).expand(n, height, width)
    pixels = padded.permute(0, 2, 3, 1)[batch, rows, cols.expand(n, height, width)]
    return pixels.permute(0, 3, 1, 2)


def steps_per_second(
    case: str, masked: bool, steps: int, repeats: int, device: str = "cpu"
) -> tuple[list[float], float]:
    """Steps per second of each of ``repeats`` stretches, and minor page faults per step."""
    torch.manual_seed(0)
    make, batch = CASES[case]
    model = make().to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    # A random half of every weight tensor pruned, as a PrunedModel holds it.
    masks = {name: (torch.rand_like(p) > 0.5).float() for name, p in model.named_parameters()
             if name.endswith("weight") and p.dim() > 1} if masked else {}
    parameters = dict(model.named_parameters())
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def finished() -> None:  # CUDA runs asynchronously: wait for the queued work
        if device != "cpu":
            torch.cuda.synchronize()

    def step() -> None:
        with torch.no_grad():
            for name, mask in masks.items():
                parameters[name].mul_(mask)
        optimizer.zero_grad(set_to_none=True)
        loss = functional.cross_entropy(model(crop_flip(x)), y)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up: allocator and oneDNN primitive caches
        step()
    finished()
    rates = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        begin = time.perf_counter()
        for _ in range(steps):
            step()
        finished()
        rates.append(steps / (time.perf_counter() - begin))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return rates, faults / (steps * repeats)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--cases", default="resnet20,conv4")
    args.add_argument("--steps", type=int, default=10)
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--device", default="cpu", help="cpu, or cuda (conv_gpu.py)")
    opts = args.parse_args()
    for case in opts.cases.split(","):
        for masked in (False, True):
            rates, faults = steps_per_second(case, masked, opts.steps, opts.repeats,
                                             opts.device)
            row = {"case": case, "masked": masked, "steps_per_s": statistics.median(rates),
                   "rates": rates, "faults_per_step": faults,
                   "threads": torch.get_num_threads(), "torch": torch.__version__}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
