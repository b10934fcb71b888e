"""Many independent trainings: the attack grid's cells (mirrorc.attack.thief) and the benchmarks'
compiles. `run_tasks(fn, jobs)` computes `fn(*job)` for every job and returns the results in the
order of `jobs`: one after another in this process by default, or as Ray tasks with `ray="auto"`
(the Ray cluster this process is in, else a local one on this machine's cores) or a cluster's
address (`ray://HOST:10001`, `HOST:6379`). Ray is the optional extra `pip install 'mirrorc[ray]'`.

Each Ray task asks for one CPU (`num_cpus=1`) and trains with one torch thread, so a 2-core machine
runs two cells at once; with a CUDA device (or `auto` on a cluster with GPUs) each task asks for one
GPU instead, which Ray numbers 0 inside the task (so `cuda:N` is refused with Ray). A job must compute its
result from its own arguments alone (its seeds come from its cell), so the results are the same in
either mode and in any order; tasks run in other processes, so `fn` and the arguments must pickle
(Ray's cloudpickle: lambdas do), and files a job reads (a build directory) must be reachable from the
worker: one machine, or a shared file system. An argument object shared by several jobs (the same
Python object: a dataset, a model) is put into Ray's object store once, not once per task.

Progress: on a terminal one bar with jobs done / running / left; otherwise one line per finished
job (`log`, stderr by default), as the epoch bar does for training.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from mirrorc.errors import MirrorcError

R = TypeVar("R")

RAY_HINT = "--ray: Ray is not installed; pip install 'mirrorc[ray]' (or pip install ray)"
# plain values are cheap to send inline; other shared objects go to the object store once
_INLINE = (int, float, str, bytes, bool, type(None))


def require_ray() -> ModuleType:
    try:
        import ray
    except ModuleNotFoundError:
        raise MirrorcError(RAY_HINT) from None
    return ray


def connect(address: str) -> ModuleType:
    """Ray, joined to the cluster `address` names ("auto": the one this process is already in, the one
    RAY_ADDRESS names, the last one `ray start` began on this machine, else a new local one: what
    ray.init() does without an address). Workers get MIRRORC_THREADS=1 and, so that a
    checkout runs without being installed, this checkout's folder on their PYTHONPATH."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    try:
        ray.init(
            address=None if address == "auto" else address,
            runtime_env={"env_vars": {"MIRRORC_THREADS": "1", "PYTHONPATH": path}},
            include_dashboard=False,
            logging_level="WARNING",
        )
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MirrorcError(f"--ray {address}: cannot join the Ray cluster ({first})") from None
    return ray


def add_grid_arguments(parser: argparse.ArgumentParser, jobs: str, ray_scope: str = "") -> None:
    """A benchmark grid's `--device` and `--ray` options (what run_tasks and check_ray take); `jobs` names
    what runs ("the cells"), `ray_scope` any limit on where Ray may run them."""
    parser.add_argument("--device", default="auto", help=f"where {jobs} train: auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--ray",
        default=None,
        metavar="auto|ADDRESS",
        help=f"run {jobs} as Ray tasks{ray_scope} (one CPU, one torch thread each); pip install 'mirrorc[ray]'",
    )


def check_device(ray: str | None, device: str) -> None:
    """Ray gives each task its own GPU (renumbered from 0 inside the task): a GPU index means nothing there."""
    if ray and device.startswith("cuda:"):
        raise MirrorcError(f"--device {device}: with --ray each task gets a GPU of its own; say --device cuda")


def check_ray(ray: str | None, device: str) -> None:
    """Before any work: a --ray run needs Ray installed and a --device it can hand out (check_device)."""
    if ray:
        require_ray()
        check_device(ray, device)


def _in_task(fn: Callable[..., R], *args: Any) -> R:
    """What a Ray task runs: `fn(*args)` with one torch thread (the task holds one CPU)."""
    os.environ["MIRRORC_THREADS"] = "1"  # what mirrorc.train.loop.require_torch reads
    try:
        import torch
    except ModuleNotFoundError:  # a job that trains nothing (a subprocess compile) may run without torch
        pass
    else:
        torch.set_num_threads(1)
    return fn(*args)


class _Progress:
    """Jobs done / running / left: a bar on a terminal, else one line per finished job."""

    def __init__(self, total: int, desc: str, log: Callable[[str], None] | None) -> None:
        from mirrorc.cli.common import progress

        self.total, self.desc, self.done = total, desc, 0
        self.bar = progress(total=total, desc=desc, unit="job", leave=False)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))

    def running(self, count: int) -> None:
        self.bar.set_postfix(running=count, left=self.total - self.done - count)

    def finished(self, name: str, seconds: float, running: int) -> None:
        self.done += 1
        self.bar.update(1)
        self.running(running)
        if self.bar.disable:
            left = self.total - self.done - running
            self.log(
                f"{self.desc}: {self.done}/{self.total} done ({name}, {seconds:.1f}s); {running} running, {left} left"
            )

    def close(self) -> None:
        self.bar.close()


def run_tasks(
    fn: Callable[..., R],
    jobs: Sequence[tuple],
    *,
    ray: str | None = None,
    device: str = "cpu",
    desc: str = "jobs",
    names: Sequence[str] | None = None,
    on_result: Callable[[int, R], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[R]:
    """`[fn(*job) for job in jobs]`, here one after another (`ray=None`) or as Ray tasks (`ray`: "auto"
    or an address). `names` label the jobs in the progress lines; `on_result(i, result)` runs in this
    process as job i finishes (in the order they finish: a benchmark writes its table there)."""
    if not jobs:
        return []  # nothing to run: no bar, and no Ray cluster to start
    names = list(names) if names is not None else [f"job {i + 1}" for i in range(len(jobs))]
    bar = _Progress(len(jobs), desc, log)
    try:
        if ray is None:
            return _sequential(fn, jobs, names, on_result, bar)
        check_device(ray, device)
        cluster = connect(ray)
        # auto: a GPU per task when the cluster has GPUs (a task without one sees none: CPU)
        gpu = device.startswith("cuda") or (device == "auto" and cluster.cluster_resources().get("GPU", 0) > 0)
        return _on_ray(cluster, fn, jobs, names, on_result, bar, gpu=gpu)
    finally:
        bar.close()


def _sequential(
    fn: Callable[..., R],
    jobs: Sequence[tuple],
    names: list[str],
    on_result: Callable[[int, R], None] | None,
    bar: _Progress,
) -> list[R]:
    results = []
    for i, job in enumerate(jobs):
        bar.running(1)
        began = time.perf_counter()
        results.append(fn(*job))
        bar.finished(names[i], time.perf_counter() - began, 0)
        if on_result is not None:
            on_result(i, results[-1])
    return results


def _on_ray(
    ray: ModuleType,
    fn: Callable[..., R],
    jobs: Sequence[tuple],
    names: list[str],
    on_result: Callable[[int, R], None] | None,
    bar: _Progress,
    gpu: bool,
) -> list[R]:
    task = ray.remote(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, max_retries=0)(_in_task)
    fn_ref = ray.put(fn)
    # an object several jobs share is sent once (Ray resolves top-level ObjectRef arguments in the task)
    counts: dict[int, int] = {}
    for job in jobs:
        for arg in job:
            if not isinstance(arg, _INLINE):
                counts[id(arg)] = counts.get(id(arg), 0) + 1
    shared = {key: None for key, n in counts.items() if n > 1}
    for job in jobs:
        for arg in job:
            if id(arg) in shared and shared[id(arg)] is None:
                shared[id(arg)] = ray.put(arg)

    # as many tasks in flight as the cluster has slots: "running" is then what runs, and the jobs
    # start in their order
    slots = max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
    results: list[Any] = [None] * len(jobs)
    pending: dict[Any, tuple[int, float]] = {}
    started = 0
    try:
        while True:
            while len(pending) < slots and started < len(jobs):
                args = [shared[id(a)] if id(a) in shared else a for a in jobs[started]]
                pending[task.remote(fn_ref, *args)] = (started, time.perf_counter())
                started += 1
            bar.running(len(pending))
            if not pending:
                return results
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            i, began = pending.pop(ready)
            results[i] = _get(ray, ready)
            # running: what runs once the freed slot is refilled, at the top of the loop
            bar.finished(names[i], time.perf_counter() - began, min(slots, len(pending) + len(jobs) - started))
            if on_result is not None:
                on_result(i, results[i])
    finally:
        for ref in pending:  # an error or Ctrl-C here: the other tasks are not wanted any more
            ray.cancel(ref, force=True)


def _get(ray: ModuleType, ref: Any) -> Any:
    """A task's result; its MirrorcError comes back as the same one line, anything else with its traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, MirrorcError):
            raise MirrorcError(str(e.cause)) from None
        raise
