"""A small LeNet-5 mirrornet built by hand to the `mirrornet.onnx` contract of docs/ARCHITECTURE.md,
for testing the report and strategy generator independently of the pipeline. The test below checks
the fixture against the contract itself (checker, onnxruntime, label = argmax of the sum)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


class _B:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, op, ins, out, name, world, stage=None, **attrs):
        n = helper.make_node(op, ins, [out], name=name, **attrs)
        meta = {"mirrorc.world": world} | ({"mirrorc.stage": str(stage)} if stage is not None else {})
        for k, v in meta.items():
            n.metadata_props.add(key=k, value=v)
        self.nodes.append(n)
        return out

    def conv(self, x, cin, cout, k, pad, name, world, stage):
        w = self.init(f"{name}.weight", self.rng.normal(0, 0.3, (cout, cin, k, k)).astype(np.float32))
        b = self.init(f"{name}.bias", np.zeros(cout, np.float32))
        return self.node("Conv", [x, w, b], f"{name}_out", name, world, stage, kernel_shape=[k, k], pads=[pad] * 4)

    def dense(self, x, cin, cout, name, world, stage):
        w = self.init(f"{name}.weight", self.rng.normal(0, 0.3, (cout, cin)).astype(np.float32))
        b = self.init(f"{name}.bias", np.zeros(cout, np.float32))
        return self.node("Gemm", [x, w, b], f"{name}_out", name, world, stage, transB=1)


def lenet_mirrornet(c: int = 2, seed: int = 0) -> onnx.ModelProto:
    """LeNet-5 (Fig. 3) with taps after pool1, pool2, fc1+ReLU, fc2+ReLU; CPM at C channels,
    C_l = 25C hidden features (capped by the backbone's widths)."""
    b = _B(seed)
    nw, sw = "normal", "secure"
    # Backbone, stages 1..5
    x = b.node("Relu", [b.conv("input", 1, 6, 5, 2, "conv1", nw, 1)], "relu1_out", "relu1", nw, 1)
    t1 = b.node("MaxPool", [x], "pool1_out", "pool1", nw, 1, kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Relu", [b.conv(t1, 6, 16, 5, 0, "conv2", nw, 2)], "relu2_out", "relu2", nw, 2)
    t2 = b.node("MaxPool", [x], "pool2_out", "pool2", nw, 2, kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Flatten", [t2], "flat_out", "flatten", nw, 3, axis=1)
    t3 = b.node("Relu", [b.dense(x, 400, 120, "fc1", nw, 3)], "relu3_out", "relu3", nw, 3)
    t4 = b.node("Relu", [b.dense(t3, 120, 84, "fc2", nw, 4)], "relu4_out", "relu4", nw, 4)
    b.dense(t4, 84, 10, "fc3", nw, 5)
    b.node("Identity", ["fc3_out"], "backbone_logits", "logits", nw, 5)
    cl = 25 * c
    w3, w4 = min(cl, 120), min(cl, 84)
    taps = [("pool1_out", [c, 14, 14]), ("pool2_out", [c, 5, 5]), ("relu3_out", [w3]), ("relu4_out", [w4])]
    meta_taps = []
    for k, (tensor, shape) in enumerate(taps, 1):
        idx = b.init(f"mirrorc/select{k}/indices", np.arange(shape[0], dtype=np.int64))
        b.node("Gather", [tensor, idx], f"mirrorc_tap{k}", f"mirrorc/select{k}", nw, axis=1)
        meta_taps.append(
            {
                "index": k,
                "tensor": tensor,
                "selected": f"mirrorc_tap{k}",
                "channels": list(range(shape[0])),
                "shape": shape,
                "bytes": 4 * int(np.prod(shape)),
            }
        )
    # CPM, stages 2..5
    x = b.node("Relu", [b.conv("mirrorc_tap1", c, c, 5, 0, "cpm/conv2", sw, 2)], "cpm/relu2_out", "cpm/relu2", sw, 2)
    x = b.node("MaxPool", [x], "cpm/pool2_out", "cpm/pool2", sw, 2, kernel_shape=[2, 2], strides=[2, 2])
    m = b.node("Add", [x, "mirrorc_tap2"], "cpm/m2", "cpm/add2", sw, 2)
    x = b.node("Flatten", [m], "cpm/flat_out", "cpm/flatten", sw, 3, axis=1)
    x = b.node("Relu", [b.dense(x, 25 * c, w3, "cpm/fc1", sw, 3)], "cpm/relu3_out", "cpm/relu3", sw, 3)
    m = b.node("Add", [x, "mirrorc_tap3"], "cpm/m3", "cpm/add3", sw, 3)
    x = b.node("Relu", [b.dense(m, w3, w4, "cpm/fc2", sw, 4)], "cpm/relu4_out", "cpm/relu4", sw, 4)
    m = b.node("Add", [x, "mirrorc_tap4"], "cpm/m4", "cpm/add4", sw, 4)
    b.node("Identity", [b.dense(m, w4, 10, "cpm/fc3", sw, 5)], "cpm_logits", "cpm/logits", sw, 5)
    b.node("Add", ["backbone_logits", "cpm_logits"], "mirrornet_logits", "cpm/final_add", sw)
    b.node("ArgMax", ["mirrornet_logits"], "label", "cpm/argmax", sw, axis=1, keepdims=0)

    g = helper.make_graph(
        b.nodes,
        "lenet5_mirrornet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("backbone_logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("mirrornet_logits", TensorProto.FLOAT, ["N", 10]),
        ],
        b.inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="test_report_fixture")
    model.ir_version = 8
    for k, v in {
        "mirrorc.version": "1",
        "mirrorc.channels": str(c),
        "mirrorc.num_classes": "10",
        "mirrorc.taps": json.dumps(meta_taps),
        "mirrorc.options": json.dumps({"channels": c, "select": "first", "seed": seed, "init": "keep"}),
        "mirrorc.source": json.dumps({"file": "lenet5.onnx", "sha256": "0" * 64}),
    }.items():
        model.metadata_props.add(key=k, value=v)
    return model


def test_fixture_follows_the_contract():
    m = lenet_mirrornet(2)
    onnx.checker.check_model(m, full_check=True)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(3, 1, 28, 28)).astype(np.float32)
    label, bb, mn = sess.run(None, {"input": x})
    assert label.shape == (3,) and np.array_equal(label, np.argmax(mn, axis=1))
    assert np.all(np.abs(mn - bb) > 0)  # the CPM contributes
    assert all(any(p.key == "mirrorc.world" for p in n.metadata_props) for n in m.graph.node)
