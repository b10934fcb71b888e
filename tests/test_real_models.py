"""Real architectures end to end, as a user runs them: a few small entries of the held-out corpus,
exported by examples/export_real_models.py into a temporary cache, go through `mirrorc compile
--epochs 0` and `mirrorc evaluate` (split execution in the TA simulator against mirrornet.onnx), or
are refused with one line that names an op of the model; `mirrorc check` must say the same before.
benchmarks/real_models.py runs the whole corpus. Also two small exports that pin what canonicalize
does for real exporters: a fixed batch of 1 with dynamo's GatherND for AdaptiveAvgPool2d on a 1x1
map, and attention refused by name."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("torch", "torchvision", "timm", "onnxscript")),
        reason="needs the models extra: pip install -e '.[train,models]' (torchvision, timm, onnxscript)",
    ),
]

# entry -> must it go through today? The others may go through, or must be refused naming an op.
ENTRIES = {
    "resnet10t-timm-legacy-32": True,
    "mobilenet_v2-legacy-32": True,
    "shufflenet_v2_x0_5-legacy-224": True,  # shape arithmetic folded, Slice, ReduceMean
    "shufflenet_v2_x0_5-dynamo-32": True,  # Split
    "mobilenet_v3_small-dynamo-32": True,  # HardSwish, HardSigmoid squeeze-excite
}
IMAGES = 6


def _mirrorc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirrorc.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real_models")
    script = ROOT / "examples" / "export_real_models.py"
    subprocess.run([sys.executable, str(script), "--out", str(out), "--only", ",".join(ENTRIES)], check=True)
    return out


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32x32 RGB images (resized to 224x224 for the models that want it, as for CIFAR-10)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "rgb.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(32) % 10,
        x_test=rng.integers(0, 256, (IMAGES, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(IMAGES) % 10,
    )
    return path


def compile_and_evaluate(model: Path, data: Path, build: Path) -> tuple[dict | None, str]:
    """(evaluate's JSON, "") when the model goes through, else (None, the one error line)."""
    r = _mirrorc("compile", str(model), "--data", str(data), "--epochs", "0", "--no-baseline", "-o", str(build))
    if r.returncode == 0:
        r = _mirrorc("evaluate", str(build), "--data", str(data), "--json")
        if r.returncode == 0:
            return json.loads(r.stdout), ""
    assert r.returncode == 2, f"{model.name}: not a clean refusal (exit {r.returncode}):\n{r.stderr[-2000:]}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirrorc: error: "), r.stderr[-2000:]
    return None, lines[0]


@pytest.mark.parametrize("name", list(ENTRIES))
def test_corpus_entry_end_to_end_or_refused_naming_the_op(name, corpus, cifar_like, tmp_path):
    model = corpus / f"{name}.onnx"
    check = _mirrorc("check", str(model))
    print(check.stdout)
    result, refusal = compile_and_evaluate(model, cifar_like, tmp_path / "build")
    assert check.returncode == (0 if result is not None else 1), f"check and compile disagree: {check.stdout}"
    if result is not None:
        split = result["split_execution"]
        assert split["images"] == IMAGES and split["agree"] == IMAGES, split
        return
    assert not ENTRIES[name], f"{name} must go through today: {refusal}"
    ops = {n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node}
    named = set(re.findall(r"\b[A-Z][A-Za-z]+\b", refusal)) & ops
    assert named, f"{name}: the refusal names none of the model's ops: {refusal}"
    assert not refusal.startswith("mirrorc: error: canonicalize:"), refusal  # shape arithmetic folds


def _export(module, path: Path, *, dynamo: bool) -> Path:
    import torch

    x = torch.randn(1, 3, 32, 32)
    if dynamo:
        torch.onnx.export(module.eval(), (x,), dynamo=True, opset_version=18, verbose=False).save(str(path))
    else:
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=17)
    return path


def test_fixed_batch_dynamo_adaptive_pool_compiles_evaluates_and_runs(cifar_like, tmp_path):
    """VGG's head as the dynamo exporter writes it with batch 1: AdaptiveAvgPool2d(7) of a 1x1 map is
    Transpose -> GatherND -> Transpose -> ReduceMean, and the flatten is Reshape [1, 25088]."""
    import torch
    from torch import nn

    from mirrorc.pipeline import analyze

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(32),  # 1x1
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(8 * 49, 10),
    )
    model = _export(net, tmp_path / "head.onnx", dynamo=True)
    source = onnx.load(str(model))
    assert "GatherND" in {n.op_type for n in source.graph.node}  # what this test is about
    assert source.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1

    graph, info = analyze(model)
    assert info["input"]["shape"][0] == "N"  # the batch was relaxed
    assert "GatherND" not in {n.op for n in graph.nodes}
    result, refusal = compile_and_evaluate(model, cifar_like, tmp_path / "build")
    assert result is not None, refusal
    assert result["split_execution"]["agree"] == IMAGES
    assert "relaxed" in (tmp_path / "build" / "report.txt").read_text()


def test_attention_is_refused_by_name(tmp_path):
    import torch
    from torch import nn

    from mirrorc.errors import MirrorcError
    from mirrorc.pipeline import analyze

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.head = nn.Linear(3, 24), nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).chunk(3, dim=-1)
            a = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
            return self.head(a.mean(1))

    model = _export(Attention(), tmp_path / "attention.onnx", dynamo=False)
    with pytest.raises(MirrorcError, match=r"^canonicalize: node '[^']+': MatMul of two activations: attention"):
        analyze(model)
