"""Protected inference end to end on the fixture deployment: onnxruntime runs normal.onnx here, the
TA runs in the simulator's process; and `mirrorc run`."""

from __future__ import annotations

import builtins
import io
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from mirrorc.cli import main
from mirrorc.errors import MirrorcError
from mirrorc.tee.runtime import ProtectedModel
from test_ta_support import fixture_deployment_labels, write_fixture_deployment


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    build = tmp_path_factory.mktemp("deployment")
    write_fixture_deployment(build)
    return build


@pytest.mark.parametrize("mode", ["stream", "single"])
def test_predict_matches_reference(build, mode):
    x = np.random.default_rng(1).normal(size=(300, 5)).astype(np.float32)
    with ProtectedModel(build, tee="sim", mode=mode) as model:
        labels = model.predict(x)
        one_by_one = np.concatenate([model.predict(x[i]) for i in range(100)])  # the batch-1 binding
    want = fixture_deployment_labels(build, x)
    assert (one_by_one == want[:100]).all()
    assert labels.dtype == np.int64
    assert (labels == want).all(), f"{(labels != want).sum()} of {len(x)} labels differ"


def test_backbone_one_fills_what_the_ta_reads(build):
    """The batch-1 normal-world half writes exactly normal.onnx's outputs into the TA's buffer."""
    x = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    with ProtectedModel(build, tee="sim", mode="single") as model:
        for i in range(3):
            model.backbone_one(x[i : i + 1])
            want = np.concatenate([o.ravel() for o in model.backbone_outputs(x[i : i + 1])])
            assert np.array_equal(model.buffer, want)


def test_normal_world_never_reads_the_ta(build, monkeypatch):
    """Once the simulator exists, the normal-world process opens nothing under ta/ (the weights)."""
    ProtectedModel(build).close()  # builds the simulator (in a child process) if needed
    ta_dir = str((build / "ta").resolve())
    real_open, real_os_open = builtins.open, os.open

    def guarded(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and os.path.realpath(path).startswith(ta_dir):
            if not os.path.realpath(path).endswith("sim.json"):
                raise AssertionError(f"normal world opened {path}")
        return real_open(path, *args, **kwargs)

    def guarded_os(path, *args, **kwargs):
        if (
            isinstance(path, (str, os.PathLike))
            and os.path.realpath(path).startswith(ta_dir)
            and not os.path.realpath(path).endswith("sim.json")
        ):
            raise AssertionError(f"normal world opened {path}")
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)
    monkeypatch.setattr(os, "open", guarded_os)
    x = np.random.default_rng(2).normal(size=(10, 5)).astype(np.float32)
    with ProtectedModel(build, mode="single") as model:
        assert (model.predict(x) == fixture_deployment_labels(build, x)).all()


def test_bad_inputs_are_user_errors(build, tmp_path):
    with pytest.raises(MirrorcError, match=r"input 'x': shape \[2, 6\]"):
        with ProtectedModel(build) as model:
            model.predict(np.zeros((2, 6), np.float32))
    with pytest.raises(MirrorcError, match="plan.json: not found"):
        ProtectedModel(tmp_path)
    with pytest.raises(MirrorcError, match="mode must be"):
        ProtectedModel(build, mode="batch")


def test_cli_run(build, tmp_path):
    x = np.random.default_rng(3).normal(size=(7, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    want = fixture_deployment_labels(build, x).tolist()
    for mode in ("stream", "single"):
        res = runner.invoke(main, ["run", str(build), "--input", str(tmp_path / "x.npy"), "--mode", mode])
        assert res.exit_code == 0, res.output
        assert [int(v) for v in res.output.split()] == want
    res = runner.invoke(main, ["run", str(build), "--input", str(tmp_path / "x.npy"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["labels"] == want
    # bad input: one line, exit 2
    np.save(tmp_path / "bad.npy", np.zeros((3, 4), np.float32))
    for args in (
        ["--input", str(tmp_path / "bad.npy")],
        ["--input", str(tmp_path / "nothing.npy")],
        ["--input", str(tmp_path / "x.npy"), "--tee", "optee"],
    ):
        res = runner.invoke(main, ["run", str(build), *args])
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("mirrorc: error:")
