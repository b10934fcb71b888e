"""passes/split.py and passes/fold_bn.py on real pipeline output (LeNet-5, VGG-7)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from helpers import ort_session, trained_like
from mirrorc.errors import MirrorcError
from mirrorc.pipeline import build_mirrornet
from passes import contract
from passes.fold_bn import fold_bn
from passes.split import split


@pytest.fixture(scope="module", params=["lenet5", "vgg7"])
def mirrornet(request, example_models):
    model, _ = build_mirrornet(example_models[request.param], channels=2)
    return request.param, trained_like(model)


def _session(model):
    # no Conv+BN fusion inside onnxruntime: the reference must be the unfolded arithmetic
    return ort_session(model, optimize=False, threads=1)


def _input(model, n, seed=1):
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
    return vi.name, np.random.default_rng(seed).standard_normal([n, *shape]).astype(np.float32)


def test_normal_graph_contract_and_values(mirrornet):
    name, mn = mirrornet
    normal, _ = split(mn)
    taps = json.loads({p.key: p.value for p in mn.metadata_props}[contract.META_TAPS])
    outs = [o.name for o in normal.graph.output]
    assert outs == [contract.BACKBONE_LOGITS] + [contract.tap_name(k) for k in range(1, len(taps) + 1)]
    for o, t in zip(normal.graph.output[1:], taps):
        dims = o.type.tensor_type.shape.dim
        assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == t["shape"]
    assert all(p.value == "normal" for n in normal.graph.node for p in n.metadata_props if p.key == contract.META_WORLD)
    # symbolic batch: runs at batch 3 and gives exactly the mirrornet's tensors
    iname, x = _input(mn, 3)
    got = _session(normal).run(None, {iname: x})
    ref_model = onnx.ModelProto()
    ref_model.CopyFrom(mn)
    for t in outs[1:]:
        ref_model.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    ref = dict(zip([o.name for o in ref_model.graph.output], _session(ref_model).run(None, {iname: x})))
    for t, g in zip(outs, got):
        assert g.shape[0] == 3
        np.testing.assert_array_equal(g, ref[t])


def test_no_cpm_weight_in_normal_graph_by_value(mirrornet):
    name, mn = mirrornet
    normal, _ = split(mn)
    blob = normal.SerializeToString()
    normal_arrays = [numpy_helper.to_array(i) for i in normal.graph.initializer]
    cpm = [i for i in mn.graph.initializer if i.name.startswith("cpm/")]
    assert cpm, "fixture has CPM weights"
    for init in cpm:
        arr = numpy_helper.to_array(init)
        assert not any(a.shape == arr.shape and np.array_equal(a, arr) for a in normal_arrays), init.name
        if arr.size >= 2:  # raw bytes anywhere in the file (a renamed copy would still be found)
            assert arr.astype(np.float32).tobytes() not in blob, init.name
    assert not any(i.name.startswith("cpm/") for i in normal.graph.initializer)


def test_secure_graph_contract_bn_folded_and_labels(mirrornet):
    name, mn = mirrornet
    normal, secure = split(mn)
    k = contract.num_classes(mn)
    ins = [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in secure.graph.input]
    n_taps = len(normal.graph.output) - 1
    assert [n for n, _ in ins] == [contract.tap_name(j) for j in range(1, n_taps + 1)] + [contract.BACKBONE_LOGITS]
    assert all(s[0] == 1 for _, s in ins) and ins[-1][1] == [1, k]
    assert [o.name for o in secure.graph.output] == [contract.LABEL]
    assert secure.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert not any(n.op_type == "BatchNormalization" for n in secure.graph.node)
    assert all(n.name.startswith("cpm/") for n in secure.graph.node)
    had_bn = any(n.op_type == "BatchNormalization" and n.name.startswith("cpm/") for n in mn.graph.node)
    assert had_bn == (name == "vgg7")

    # secure graph at batch 1 (folded) vs the mirrornet (unfolded): labels equal, logits within 1e-5
    iname, x = _input(mn, 16)
    nout = _session(normal).run(None, {iname: x})
    probe = onnx.ModelProto()
    probe.CopyFrom(secure)
    probe.graph.output.append(helper.make_tensor_value_info(contract.MIRRORNET_LOGITS, onnx.TensorProto.FLOAT, [1, k]))
    sec = _session(probe)
    label_ref, _, logits_ref = _session(mn).run(None, {iname: x})
    assert np.isfinite(logits_ref).all()
    worst = 0.0
    for i in range(len(x)):
        feeds = {contract.tap_name(j): nout[j][i : i + 1] for j in range(1, n_taps + 1)}
        feeds[contract.BACKBONE_LOGITS] = nout[0][i : i + 1]
        label, logits = sec.run(None, feeds)
        assert label[0] == label_ref[i]
        worst = max(worst, float(np.abs(logits[0] - logits_ref[i]).max()))
    print(f"  {name}: secure (BN folded) vs mirrornet, max logit diff {worst:.3g}")
    assert worst <= 1e-5 * max(1.0, float(np.abs(logits_ref).max()))


def test_fold_bn_exact():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for n, a in [
            ("w", w),
            ("s", rng.normal(size=4)),
            ("b", rng.normal(size=4)),
            ("m", rng.normal(size=4)),
            ("v", np.abs(rng.normal(size=4)) + 0.1),
            ("w2", rng.normal(size=(4, 1, 3, 3))),
        ]
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4),  # no bias
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn", epsilon=1e-3),
        helper.make_node("Conv", ["y", "w2"], ["c2"], name="dw", group=4),
        helper.make_node("BatchNormalization", ["c2", "s", "b", "m", "v"], ["z"], name="bn2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", 1, [2, 2, 6, 6])],
        [helper.make_tensor_value_info("z", 1, None)],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folded = fold_bn(model)
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Conv"]
    assert len(model.graph.node) == 4  # input untouched
    x = rng.normal(size=(2, 2, 6, 6)).astype(np.float32)
    (a,) = _session(model).run(None, {"x": x})
    (b,) = _session(folded).run(None, {"x": x})
    diff = float(np.abs(a - b).max())
    print(f"  fold_bn max abs diff {diff:.3g} (|y| up to {np.abs(a).max():.3g})")
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_split_refuses_bad_annotations(example_models):
    mn, _ = build_mirrornet(example_models["lenet5"], channels=2)
    bad = onnx.ModelProto()
    bad.CopyFrom(mn)
    del bad.graph.node[3].metadata_props[:]
    with pytest.raises(MirrorcError, match=f"node '{bad.graph.node[3].name}'.*mirrorc.world"):
        split(bad)
    # a secure node that reads a backbone tensor other than a tap is a leak of the wrong kind
    bad.CopyFrom(mn)
    cpm = next(n for n in bad.graph.node if n.name.startswith("cpm/") and n.op_type == "Conv")
    cpm.input[0] = "conv1_out"
    with pytest.raises(MirrorcError, match="neither a tap nor backbone_logits"):
        split(bad)
    bad.CopyFrom(mn)
    del bad.metadata_props[:]
    with pytest.raises(MirrorcError, match=contract.META_TAPS):
        split(bad)
