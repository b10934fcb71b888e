"""`mirrorc compile` on a small synthetic dataset: a failure after training leaves no build behind but keeps
the checkpoints, and --resume continues from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from mirrorc.compile import checkpoint_dir, compile_model  # noqa: E402
from mirrorc.errors import MirrorcError  # noqa: E402
from mirrorc.train.loop import TrainConfig  # noqa: E402


def test_failure_keeps_checkpoints_and_resume_continues(tmp_path, tiny_npz, monkeypatch):
    import mirrorc.compile as comp

    out = tmp_path / "build"
    logs: list[str] = []

    def broken(*args, **kwargs):
        raise MirrorcError("report: simulated failure after training")

    monkeypatch.setattr(comp, "_write_report", broken)
    with pytest.raises(MirrorcError, match="simulated"):
        compile_model(
            "examples/models/lenet5.onnx",
            out,
            data=str(tiny_npz),
            channels=1,
            config=TrainConfig(epochs=1, batch_size=32),
            baseline=False,
        )
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".build") and p != checkpoint_dir(out)]
    assert not out.exists() and not leftovers  # no half-written build
    assert (checkpoint_dir(out) / "mirrornet.pt").is_file()

    monkeypatch.undo()
    summary = compile_model(
        "examples/models/lenet5.onnx",
        out,
        data=str(tiny_npz),
        channels=1,
        config=TrainConfig(epochs=2, batch_size=32),
        baseline=True,
        resume=True,
        log=logs.append,
    )
    assert any("resumed" in line and "after epoch 1" in line for line in logs), logs
    training = json.loads((out / "training.json").read_text())
    assert [h["epoch"] for h in training["mirrornet"]] == [1, 2]
    assert {"mirrornet.onnx", "original.onnx", "training.json"} <= set(summary["files"])
    assert not checkpoint_dir(out).exists()  # removed once the build is complete


def test_labels_beyond_the_model_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.npz"
    np.savez(
        path,
        x_train=rng.random((20, 28, 28)),
        y_train=np.arange(20) % 12,
        x_test=rng.random((4, 28, 28)),
        y_test=np.arange(4),
    )
    with pytest.raises(MirrorcError, match="labels go up to 11 but the model has 10 classes"):
        compile_model(
            "examples/models/lenet5.onnx", tmp_path / "b", data=str(path), channels=1, config=TrainConfig(epochs=1)
        )
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("init", ["keep", "random"])
def test_init_keep_starts_from_the_models_own_weights(tmp_path, tiny_npz, init):
    import onnx
    from onnx import numpy_helper

    from passes.mirror import is_cpm

    source_path = "examples/models/lenet5.onnx"
    out = tmp_path / "build"
    summary = compile_model(
        source_path, out, data=str(tiny_npz), channels=1, init=init, config=TrainConfig(epochs=0), limit_train=40
    )
    source = {t.name: numpy_helper.to_array(t) for t in onnx.load(source_path).graph.initializer}

    def same_as_source(path):
        weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
        shared = [n for n in weights if n in source and not is_cpm(n) and weights[n].size > 1]
        assert shared, f"{path} shares no weight name with the source"
        return all(np.array_equal(weights[n], source[n]) for n in shared)

    assert same_as_source(out / "mirrornet.onnx") == (init == "keep")
    assert same_as_source(out / "original.onnx") == (init == "keep")
    assert summary["init"] == init
    assert json.loads((out / "training.json").read_text())["init"] == init
    assert json.loads((out / "report.json").read_text())["training"]["init"] == init
    assert f"(--init {init})" in (out / "report.txt").read_text()


def test_cli_resume_refuses_a_planted_checkpoint(tmp_path, tiny_npz):
    """`mirrorc compile --resume` with a file planted where a checkpoint goes: one line, exit 2, and
    the code the file carries never runs."""
    import pickle
    import subprocess
    import sys

    out = tmp_path / "build"
    marker = tmp_path / "code_ran"

    class RunsCode:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, (f"touch {marker}",))

    checkpoint_dir(out).mkdir()
    (checkpoint_dir(out) / "mirrornet.pt").write_bytes(pickle.dumps({"fingerprint": RunsCode()}, protocol=2))
    args = ["compile", "examples/models/lenet5.onnx", "-o", str(out), "--data", str(tiny_npz), "--epochs", "1"]
    r = subprocess.run(
        [sys.executable, "-m", "mirrorc.cli", *args, "--resume", "--channels", "1", "--no-baseline"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(r.stderr)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "mirrornet.pt: not a mirrorc checkpoint (refused by the weights-only unpickler:" in r.stderr
    assert "unsupported GLOBAL posix.system" in r.stderr
    assert not marker.exists() and not out.exists()


def test_failed_compile_leaves_no_empty_checkpoint_dir(tmp_path, tiny_npz, monkeypatch):
    import mirrorc.compile as comp

    def broken(*args, **kwargs):
        raise MirrorcError("train: simulated failure before the first checkpoint")

    monkeypatch.setattr(comp, "train", broken)
    out = tmp_path / "build"
    with pytest.raises(MirrorcError, match="simulated"):
        compile_model("examples/models/lenet5.onnx", out, data=str(tiny_npz), channels=1, config=TrainConfig(epochs=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.npz"]  # no build, no .build.checkpoints/
