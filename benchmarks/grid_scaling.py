"""Many trainings at once: the wall time of one LeNet-5 / MNIST attack grid (mirrorc.attack.thief's
cells) run one after another in this process and as Ray tasks on a local Ray (mirrorc.train.grid,
`mirrorc attack --ray auto`), side by side, and whether both gave the same accuracies.

    python benchmarks/grid_scaling.py [--cpus 2] [--images 4000] [--budget 600] [--seeds 2] \
        [--attacks finetune_all,retrain_head,replace_cpm,scratch] [--min-steps 200]

The build is a LeNet-5 MirrorNet (C = 2, joint's penalty) trained for one epoch on the first
--images MNIST images (mirrornet.onnx only: the oracle is its label output). The sequential grid
trains with one torch thread, as each Ray task does, so both make the same float sums. The Ray
figure is the grid alone; starting the local Ray is timed apart. On a shared machine the figures say
what it gave at that moment (the 1-minute load average at the end is recorded beside them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MIRRORC_THREADS", "1")
from record import write_results  # noqa: E402

from examples.make_models import lenet5  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (one task per CPU)")
    ap.add_argument("--images", type=int, default=4000, help="MNIST images the MirrorNet trains on")
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--attacks", default="finetune_all,retrain_head,replace_cpm,scratch")
    ap.add_argument("--min-steps", type=int, default=200)
    ap.add_argument("--lr-grid", default="1e-3,3e-3")
    args = ap.parse_args()

    import onnx
    import ray
    import torch

    from mirrorc.attack import thief
    from mirrorc.pipeline import build_mirrornet
    from mirrorc.train.data import load_dataset
    from mirrorc.train.loop import TrainConfig, train
    from passes import contract

    torch.set_num_threads(1)
    data = load_dataset("mnist", data_dir=None, input_shape=(1, 28, 28))
    work = Path(tempfile.mkdtemp(prefix="mirrorc-grid-scaling-"))
    onnx.save(lenet5(), work / "lenet5.onnx")
    mirrornet, _info = build_mirrornet(work / "lenet5.onnx", channels=2, seed=0)
    trained = train(
        mirrornet,
        data.x_train[: args.images],
        data.y_train[: args.images],
        TrainConfig(epochs=1, backbone_penalty=0.3, val_fraction=0.0),
        logits=contract.MIRRORNET_LOGITS,
        backbone_logits=contract.BACKBONE_LOGITS,
    )
    build = work / "build"
    build.mkdir()
    onnx.save(trained.model, build / "mirrornet.onnx")

    schedule = thief.Schedule(
        epochs=1, min_steps=args.min_steps, lr_grid=tuple(float(v) for v in args.lr_grid.split(",")), device="cpu"
    )
    attacks = tuple(args.attacks.split(","))
    grid = dict(budgets=[args.budget], seeds=args.seeds, schedule=schedule, attacks=attacks)
    cells = len(attacks) * args.seeds

    began = time.perf_counter()
    here = thief.run(build, data, **grid)
    sequential = time.perf_counter() - began

    began = time.perf_counter()
    root = str(Path(__file__).resolve().parents[1])
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"MIRRORC_THREADS": "1", "PYTHONPATH": root}},
    )
    startup = time.perf_counter() - began
    began = time.perf_counter()
    on_ray = thief.run(build, data, **grid, ray="auto")
    parallel = time.perf_counter() - began
    ray.shutdown()

    def accuracies(report: dict) -> dict:
        return {f"{r['attack']} s={r['seed']}": r["accuracy"] for r in report["results"]}

    a, b = accuracies(here), accuracies(on_ray)
    largest = max(abs(a[k] - b[k]) for k in a)
    load = round(os.getloadavg()[0], 2)
    print(
        f"LeNet-5 / MNIST attack grid: {', '.join(attacks)} x budget {args.budget} x {args.seeds} seeds = {cells} "
        f"cells, min {args.min_steps} steps, lr grid {args.lr_grid}; 1 torch thread per training"
    )
    print(f"{'run':<28}{'seconds':>9}{'cells/min':>11}")
    print(f"{'sequential (this process)':<28}{sequential:>9.1f}{60 * cells / sequential:>11.1f}")
    print(f"{f'Ray, local, {args.cpus} CPUs':<28}{parallel:>9.1f}{60 * cells / parallel:>11.1f}")
    print(f"speed-up {sequential / parallel:.2f}x on {args.cpus} CPUs (Ray start {startup:.1f}s apart); load {load}")
    print(f"largest accuracy difference, sequential vs Ray: {largest} (cells: {len(a)})")
    write_results(
        "grid_scaling",
        "wall time of one attack grid, sequential in one process vs Ray tasks on a local Ray, and the "
        "largest accuracy difference between the two",
        {
            "setup": {
                "model": "lenet5",
                "data": "mnist",
                "mirrornet_images": args.images,
                "attacks": list(attacks),
                "budget": args.budget,
                "seeds": args.seeds,
                "cells": cells,
                "min_steps": args.min_steps,
                "lr_grid": args.lr_grid,
                "ray_cpus": args.cpus,
                "threads_per_training": 1,
                "ray_version": ray.__version__,
                "load_average_1min_at_end": load,  # other jobs sharing the cores
            },
            "rows": [
                {"run": "sequential", "seconds": round(sequential, 1)},
                {
                    "run": f"ray local {args.cpus} cpus",
                    "seconds": round(parallel, 1),
                    "ray_start_seconds": round(startup, 1),
                },
            ],
            "speedup": round(sequential / parallel, 2),
            "largest_accuracy_difference": largest,
            "accuracies": {k: [a[k], b[k]] for k in a},
        },
    )


if __name__ == "__main__":
    main()
