"""mirrorc.plan.layers against hand-computed counts (LeNet-5 of the paper's Fig. 3) and small odd cases."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import example_model
from mirrorc.errors import MirrorcError
from mirrorc.plan import layers as L


def test_lenet5_by_hand():
    ls = L.layers(example_model("lenet5"))
    compute = L.compute_layers(ls)
    # Fig. 3 of the paper: conv[1,6,5,28,28], conv[6,16,5,14,10], dense 400-120-84-10.
    assert [c.notation for c in compute] == [
        "conv[1, 6, 5, 28, 28]",
        "conv[6, 16, 5, 14, 10]",
        "dense[400, 120]",
        "dense[120, 84]",
        "dense[84, 10]",
    ]
    # MACs: 5*5*1*6*28*28, 5*5*6*16*10*10, 400*120, 120*84, 84*10
    assert [c.macs for c in compute] == [117600, 240000, 48000, 10080, 840]
    # params: weights + biases
    assert [c.params for c in compute] == [6 * 25 + 6, 16 * 6 * 25 + 16, 400 * 120 + 120, 120 * 84 + 84, 84 * 10 + 10]
    assert L.totals(ls) == L.Totals(macs=416520, params=61706)
    convs = [c.name for c in compute if c.kind == "conv"]
    assert L.totals(ls, convs) == L.Totals(macs=357600, params=2572)
    assert all(x.kind == "other" and x.macs == 0 and x.params == 0 for x in ls if x not in compute)


def test_graphsurgeon_graph_and_path_agree(tmp_path):
    m = example_model("vgg7")
    onnx.save(m, tmp_path / "v.onnx")
    a = L.layers(gs.import_onnx(m))
    b = L.layers(tmp_path / "v.onnx")
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    # BatchNorm's four vectors are parameters of the "other" node that reads them.
    bn = [x for x in a if x.op_type == "BatchNormalization"][0]
    assert bn.params == 4 * 64 and bn.macs == 0


def _model(nodes, inp, out, inits):
    g = helper.make_graph(nodes, "t", [inp], [out], [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_nonsquare_grouped_conv_and_matmul():
    f = np.float32
    inits = {
        "w": np.zeros((8, 2, 3, 5), f),  # groups=2: IC/groups = 2
        "m": np.zeros((7, 4), f),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="c", group=2, strides=[2, 1], pads=[1, 2, 1, 2]),
        helper.make_node("Transpose", ["y"], ["t"], name="tr", perm=[0, 2, 3, 1]),  # [N, 5, 6, 8]
        helper.make_node("Slice", ["t", "s0", "s1", "s2"], ["ts"], name="sl"),
        helper.make_node("MatMul", ["ts", "m"], ["z"], name="mm"),
    ]
    inits.update(s0=np.array([0], np.int64), s1=np.array([7], np.int64), s2=np.array([3], np.int64))
    m = _model(
        nodes,
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 9, 6]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
        inits,
    )
    by = {x.name: x for x in L.layers(m)}
    c = by["c"]
    assert (c.ic, c.oc, c.k, c.fi, c.fo, c.groups) == (4, 8, (3, 5), (9, 6), (5, 6), 2)
    assert c.notation == "conv[4, 8, 3x5, 9x6, 5x6]"
    assert c.macs == 3 * 5 * 2 * 8 * 5 * 6 and c.params == 8 * 2 * 3 * 5
    mm = by["mm"]  # input [N, 5, 6, 7] x [7, 4]: 5*6 rows of a 7x4 dense
    assert (mm.kind, mm.ic, mm.oc, mm.macs, mm.params) == ("dense", 7, 4, 5 * 6 * 7 * 4, 28)
    assert by["sl"].params == 0  # integer constants are not parameters


def test_weights_built_by_constantofshape_are_counted():
    # The model zoo's "light" files build every weight with ConstantOfShape.
    shape = numpy_helper.from_array(np.array([3, 5], np.int64), "wshape")
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["wshape"], ["w"], name="cw", value=numpy_helper.from_array(np.array([0.5], np.float32))
        ),
        helper.make_node("Gemm", ["x", "w"], ["y"], name="fc"),
    ]
    g = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [shape],
    )
    by = {x.name: x for x in L.layers(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))}
    assert by["cw"].params == 0 and (by["fc"].kind, by["fc"].params, by["fc"].macs) == ("dense", 15, 15)


def test_unknown_spatial_size_names_the_node():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv_a")]
    m = _model(
        nodes,
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"]),
        helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        {"w": np.zeros((2, 1, 3, 3), np.float32)},
    )
    with pytest.raises(MirrorcError, match="conv_a"):
        L.layers(m)
