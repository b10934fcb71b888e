"""`mirrorc check` as a user runs it: every node that stops a model in one list (exit 1), a model that
goes all the way (exit 0), bad input (exit 2), and `mirrorc compile` refusing what check refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import test_core_fixtures as F


def _mirrorc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirrorc.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def two_unsupported(tmp_path: Path) -> str:
    """Softsign in stage 1 (the backbone trains it: no torch part) and LpNormalization across the
    channels in stage 2 (copied into the CPM: no narrowing, no torch part, no C emitter)."""
    b = F.Builder(6)
    x = b.op("MaxPool", b.op("Relu", b.op("Softsign", b.conv("x", 1, 4))), kernel_shape=[2, 2], strides=[2, 2])
    x = b.op("LpNormalization", b.op("Relu", b.conv(x, 4, 4)), axis=1, p=2)
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(x, 4, 4))), axis=1)
    path = tmp_path / "two_unsupported.onnx"
    onnx.save(b.model([1, 8, 8], b.gemm(x, 4, 3), 3), str(path))
    return str(path)


def test_every_stopping_node_is_listed(two_unsupported):
    r = _mirrorc("check", two_unsupported)
    print(r.stdout)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "will not go through" in lines[0] and "2 problem(s)" in lines[0]
    assert lines[1].strip() == "node 'softsign4' (Softsign): not supported for training"
    assert lines[2].strip() == (
        "node 'lpnormalization11' (LpNormalization): "
        "the mirror pass cannot narrow it, not supported for training, no C emitter"
    )


def test_check_json_shape(two_unsupported):
    r = _mirrorc("check", two_unsupported, "--json")
    assert r.returncode == 1, r.stderr
    result = json.loads(r.stdout)
    assert result["goes_through"] is False and result["steps"] == ["registry"]
    assert result["taps"] >= 2 and "LpNormalization" in result["ops"]
    assert [(p["node"], p["op"], p["missing"]) for p in result["problems"]] == [
        ("softsign4", "Softsign", ["torch"]),
        ("lpnormalization11", "LpNormalization", ["narrow", "torch", "emit"]),
    ]
    assert all(isinstance(p["reason"], str) and p["reason"] for p in result["problems"])


def test_compile_refuses_what_check_refuses_in_one_line(two_unsupported, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    x = rng.integers(0, 255, (24, 8, 8)).astype(np.uint8)
    np.savez(data, x_train=x[:16], y_train=np.arange(16) % 3, x_test=x[16:], y_test=np.arange(8) % 3)
    r = _mirrorc("compile", two_unsupported, "--data", str(data), "--epochs", "0", "-o", str(tmp_path / "build"))
    lines = r.stderr.strip().splitlines()
    print(lines)
    assert r.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("mirrorc: error: ") and "'lpnormalization11'" in lines[0]
    assert "LpNormalization" in lines[0]


@pytest.mark.parametrize("name", ["lenet5", "tiny_ghostnet"])
def test_a_model_that_goes_through(example_models, tmp_path, name):
    path = str(example_models[name]) if name in example_models else F.write(tmp_path, name)
    r = _mirrorc("check", path, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["goes_through"] is True and result["problems"] == []
    assert result["steps"] == ["registry", "compile_to_c", "torch forward"]
    assert result["c_files"] > 0
    if name == "lenet5":
        text = _mirrorc("check", path)
        assert text.returncode == 0 and "goes all the way (12 nodes, 4 taps)" in text.stdout


def test_a_canonicalize_refusal_is_a_problem_not_bad_input(tmp_path):
    # attention's MatMul of two activations: canonicalize refuses it; check lists it (exit 1)
    b = F.Builder(1)
    x = b.op("Relu", b.conv("x", 1, 4))
    x = b.op("Flatten", b.op("MatMul", x, b.op("Transpose", x, perm=[0, 1, 3, 2])), axis=1)
    path = tmp_path / "attention.onnx"
    onnx.save(b.model([1, 4, 4], b.gemm(x, 64, 3), 3), str(path))
    r = _mirrorc("check", str(path), "--json")
    assert r.returncode == 1, r.stderr
    (problem,) = json.loads(r.stdout)["problems"]
    print(problem)
    assert problem["reason"].startswith("canonicalize: ") and "attention" in problem["reason"]


def test_bad_input_is_exit_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    r = _mirrorc("check", str(bad))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("mirrorc: error: load:")
