"""What the tests share: where things are (the repository, the example models, onnx's model zoo, the
datasets), the skip for tests that need MNIST, and small model helpers. The example models themselves
are written once per run by conftest's `example_models` fixture; hand-built fixture models live in
test_core_fixtures.py, test_report_fixture.py and test_ta_support.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from mirrorc.zoo import ZOO_DIR

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODELS = ROOT / "examples" / "models"  # written by examples/make_models.py (conftest)
ZOO = ZOO_DIR  # onnx's light model zoo
DATA_DIR = Path(os.environ.get("MIRRORC_DATA", ROOT.parent / "shared" / "datasets"))

needs_mnist = pytest.mark.skipif(not (DATA_DIR / "mnist").is_dir(), reason=f"MNIST not found in {DATA_DIR}")


def example_model(name: str) -> onnx.ModelProto:
    """A fresh copy of examples/make_models.py's `name` (seed 0), loaded from the file conftest writes."""
    return onnx.load(EXAMPLE_MODELS / f"{name}.onnx")


def ort_session(model: onnx.ModelProto, *, optimize: bool = True, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session on `model`; optimize=False keeps onnxruntime's arithmetic that of the
    graph as written (no Conv+BN fusion), for references compared bit for bit."""
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def initializers(model: onnx.ModelProto, *, float_only: bool = False) -> dict[str, np.ndarray]:
    """The model's initializers by name (only the float32 ones with float_only)."""
    return {
        t.name: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if not float_only or t.data_type == onnx.TensorProto.FLOAT
    }


def trained_like(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Every float initializer replaced by distinct random values (as after training: no two
    weight arrays equal, BN statistics non-trivial, variances positive); configuration inputs
    (the registry's config_slots: Resize scales, Pad values, ...) are kept, training never moves them."""
    from passes import ops

    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    variances = {n.input[4] for n in out.graph.node if n.op_type == "BatchNormalization"}
    config = {
        n.input[i]
        for n in out.graph.node
        if (op := ops.get(n.op_type)) is not None
        for i in op.config_slots
        if i < len(n.input)
    }
    for init in out.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32 or init.name in config:
            continue
        new = rng.normal(0, 0.3, arr.shape).astype(np.float32)
        if init.name in variances:
            new = np.abs(new) + 0.5
        init.CopyFrom(numpy_helper.from_array(new, init.name))
    return out


def source_logits(path: str | Path, tensor: str, x: np.ndarray) -> np.ndarray:
    """`tensor` of the model file at `path` on input x, flattened per sample (onnxruntime, no fusion)."""
    src = onnx.load(path)
    if tensor not in [o.name for o in src.graph.output]:
        src.graph.output.insert(0, helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    inits = {t.name for t in src.graph.initializer}
    name = next(i.name for i in src.graph.input if i.name not in inits)
    return ort_session(src, optimize=False).run([tensor], {name: x})[0].reshape(x.shape[0], -1)


def zero_cpm_head(model: onnx.ModelProto, heads: list[str]) -> None:
    """Zero the weights and biases of the nodes named in `heads`, in place."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name in heads:
            for name in node.input[1:]:
                arr = numpy_helper.to_array(inits[name])
                inits[name].CopyFrom(numpy_helper.from_array(np.zeros_like(arr), name))
