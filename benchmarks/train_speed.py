"""Training speed of OnnxModule (the ONNX graph interpreted with torch ops) against a hand-written torch
module of the same architecture: seconds per MNIST epoch for LeNet-5, side by side; and VGG-7 on
CIFAR-10 shapes with and without `fast` (channels_last + bf16 autocast).

    python benchmarks/train_speed.py [--batches 100] [--batch-size 128] [--skip-vgg]

Epoch times are extrapolated from timed training steps (rounds alternate between the two modules and
the fastest round counts, as the machine is shared) to a full epoch of the training set (54,000 MNIST
images after the 10% validation split; 45,000 CIFAR-10).
Random inputs: the speed of a step does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import write_results  # noqa: E402

from examples.make_models import lenet5, vgg7  # noqa: E402
from mirrorc.train.interpreter import OnnxModule  # noqa: E402
from mirrorc.train.loop import logits_tensor  # noqa: E402


class HandLeNet5(torch.nn.Module):
    """The same LeNet-5 as examples/make_models.py, written by hand."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(400, 120), torch.nn.Linear(120, 84), torch.nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class HandVGG7(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for cout in (64, 64, "M", 128, 128, "M", 256, 256, "M"):
            if cout == "M":
                layers.append(torch.nn.MaxPool2d(2))
                continue
            layers += [
                torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(cout),
                torch.nn.ReLU(),
            ]
            cin = cout
        self.features = torch.nn.Sequential(*layers)
        self.fc = torch.nn.Linear(4096, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def make_step(module, out_key, shape, batch_size, fast=False):
    """One training step (Adam, cross-entropy) on a fixed random batch, as a closure."""
    torch.manual_seed(0)
    if fast:
        module = module.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    x = torch.randn(batch_size, *shape)
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    module.train()

    def step():
        if fast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = module(x)
        else:
            out = module(x)
        logits = out[out_key] if out_key else out
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def compare(steps: list, batches: int, rounds: int = 5) -> list[float]:
    """Seconds per step of each closure: rounds alternate between them and the fastest round counts,
    so a busy shared machine slows both sides alike and spikes are discarded."""
    for step in steps:
        for _ in range(3):
            step()
    best = [float("inf")] * len(steps)
    for _ in range(rounds):
        for i, step in enumerate(steps):
            began = time.perf_counter()
            for _ in range(batches):
                step()
            best[i] = min(best[i], (time.perf_counter() - began) / batches)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--skip-vgg", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    steps_mnist = int(np.ceil(54000 / args.batch_size))
    lenet = lenet5()
    hand, ours = compare(
        [
            make_step(HandLeNet5(), None, (1, 28, 28), args.batch_size),
            # the trainer's loss reads the logits before the Softmax (train.logits_tensor)
            make_step(
                OnnxModule(lenet, outputs=[logits_tensor(lenet)]), logits_tensor(lenet), (1, 28, 28), args.batch_size
            ),
        ],
        max(args.batches // 5, 1),
    )
    rows.append(("LeNet-5 / MNIST", "fp32", hand * steps_mnist, ours * steps_mnist))
    if not args.skip_vgg:
        steps_cifar = int(np.ceil(45000 / args.batch_size))
        nb = max(args.batches // 50, 2)
        for fast in (False, True):
            hand, ours = compare(
                [
                    make_step(HandVGG7(), None, (3, 32, 32), args.batch_size, fast),
                    make_step(OnnxModule(vgg7()), "logits", (3, 32, 32), args.batch_size, fast),
                ],
                nb,
                3,
            )
            rows.append(
                ("VGG-7 / CIFAR-10", "channels_last+bf16" if fast else "fp32", hand * steps_cifar, ours * steps_cifar)
            )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"{'model':<18} {'mode':<20} {'hand-written s/epoch':>21} {'OnnxModule s/epoch':>19} {'ratio':>6}")
    for name, mode, hand, ours in rows:
        print(f"{name:<18} {mode:<20} {hand:>21.1f} {ours:>19.1f} {ours / hand:>6.2f}")
    write_results(
        "train_speed",
        "seconds per training epoch: hand-written torch model against OnnxModule running the ONNX graph",
        {
            "setup": {"batches": args.batches, "batch_size": args.batch_size, "threads": torch.get_num_threads()},
            "rows": [
                {"model": name, "mode": mode, "hand_s_per_epoch": hand, "onnxmodule_s_per_epoch": ours}
                for name, mode, hand, ours in rows
            ],
        },
    )


if __name__ == "__main__":
    main()
