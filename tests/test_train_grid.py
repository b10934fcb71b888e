"""Many independent trainings (mirrorc.train.grid): the attack grid one after another in this process
and as Ray tasks on a local 2-CPU Ray give the same accuracies; jobs come back in their order; a
user error inside a task is the same one line; --ray without Ray says how to install it."""

from __future__ import annotations

import os
import sys

import pytest

from helpers import DATA_DIR, ROOT, needs_mnist


def _has_cuda() -> bool:
    try:
        import torch
    except ModuleNotFoundError:
        return False
    return torch.cuda.is_available()


def _square_after_check(x: int) -> int:
    from mirrorc.errors import MirrorcError

    if x < 0:
        raise MirrorcError(f"job input {x}: must be >= 0")
    return x * x


def test_sequential_jobs_keep_their_order_and_log_one_line_each():
    from mirrorc.train.grid import run_tasks

    lines: list[str] = []
    seen: list[tuple[int, int]] = []
    out = run_tasks(
        _square_after_check,
        [(3,), (1,), (2,)],
        desc="squares",
        names=["three", "one", "two"],
        on_result=lambda i, r: seen.append((i, r)),
        log=lines.append,
    )
    assert out == [9, 1, 4] and seen == [(0, 9), (1, 1), (2, 4)]
    # not a terminal (pytest captures stderr): one line per finished job, saying what is left
    print("\n".join(lines))
    assert len(lines) == 3
    assert lines[0].startswith("squares: 1/3 done (three,") and lines[0].endswith("0 running, 2 left")
    assert lines[2].startswith("squares: 3/3 done (two,") and lines[2].endswith("0 running, 0 left")


def test_ray_option_without_ray_is_one_line_saying_how_to_install(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mirrorc.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    run = CliRunner().invoke(main, ["attack", str(tmp_path), "--data", "mnist", "--ray", "auto", "--device", "cpu"])
    print(run.output)
    assert run.exit_code == 2, run.output
    assert (
        run.output.strip()
        == "mirrorc: error: --ray: Ray is not installed; pip install 'mirrorc[ray]' (or pip install ray)"
    )


def test_gpu_index_with_ray_is_refused(monkeypatch):
    from mirrorc.errors import MirrorcError
    from mirrorc.train.grid import check_device, check_ray

    check_device("auto", "cuda")
    check_device(None, "cuda:1")
    with pytest.raises(MirrorcError, match="--device cuda:1: with --ray each task gets a GPU of its own"):
        check_device("auto", "cuda:1")
    monkeypatch.setitem(sys.modules, "ray", None)  # without --ray, Ray is neither needed nor imported
    check_ray(None, "cuda:1")
    with pytest.raises(MirrorcError, match="Ray is not installed"):
        check_ray("auto", "cpu")


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'mirrorc[ray]')")
    # tests/ on the workers' path: the jobs here call this module's functions
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={
            "env_vars": {"MIRRORC_THREADS": "1", "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests")))}
        },
    )
    yield ray
    ray.shutdown()


@pytest.mark.slow  # starts Ray: a few seconds
def test_user_error_inside_a_ray_task_is_the_same_one_line(local_ray):
    from mirrorc.errors import MirrorcError
    from mirrorc.train.grid import run_tasks

    assert run_tasks(_square_after_check, [(2,), (5,)], ray="auto", log=lambda line: None) == [4, 25]
    with pytest.raises(MirrorcError) as caught:
        run_tasks(_square_after_check, [(2,), (-1,)], ray="auto", log=lambda line: None)
    assert str(caught.value) == "job input -1: must be >= 0"


@pytest.mark.slow
@needs_mnist
def test_attack_grid_on_local_ray_equals_the_sequential_grid(local_ray, tmp_path):
    """LeNet-5 MirrorNet on a slice of real MNIST; 2 attacks x 1 budget x 2 seeds, a few steps each:
    the same accuracies (and chosen learning rates) in this process and as Ray tasks on 2 CPUs."""
    import onnx
    import torch

    from mirrorc.attack import thief
    from mirrorc.train.data import Dataset, load_dataset
    from mirrorc.train.loop import TrainConfig, train
    from test_attack_lenet import lenet_mirrornet

    full = load_dataset("mnist", data_dir=str(DATA_DIR), input_shape=(1, 28, 28))
    data = Dataset(full.x_train[:2000], full.y_train[:2000], full.x_test[:1000], full.y_test[:1000], 10, full.classes)
    trained = train(
        lenet_mirrornet(2),
        data.x_train,
        data.y_train,
        TrainConfig(epochs=1, batch_size=64, val_fraction=0.0),
        logits="mirrornet_logits",
        backbone_logits="backbone_logits",
    )
    onnx.save(trained.model, str(tmp_path / "mirrornet.onnx"))
    schedule = thief.Schedule(epochs=1, min_steps=40, lr_grid=(1e-3, 3e-3), trial_fraction=0.5, device="cpu")
    grid = dict(budgets=[200], seeds=2, schedule=schedule, attacks=("finetune_all", "replace_cpm"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task trains: float sums in the same order
    try:
        here = thief.run(tmp_path, data, **grid, log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    lines: list[str] = []
    on_ray = thief.run(tmp_path, data, **grid, ray="auto", log=lines.append)

    def cells(report: dict) -> dict:
        return {
            (r["attack"], r["budget"], r["seed"]): (r["accuracy"], r["lr"], r["val_accuracy"])
            for r in report["results"]
        }

    a, b = cells(here), cells(on_ray)
    assert len(a) == 4 and a.keys() == b.keys()
    largest = max(abs(a[k][0] - b[k][0]) for k in a)
    print("(accuracy %, lr, validation %) per cell, sequential / Ray:", {k: (a[k], b[k]) for k in a})
    print(f"largest accuracy difference, sequential vs Ray: {largest}")
    assert a == b and here["head_start"] == on_ray["head_start"]
    assert len(lines) == 4 and all(" done (" in line for line in lines)
    print(lines[-1], f"(MIRRORC_THREADS={os.environ.get('MIRRORC_THREADS')})")


@pytest.mark.slow
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU; this torch build sees none")
@needs_mnist
def test_attack_cell_on_cuda_scores_close_to_cpu(tmp_path):
    """--device reaches the attack trainings: one cell on the GPU (float32, DataLoader workers, pinned
    memory) scores within a few points of the same cell on the CPU."""
    import onnx

    from mirrorc.attack import thief
    from mirrorc.train.data import load_dataset
    from test_attack_lenet import lenet_mirrornet

    data = load_dataset("mnist", data_dir=str(DATA_DIR), input_shape=(1, 28, 28))
    onnx.save(lenet_mirrornet(2), str(tmp_path / "mirrornet.onnx"))
    view = thief.load_view(tmp_path)
    x, y, xt, yt = data.x_train[:300], data.y_train[:300], data.x_test[:1000], data.y_test[:1000]
    acc = {}
    for device in ("cpu", "cuda"):
        schedule = thief.Schedule(epochs=1, min_steps=60, lr_grid=(1e-3,), device=device)
        acc[device] = thief.score_cell(view, "finetune_all", x, y, xt, yt, schedule, 0, 300).accuracy
    print(f"finetune_all accuracy % cpu {acc['cpu']} cuda {acc['cuda']}; difference {abs(acc['cpu'] - acc['cuda'])}")
    assert abs(acc["cpu"] - acc["cuda"]) < 3.0
