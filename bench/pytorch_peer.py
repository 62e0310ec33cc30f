#!/usr/bin/env python3
"""The PyTorch peer of `kiln bench`: the same model, batch and threads in PyTorch.

Prints one JSON object: training-step (forward, backward, SGD with momentum) and inference
throughput in images/s, batch-1 inference latency, and the training step's peak memory, in
eager mode or under torch.compile. Random inputs: speed does not depend on the values. Exits
with status 3 and a JSON object with "error" when the mode is unavailable (torch.compile needs
PyTorch 2).

    python3 bench/pytorch_peer.py --model lenet5 --batch 64 --threads 2 --mode eager
"""
import argparse
import json
import resource
import sys
import time

import torch
from torch import nn


def lenet5() -> nn.Module:
    """models/lenet5.cpp."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


class BasicBlock(nn.Module):
    """models/resnet.cpp's CIFAR-style block: two 3×3 conv + BatchNorm, 1×1 projection shortcut
    where the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet20() -> nn.Module:
    """models/resnet.cpp's resnet20 on 1×28×28 with 10 classes (272,186 parameters)."""
    layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    in_channels = 16
    for channels, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(BasicBlock(in_channels, channels, stride if i == 0 else 1))
            in_channels = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def resnet18() -> nn.Module:
    """models/resnet.cpp's resnet18 at 3×224×224 with 1000 classes: torchvision's ResNet-18,
    which tests/import_parity_test imports into Kiln's with matching logits."""
    import torchvision  # Only this model needs it.
    return torchvision.models.resnet18(num_classes=1000)


def conv3x3() -> nn.Module:
    """models/conv3x3.cpp at its default 256×28×28: one 3×3 convolution, 256 → 256 channels."""
    return nn.Conv2d(256, 256, 3, padding=1, bias=False)


# Each model: its constructor, its input shape and the number of classes of its cross-entropy
# loss (0: mean squared error against a target shaped like the output).
MODELS = {"lenet5": (lenet5, (1, 28, 28), 10), "resnet20": (resnet20, (1, 28, 28), 10),
          "resnet18": (resnet18, (3, 224, 224), 1000), "conv3x3": (conv3x3, (256, 28, 28), 0)}


def images_per_second(step, batch: int, seconds: float) -> float:
    """Runs `step` for about `seconds` after a warm-up and returns the best of three rates."""
    for _ in range(10):
        step()
    rates = []
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3 or count == 0:
            step()
            count += 1
        rates.append(count * batch / (time.perf_counter() - start))
    return max(rates)


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    parser.add_argument("--mode", choices=("eager", "compile"), default="eager")
    args = parser.parse_args()
    peer = f"PyTorch {torch.__version__} {'eager' if args.mode == 'eager' else 'torch.compile'}"
    if args.mode == "compile" and not hasattr(torch, "compile"):
        print(json.dumps({"peer": peer, "error": "torch.compile needs PyTorch 2"}))
        sys.exit(3)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    make, shape, classes = MODELS[args.model]
    try:
        model = make()
    except ImportError as error:
        print(json.dumps({"peer": peer, "error": f"{args.model} needs {error.name}"}))
        sys.exit(3)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    x = torch.rand(args.batch, *shape)
    if classes:
        loss_fn = nn.CrossEntropyLoss()
        y = torch.randint(0, classes, (args.batch,))
    else:
        loss_fn = nn.MSELoss()
        with torch.no_grad():
            y = torch.rand_like(model(x))
    x1 = x[:1].clone()
    forward = torch.compile(model) if args.mode == "compile" else model

    def train_step():
        optimizer.zero_grad()
        loss_fn(forward(x), y).backward()
        optimizer.step()

    def infer(batch_input):
        def run():
            with torch.no_grad():
                forward(batch_input)
        return run

    # The training step's memory: the parameters, plus how far the process's peak resident size
    # grows while training (gradients, momentum, activations, workspace).
    model.train()
    rss_before = max_rss_bytes()
    train = images_per_second(train_step, args.batch, args.seconds)
    peak_memory = param_bytes + max_rss_bytes() - rss_before
    model.eval()
    result = {
        "peer": peer,
        "model": args.model,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "train_images_per_second": train,
        "inference_images_per_second": images_per_second(infer(x), args.batch, args.seconds),
        "inference_batch1_latency_ms": 1000.0 / images_per_second(infer(x1), 1, args.seconds),
        "train_peak_memory_bytes": peak_memory,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
