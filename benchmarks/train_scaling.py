"""Data-parallel training speed: images/s of one LeNet-5 / MNIST training run on 1 process and on N
processes (DistributedDataParallel over gloo, `mirrorc compile --nproc N`), and the efficiency
(images/s on N processes / (N x images/s on 1)), beside the single-process time of the same run.

    python benchmarks/train_scaling.py [--images 12000] [--epochs 1] [--nproc 2] [--batch-size 128]

The timed part is the training epochs alone (train()'s per-epoch seconds, no validation split), each
process with MIRRORC_THREADS threads (1 by default here, so N processes use N cores). On a shared
machine the figures say what this machine gave at that moment; the best of --rounds runs counts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MIRRORC_THREADS", "1")
from record import write_results  # noqa: E402

from examples.make_models import lenet5  # noqa: E402
from mirrorc.train.data import load_dataset  # noqa: E402
from mirrorc.train.distributed import run_local  # noqa: E402
from mirrorc.train.loop import TrainConfig, train  # noqa: E402


def train_seconds(x: np.ndarray, y: np.ndarray, config: TrainConfig) -> float:
    """Runs on every rank; rank 0's summed epoch seconds are what run_local returns."""
    return sum(h.seconds for h in train(lenet5(), x, y, config).history)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=12000, help="MNIST training images")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128, help="the global batch")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="runs per process count; the fastest counts")
    args = ap.parse_args()

    data = load_dataset("mnist", data_dir=None, input_shape=(1, 1, 28, 28), limit_train=args.images, num_classes=10)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, val_fraction=0.0, device="cpu")
    images = args.images * args.epochs
    rows = []
    for nproc in sorted({1, args.nproc}):
        seconds = min(
            run_local(nproc, "cpu", train_seconds, data.x_train, data.y_train, config) for _ in range(args.rounds)
        )
        rows.append({"processes": nproc, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1)})
    single = rows[0]["images_per_s"]
    for row in rows:
        row["efficiency"] = round(row["images_per_s"] / (row["processes"] * single), 3)

    print(f"LeNet-5 / MNIST, {args.images} images x {args.epochs} epoch(s), global batch {args.batch_size}")
    print(f"{'processes':>9} {'seconds':>8} {'images/s':>9} {'efficiency':>10}")
    for row in rows:
        print(f"{row['processes']:>9} {row['seconds']:>8} {row['images_per_s']:>9} {row['efficiency']:>10}")
    setup = {
        "model": "lenet5",
        "data": "mnist",
        "images": args.images,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads_per_process": int(os.environ["MIRRORC_THREADS"]),
        "single_process_seconds": rows[0]["seconds"],
        "rounds": args.rounds,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),  # other jobs sharing the cores
    }
    write_results(
        "train_scaling",
        "training images/s on 1 and N processes (DDP, gloo) and the efficiency",
        {
            "setup": setup,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
