"""`mirrorc inspect` as a user runs it: a subprocess; bad input gives exit 2 and one stderr line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import test_core_fixtures as F


def _mirrorc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirrorc.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def lenet(example_models: dict[str, Path]) -> str:
    return str(example_models["lenet5"])


def test_inspect_json(lenet):
    r = _mirrorc("inspect", lenet, "--json", "-c", "2")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [layer["notation"] for layer in rep["layers"]] == [
        "conv[1, 6, 5, 28, 28]",
        "conv[6, 16, 5, 14, 10]",
        "dense[400, 120]",
        "dense[120, 84]",
        "dense[84, 10]",
    ]
    assert [s["tap"]["producer"] for s in rep["stages"][:-1]] == ["MaxPool", "MaxPool", "Relu", "Relu"]
    assert rep["stages"][-1]["tap"] is None
    assert rep["totals"]["macs"] == sum(layer["macs"] for layer in rep["layers"])
    assert 0 < rep["cpm"]["macs_vs_backbone"] < 0.05
    # the paper's LeNet-5 CPM at C=2 (Fig. 3, Eq. 1: C_l = 2 x 5^2 = 50)
    assert [layer["notation"] for layer in rep["cpm"]["layers"]] == [
        "conv[2, 2, 5, 14, 10]",
        "dense[50, 50]",
        "dense[50, 50]",
        "dense[50, 10]",
    ]


def test_inspect_text(lenet):
    r = _mirrorc("inspect", lenet)
    assert r.returncode == 0, r.stderr
    assert "tap 4 = 'relu11_out' after Relu [84]" in r.stdout
    assert "conv[6, 16, 5, 14, 10]" in r.stdout


def _bad_files(tmp_path: Path, lenet: str) -> dict[str, tuple[str, str]]:
    data = Path(lenet).read_bytes()
    (tmp_path / "text.onnx").write_text("this is not a model\n")
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 3])
    return {
        "not onnx": (str(tmp_path / "text.onnx"), "text.onnx"),
        "truncated": (str(tmp_path / "truncated.onnx"), "truncated.onnx"),
        "missing": (str(tmp_path / "nope.onnx"), "nope.onnx"),
        "int input": (F.write(tmp_path, "int_input"), "not float32"),
    }


@pytest.mark.parametrize("case", ["not onnx", "truncated", "missing", "int input", "unnarrowable"])
def test_bad_input_is_one_line_exit_2(tmp_path, lenet, case):
    if case == "unnarrowable":
        path, expect, extra = F.write(tmp_path, "unnarrowable"), "LpNormalization", ["-c", "2"]
    else:
        (path, expect), extra = _bad_files(tmp_path, lenet)[case], []
    r = _mirrorc("inspect", path, *extra)
    print(case, "->", r.stderr.strip())
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirrorc: error: ")
    assert expect in lines[0]
    assert "Traceback" not in r.stderr
