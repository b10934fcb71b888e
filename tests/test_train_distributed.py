"""Where training runs: --device, DistributedDataParallel on 2 CPU processes (gloo), synchronised
BatchNorm, resume after a distributed run, Ctrl-C's resume line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from examples.make_models import _Builder  # noqa: E402
from helpers import DATA_DIR, example_model, initializers, needs_mnist  # noqa: E402
from mirrorc.errors import MirrorcError  # noqa: E402
from mirrorc.train.distributed import resolve_device, run_local, shard, world  # noqa: E402
from mirrorc.train.loop import TrainConfig, train  # noqa: E402

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this torch build sees none")


def tiny_data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.int64)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32) * 0.5
    x[np.arange(n), 0, y, y] += 3.0  # a learnable signal: a bright pixel on the diagonal per class
    return x, y


def bn_net() -> onnx.ModelProto:
    """conv -> BatchNorm -> relu -> pool -> dense: the smallest classifier with batch statistics. The
    conv has no bias: BatchNorm cancels it, its gradient is rounding noise that Adam would blow up."""
    b = _Builder(0)
    x = b.pool(b.op("Relu", b.bn(b.conv("input", 1, 4, 3, pad=1, bias=False), 4)))
    x = b.dense(b.op("Flatten", x, axis=1), 4 * 14 * 14, 10)
    return b.model("bn_net", [1, 28, 28], x, "logits", 10)


def train_and_save(
    model: onnx.ModelProto,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    out: str,
    ckpt: str | None = None,
    resume: bool = False,
) -> None:
    """Runs on every rank: train, then save this rank's weights as <out>.rank<r>.npz."""
    result = train(model, x, y, config, checkpoint=ckpt, resume=resume, fingerprint="t")
    np.savez(f"{out}.rank{world()[0]}.npz", **initializers(result.model, float_only=True))
    if world()[0] == 0:
        Path(f"{out}.history.json").write_text(json.dumps([vars(h) for h in result.history]))


def weights(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return dict(f)


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_device_option():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(MirrorcError, match="--device: cuda:0 asked for"):
            resolve_device("cuda:0")
    for bad in ("gpu", "cuda:x", "cuda:"):
        with pytest.raises(MirrorcError, match="--device: one of auto, cpu, cuda, cuda:N"):
            resolve_device(bad)


def test_shard_is_a_disjoint_cover_of_the_batch():
    batch = np.arange(13)
    parts = [shard(batch, r, 2) for r in range(2)]
    assert np.array_equal(np.concatenate(parts), batch) and [len(p) for p in parts] == [7, 6]


@no_cuda
def test_cuda_mixed_precision_trains_close_to_cpu():
    x, y = tiny_data()
    cfg = TrainConfig(epochs=1, batch_size=16, seed=0)
    cpu = initializers(train(example_model("lenet5"), x, y, replace(cfg, device="cpu")).model, float_only=True)
    gpu = initializers(train(example_model("lenet5"), x, y, replace(cfg, device="cuda")).model, float_only=True)
    diff = max_diff(cpu, gpu)
    print("cuda (autocast) vs cpu: max weight difference", diff)
    assert diff < 5e-3  # 5 Adam steps of lr 1e-3: at most ~lr per step apart


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume(tmp_path):
    """DDP on 2 gloo ranks: both ranks end with the same weights, which are the single process's up
    to float rounding (every global batch splits in two equal halves, so the averaged gradient is
    the global batch's); a run stopped after epoch 1 resumes to the same weights as a straight run."""
    x, y = tiny_data()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=1, device="cpu")
    run_local(1, "cpu", train_and_save, example_model("lenet5"), x, y, cfg, str(tmp_path / "one"))
    run_local(2, "cpu", train_and_save, example_model("lenet5"), x, y, cfg, str(tmp_path / "two"))
    one, rank0, rank1 = (weights(str(tmp_path / f)) for f in ("one.rank0.npz", "two.rank0.npz", "two.rank1.npz"))
    between_ranks, to_single = max_diff(rank0, rank1), max_diff(one, rank0)
    print(f"2 ranks: max weight difference rank 0 vs 1 {between_ranks}, vs 1 process {to_single}")
    assert between_ranks == 0.0
    assert 0 < max_diff(one, initializers(example_model("lenet5"), float_only=True))  # it trained
    assert to_single < 1e-4  # 10 Adam steps of lr 3e-3; float rounding of the split sums only
    h1, h2 = (json.loads((tmp_path / f"{n}.history.json").read_text()) for n in ("one", "two"))
    print("epoch losses, 1 process", [h["loss"] for h in h1], "2 processes", [h["loss"] for h in h2])
    assert [h["val_acc"] for h in h1] == [h["val_acc"] for h in h2]
    assert np.allclose([h["loss"] for h in h1], [h["loss"] for h in h2], rtol=1e-5)

    ckpt = str(tmp_path / "ck.pt")
    one_epoch = replace(cfg, epochs=1)
    run_local(2, "cpu", train_and_save, example_model("lenet5"), x, y, one_epoch, str(tmp_path / "a"), ckpt)
    run_local(2, "cpu", train_and_save, example_model("lenet5"), x, y, cfg, str(tmp_path / "b"), ckpt, True)
    resumed = weights(str(tmp_path / "b.rank0.npz"))
    diff = max_diff(resumed, rank0)
    print("2 ranks, resumed after epoch 1 vs straight: max weight difference", diff)
    assert diff == 0.0 and max_diff(resumed, weights(str(tmp_path / "b.rank1.npz"))) == 0.0


def test_batchnorm_statistics_are_the_global_batch_s(tmp_path):
    """Under DDP the interpreter's BatchNorm normalises by the statistics of the whole global batch
    (SyncBatchNorm): running mean/var and weights match one process on the same batches."""
    x, y = tiny_data(32)
    cfg = TrainConfig(epochs=1, batch_size=16, seed=0, val_fraction=0.0, device="cpu")
    run_local(1, "cpu", train_and_save, bn_net(), x, y, cfg, str(tmp_path / "one"))
    run_local(2, "cpu", train_and_save, bn_net(), x, y, cfg, str(tmp_path / "two"))
    one, two = weights(str(tmp_path / "one.rank0.npz")), weights(str(tmp_path / "two.rank0.npz"))
    assert max_diff(two, weights(str(tmp_path / "two.rank1.npz"))) == 0.0
    stats = [k for k in one if k.endswith((".mean", ".var"))]
    stat_diff = max(float(np.abs(one[k] - two[k]).max()) for k in stats)
    print(f"BatchNorm running stats, 2 ranks vs 1: max difference {stat_diff}; all weights {max_diff(one, two)}")
    assert stats and not np.allclose(one["bn2.mean"], 0)  # the statistics moved
    assert stat_diff < 1e-5 and max_diff(one, two) < 1e-4


def test_ctrl_c_says_how_to_resume(monkeypatch):
    import mirrorc.compile
    from mirrorc.cli import main

    def interrupted(*args: object, **kwargs: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(mirrorc.compile, "compile_model", interrupted)
    argv = ["compile", "m.onnx", "--data", "mnist", "-o", "my build"]
    monkeypatch.setattr("sys.argv", ["mirrorc", *argv])
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 130
    assert "resume with: mirrorc compile m.onnx --data mnist -o 'my build' --resume" in result.output


def test_bad_device_is_one_line_exit_2(tmp_path):
    from mirrorc.cli import main

    model = tmp_path / "lenet5.onnx"
    model.write_bytes(example_model("lenet5").SerializeToString())
    for argv in (
        ["compile", str(model), "--data", "mnist", "--device", "tpu"],
        ["attack", str(tmp_path), "--data", "mnist", "--device", "tpu"],
    ):
        result = CliRunner().invoke(main, argv)
        print(argv[0], result.exit_code, result.output.strip())
        assert result.exit_code == 2
        assert result.output.strip() == "mirrorc: error: --device: one of auto, cpu, cuda, cuda:N, not 'tpu'"


@pytest.mark.slow
@needs_mnist
def test_mnist_compile_on_two_processes_matches_one(tmp_path):
    """LeNet-5 / MNIST, 2000 images, 1 epoch: `compile --nproc 2` against one process. Tolerance 2
    points on the validation accuracies (the same global batches; only float rounding differs)."""
    from functools import partial

    from mirrorc.compile import compile_model

    model = tmp_path / "lenet5.onnx"
    model.write_bytes(example_model("lenet5").SerializeToString())
    config = TrainConfig(epochs=1, seed=0, backbone_penalty=0.3, device="cpu")
    summaries = {}
    for nproc in (1, 2):
        run = partial(
            compile_model,
            model,
            tmp_path / f"build{nproc}",
            data="mnist",
            data_dir=str(DATA_DIR),
            config=config,
            limit_train=2000,
        )
        summaries[nproc] = run_local(nproc, "cpu", run)
    for key in ("val_mirrornet_acc", "val_backbone_acc", "val_original_acc"):
        print(f"{key}: 1 process {summaries[1][key]}%, 2 processes {summaries[2][key]}%")
        assert abs(summaries[1][key] - summaries[2][key]) <= 2.0
    gap = {n: s["val_mirrornet_acc"] - s["val_backbone_acc"] for n, s in summaries.items()}
    print(f"Δp: 1 process {gap[1]:.1f}, 2 processes {gap[2]:.1f}")
    assert abs(gap[1] - gap[2]) <= 4.0 and (tmp_path / "build2" / "ta").is_dir()
