"""LeNet-5 in PyTorch, the peer Kiln's benchmark compares against.

Prints one JSON object: training-step and inference throughput in images/s for the same model,
batch and thread count as Kiln's benchmark. Random inputs: speed does not depend on the values.
"""
import argparse
import json
import time

import torch
from torch import nn


def lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def images_per_second(step, batch: int, seconds: float) -> float:
    """Runs `step` for about `seconds` after a warm-up and returns the best of three rates."""
    for _ in range(20):
        step()
    rates = []
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            step()
            count += 1
        rates.append(count * batch / (time.perf_counter() - start))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = lenet5()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    x1 = x[:1].clone()

    def train_step():
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    def infer(batch_input):
        def run():
            with torch.no_grad():
                model(batch_input)
        return run

    result = {
        "peer": f"PyTorch {torch.__version__} eager",
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "train_images_per_second": images_per_second(train_step, args.batch, args.seconds),
        "inference_images_per_second": images_per_second(infer(x), args.batch, args.seconds),
        "inference_batch1_latency_ms": 1000.0 / images_per_second(infer(x1), 1, args.seconds),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
