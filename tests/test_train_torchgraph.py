"""OnnxModule must compute what onnxruntime computes, train its weights and write them back."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

torch = pytest.importorskip("torch")

from examples.make_models import lenet5, vgg7  # noqa: E402
from helpers import ZOO, example_model  # noqa: E402
from mirrorc.errors import MirrorcError  # noqa: E402
from mirrorc.train.interpreter import OnnxModule  # noqa: E402

# small enough for CI, and between them they cover LRN, Concat, Sum, Transpose, BN, AveragePool, Dropout
ZOO_MODELS = [
    "light_bvlc_alexnet.onnx",
    "light_squeezenet.onnx",
    "light_shufflenet.onnx",
    "light_inception_v1.onnx",
    "light_resnet50.onnx",
]


def randomize_zoo(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The 'light' zoo files fill every weight with 0.02 via ConstantOfShape, which makes all outputs
    equal; give them random initializers instead so the comparison means something."""
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep, new_inits = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = [int(v) for v in inits[node.input[0]]]
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                arr = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            else:
                arr = rng.uniform(0.5, 1.5, shape)  # positive: also valid as BN scale / variance
            new_inits.append(numpy_helper.from_array(arr.astype(np.float32), node.output[0]))
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input}
    init_names = set(inits) | {t.name for t in new_inits}
    graph_inputs = [i for i in model.graph.input if i.name not in init_names and i.name in used]
    graph = helper.make_graph(
        keep,
        model.graph.name,
        graph_inputs,
        list(model.graph.output),
        [t for t in model.graph.initializer if t.name in used] + new_inits,
    )
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = 8  # initializers need not be listed as graph inputs
    return out


def run_ort(model: onnx.ModelProto, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for name in outputs:
        if name not in known:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(outputs, {sess.get_inputs()[0].name: x})


def compare(model: onnx.ModelProto, x: np.ndarray, outputs: list[str], label: str) -> None:
    module = OnnxModule(model, outputs=outputs).eval()
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    for name, ref in zip(outputs, run_ort(model, x, outputs)):
        val = got[name].numpy()
        assert val.shape == ref.shape, (label, name)
        scale = max(float(np.abs(ref).max()), 1e-6)
        diff = float(np.abs(val - ref).max())
        print(f"{label} {name}: max |torch - ort| = {diff:.3g} (relative {diff / scale:.3g})")
        assert float(np.std(ref)) > 0, f"{label} {name}: degenerate output, comparison meaningless"
        assert diff / scale < 2e-5, (label, name, diff)


@pytest.mark.parametrize("builder,shape", [(lenet5, (4, 1, 28, 28)), (vgg7, (3, 3, 32, 32))])
def test_examples_match_onnxruntime(builder, shape):
    model = builder(seed=3)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    outputs = [o.name for o in model.graph.output] + [model.graph.node[2].output[0]]  # an intermediate too
    compare(model, x, outputs, builder.__name__)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_models_match_onnxruntime(name):
    path = os.path.join(ZOO, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not shipped with this onnx version")
    model = randomize_zoo(onnx.load(path))
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    # the logits before the final Softmax carry the information; compare them and the output
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    outputs = [model.graph.output[0].name] + ([softmax[-1].input[0]] if softmax else [])
    compare(model, x, outputs, name)


def test_write_back_round_trip_and_bn_statistics():
    model = example_model("vgg7")
    module = OnnxModule(model).train()
    x = torch.randn(8, 3, 32, 32) * 3 + 1
    before = {name: b.clone() for name, b in module.named_buffers()}
    module(x)["logits"].sum().backward()
    with torch.no_grad():
        for p in module.weights:
            p -= 0.01 * p.grad
    changed = [n for n, b in module.named_buffers() if not torch.equal(b, before[n])]
    assert len(changed) == len(before) > 0, "train() mode must update every BN running statistic"

    trained = module.write_back()
    onnx.checker.check_model(trained, full_check=True)
    module.eval()
    xe = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ours = module(torch.from_numpy(xe))["logits"].numpy()
    ref = run_ort(trained, xe, ["logits"])[0]
    print("write_back round trip: max diff", float(np.abs(ours - ref).max()))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    # the original model is untouched, the trained copy differs
    orig = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}
    assert any(not np.array_equal(orig[k], new[k]) for k in orig)


def test_trainable_predicate_freezes_weights():
    model = example_model("lenet5")
    module = OnnxModule(model, trainable=lambda name: not name.startswith("conv"))
    frozen = {n for n, p in module.named_onnx_parameters() if not p.requires_grad}
    assert frozen == {t.name for t in model.graph.initializer if t.name.startswith("conv")}


def test_unsupported_op_is_named():
    graph = helper.make_graph(
        [helper.make_node("Mish", ["x"], ["y"], name="weird")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
    )
    with pytest.raises(MirrorcError, match="'weird'.*Mish"):
        OnnxModule(helper.make_model(graph))


def test_unknown_output_is_named():
    with pytest.raises(MirrorcError, match="nonexistent"):
        OnnxModule(example_model("lenet5"), outputs=["nonexistent"])


def _split_model(opset: int, sizes: list[int] | None, parts: int) -> onnx.ModelProto:
    """x [1, 7, 3, 2] -> Split along the channels into `parts` outputs, each through Relu (so the
    comparison sees every output)."""
    outs = [f"p{i}" for i in range(parts)]
    inputs, attrs, inits = ["x"], {"axis": 1}, []
    if sizes is not None and opset >= 13:
        inputs.append("split")
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "split"))
    elif sizes is not None:
        attrs["split"] = sizes
    elif opset >= 18:
        attrs["num_outputs"] = parts
    nodes = [helper.make_node("Split", inputs, outs, **attrs)]
    nodes += [helper.make_node("Relu", [o], [f"y{i}"]) for i, o in enumerate(outs)]
    graph = helper.make_graph(
        nodes,
        "split",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 7, 3, 2])],
        [helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None) for i in range(parts)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _one_node(op: str, attrs: dict, consts: dict, opset: int, inputs: list[str] | None = None) -> onnx.ModelProto:
    """x [2, 6, 5, 7] -> op(x, *consts) -> y; `inputs` names the node's inputs when some are omitted ("")."""
    node = helper.make_node(op, inputs or ["x", *consts], ["y"], name="the_node", **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 6, 5, 7])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("opset,sizes,parts", [(11, [2, 5], 2), (13, [1, 4, 2], 3), (18, None, 3), (18, None, 7)])
def test_split_matches_onnxruntime(opset, sizes, parts):
    model = _split_model(opset, sizes, parts)
    x = np.random.default_rng(5).standard_normal((1, 7, 3, 2)).astype(np.float32)
    compare(model, x, [f"y{i}" for i in range(parts)], f"Split opset {opset} {sizes or parts}")


def test_layout_ops_match_onnxruntime():
    """Pad, Slice, Resize and LayerNormalization: the cases the C kernels are checked on
    (tests/test_c_kernels.py), run by the interpreter against onnxruntime."""
    from test_c_kernels import _single, layout_cases

    rng = np.random.default_rng(99)
    seen = set()
    for op, inputs, attrs, consts, opset in layout_cases(rng):
        model = _single(op, inputs, attrs, consts, opset=opset)
        x = rng.standard_normal(inputs[0][1]).astype(np.float32)
        compare(model, x, ["y"], f"{op} {attrs}")
        seen.add(op)
    assert seen == {"Pad", "Slice", "Resize", "LayerNormalization"}


_f32 = np.float32
# registry part A: each op as the exporters write it (axes as attribute before opset 18, as input after)
PART_A_CASES = [
    ("ReduceMean", dict(axes=[2, 3], keepdims=1), {}, 17, None),
    ("ReduceMean", dict(keepdims=0), {"axes": np.array([2, 3])}, 18, None),
    ("ReduceMean", dict(axes=[1]), {}, 17, None),
    ("ReduceMax", dict(axes=[1, 3], keepdims=0), {}, 17, None),
    ("ReduceMax", {}, {"axes": np.array([-1])}, 18, None),
    ("HardSwish", {}, {}, 17, None),
    ("HardSigmoid", dict(alpha=0.3, beta=0.4), {}, 17, None),
    ("Erf", {}, {}, 17, None),
    ("Gelu", {}, {}, 20, None),
    ("Gelu", dict(approximate="tanh"), {}, 20, None),
    ("Elu", dict(alpha=0.7), {}, 17, None),
    ("Max", {}, {"bound": np.array([0.2], _f32)}, 17, None),
    ("Min", {}, {"bound": np.full((6, 1, 1), 0.1, _f32)}, 17, None),
    ("Pow", {}, {"exponent": np.array(2.0, _f32)}, 17, None),
    ("Clip", {}, {"lo": np.array(-0.5, _f32), "hi": np.array(0.7, _f32)}, 17, None),
    ("Clip", {}, {"hi": np.array(0.3, _f32)}, 17, ["x", "", "hi"]),
]


@pytest.mark.parametrize(
    "op,attrs,consts,opset,inputs", PART_A_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(PART_A_CASES)]
)
def test_part_a_ops_match_onnxruntime(op, attrs, consts, opset, inputs):
    model = _one_node(op, attrs, consts, opset, inputs)
    x = np.random.default_rng(4).standard_normal((2, 6, 5, 7)).astype(np.float32)
    compare(model, x, ["y"], f"{op} opset {opset} {attrs}")
    # bounds and exponents are configuration: never trained
    module = OnnxModule(model)
    assert not [n for n, _ in module.named_onnx_parameters() if n in ("bound", "exponent", "lo", "hi")]


def test_squeeze_excite_block_matches_onnxruntime_and_trains():
    """x * Sigmoid(Conv(Relu(Conv(GAP(x))))): the Mul broadcasts a [N, C, 1, 1] gate over x."""
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((3, 6, 1, 1)) * 0.5).astype(np.float32)
    w2 = (rng.standard_normal((6, 3, 1, 1)) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["s0"], axes=[2, 3], keepdims=1),
        helper.make_node("Conv", ["s0", "w1"], ["s1"]),
        helper.make_node("Relu", ["s1"], ["s2"]),
        helper.make_node("Conv", ["s2", "w2"], ["s3"]),
        helper.make_node("Sigmoid", ["s3"], ["s4"]),
        helper.make_node("Mul", ["x", "s4"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "se",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 6, 5, 7])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    compare(model, x, ["y", "s4"], "squeeze-excite")
    module = OnnxModule(model)
    module(torch.from_numpy(x))["y"].square().mean().backward()
    grads = {n: float(p.grad.abs().max()) for n, p in module.named_onnx_parameters()}
    print("squeeze-excite max |grad|:", grads)
    assert set(grads) == {"w1", "w2"} and all(g > 0 for g in grads.values())
