"""Where training runs: the device (`--device auto|cpu|cuda[:N]`) and the torch.distributed process
group of a DistributedDataParallel run (`mirrorc compile --nproc N`, or `torchrun` across machines).

`--nproc N` makes the calling process rank 0 and spawns ranks 1..N-1 with torch.multiprocessing
(spawn start method) rather than re-executing the command under torchrun: the user's process keeps
its terminal (progress bar, Ctrl-C), its logs and the summary it prints, and nothing re-parses argv.
Under `torchrun` the process group is made from the environment it sets (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), so the same `mirrorc compile` runs on several machines:

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m mirrorc.cli compile model.onnx --data mnist -o build/

Gloo on CPU, NCCL on CUDA. The data split is mirrorc.train.loop's: every global batch of the seeded
epoch permutation is cut into one contiguous part per rank (`shard`), so the global batch and the
learning rate stay what the user asked, and DDP's gradient average is the global batch's gradient.
Rank 0 alone writes checkpoints, logs and the build.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mirrorc.errors import MirrorcError

if TYPE_CHECKING:
    import torch

# a rank that died leaves the others waiting in a collective: give up after this long
TIMEOUT = datetime.timedelta(minutes=10)


def resolve_device(spec: str) -> torch.device:
    """`--device`: auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise MirrorcError(f"--device: {spec} asked for, but this torch build sees no CUDA GPU")
        index = int(spec[5:]) if ":" in spec else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise MirrorcError(f"--device: {spec}: there are {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise MirrorcError(f"--device: one of auto, cpu, cuda, cuda:N, not '{spec}'")


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0, or the only process)."""
    return world()[0] == 0


def shard(batch: np.ndarray, rank: int, size: int) -> np.ndarray:
    """This rank's contiguous part of one global batch (sizes differ by at most one)."""
    return np.array_split(batch, size)[rank]


def sum_across(values: list[float]) -> list[float]:
    """`values` summed over the ranks (themselves outside a process group)."""
    import torch
    import torch.distributed as dist

    if world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _backend(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def join_from_env(device: str) -> bool:
    """Join the process group torchrun describes in the environment; False when not under torchrun."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group(_backend(device), timeout=TIMEOUT)
    return True


def rank_device(device: torch.device) -> torch.device:
    """One GPU per local rank when the device is CUDA without an index (torchrun sets LOCAL_RANK)."""
    import torch

    if device.type == "cuda" and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", world()[0])) % torch.cuda.device_count())
    return device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, size: int, port: int, device: str, fn: Callable[..., Any], args: tuple) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    dist.init_process_group(_backend(device), rank=rank, world_size=size, timeout=TIMEOUT)
    try:
        fn(*args)
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches every rank; rank 0 reports it
    finally:
        dist.destroy_process_group()


def run_local(nproc: int, device: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` on `nproc` local ranks: this process is rank 0 (its result is returned), ranks
    1..nproc-1 are spawned processes. `fn` and `args` must be picklable (spawn start method)."""
    if nproc <= 1:
        return fn(*args)
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if dist.is_initialized():
        raise MirrorcError("--nproc: already inside a process group (torchrun); leave --nproc out")
    port = _free_port()
    spawn = mp.get_context("spawn")
    workers = [spawn.Process(target=_worker, args=(rank, nproc, port, device, fn, args)) for rank in range(1, nproc)]
    for w in workers:
        w.start()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK="0")
    dist.init_process_group(_backend(device), rank=0, world_size=nproc, timeout=TIMEOUT)
    try:
        result = fn(*args)
    finally:
        dist.destroy_process_group()
        for w in workers:
            w.join()
    failed = [rank for rank, w in enumerate(workers, 1) if w.exitcode]
    if failed:
        raise MirrorcError(f"--nproc: rank(s) {failed} failed (their error is printed above)")
    return result
