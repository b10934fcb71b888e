"""End to end on real MNIST: `mirrorc compile` (LeNet-5, C = 2, a subset, a few epochs) then
`mirrorc evaluate`, all through the CLI. The MirrorNet must be accurate and the backbone alone must not
be; cutting the CPM out must make that check fail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

pytest.importorskip("torch")

DATA = os.environ.get("MIRRORC_DATA")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not DATA or not (Path(DATA) / "mnist").is_dir(),
        reason="real MNIST not available: set MIRRORC_DATA to the datasets folder",
    ),
]

MIN_MIRRORNET_ACC = 95.0
MIN_DELTA_P = 20.0


def assert_protected(result: dict) -> None:
    """What a useful MirrorNet build gives: an accurate whole, a poor stolen backbone."""
    assert result["mirrornet_acc"] >= MIN_MIRRORNET_ACC, f"MirrorNet accuracy {result['mirrornet_acc']}%"
    assert result["delta_p"] >= MIN_DELTA_P, f"delta p {result['delta_p']} points"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    from mirrorc.cli import main

    out = tmp_path_factory.mktemp("e2e") / "build"
    args = [
        "compile",
        "examples/models/lenet5.onnx",
        "--data",
        "mnist",
        "-C",
        "2",
        "-o",
        str(out),
        "--epochs",
        "3",
        "--limit-train",
        "8000",
        "--batch-size",
        "64",
        "--lr",
        "2e-3",
        "--backbone-penalty",
        "0.3",
        "--seed",
        "0",
        "--no-baseline",
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    print("compile summary:", {k: summary[k] for k in ("val_mirrornet_acc", "val_backbone_acc")})
    return out


def test_compile_writes_the_build(build):
    for name in ("mirrornet.onnx", "report.txt", "report.json", "training.json"):
        assert (build / name).is_file(), name
    assert not list(build.parent.glob(".build*")), "temporary or checkpoint directories left behind"
    onnx.checker.check_model(onnx.load(str(build / "mirrornet.onnx")), full_check=True)
    training = json.loads((build / "training.json").read_text())
    assert len(training["mirrornet"]) == 3 and training["preprocessing"]["mean"]


def test_evaluate_mnist_protected(build):
    from mirrorc.cli import main

    result = CliRunner().invoke(main, ["evaluate", str(build), "--data", "mnist", "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    print("evaluate:", res)
    assert res["test_images"] == 10000
    assert_protected(res)
    assert res["original_acc"] is None  # --no-baseline (keeps CI short); benchmarks/table2.py compares
    split = res.get("split_execution")
    if split is not None:  # the secure part was built: the TA must give the same labels
        assert split["agree"] == split["images"], split


def test_cutting_the_cpm_fails_the_check(build, tmp_path):
    """Zero every CPM weight: mirrornet_logits = backbone_logits, and the protection check must fail."""
    from mirrorc.evaluate import evaluate, model_input_shape
    from mirrorc.train.data import load_dataset

    cut = tmp_path / "cut"
    cut.mkdir()
    model = onnx.load(str(build / "mirrornet.onnx"))
    zeroed = 0
    for init in model.graph.initializer:
        if init.name.startswith("cpm/"):
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(arr), init.name))
            zeroed += 1
    assert zeroed > 0
    onnx.save(model, str(cut / "mirrornet.onnx"))
    data = load_dataset("mnist", data_dir=None, input_shape=model_input_shape(cut / "mirrornet.onnx"), limit_train=1)
    res = evaluate(cut, data.x_test, data.y_test, split_check=False)
    print("CPM cut:", res)
    assert res["delta_p"] == 0.0
    with pytest.raises(AssertionError):
        assert_protected(res)
