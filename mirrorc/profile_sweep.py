"""The layer-shape sweep of `mirrorc profile`: synthetic classifiers whose CPMs hold every layer kind
the zoo's CPMs hold, so that a fitted profile never predicts a kind it has not timed.

LeNet-5 and VGG-7 (the default sweep before) have stride-1 3x3/5x5 convs, 2x2 max pools and dense
layers only. A sweep model adds, after a first conv that stays in the backbone: DenseNet's growth (1x1
convs each over the concatenation of every map before it, the last 4C planes into C), 3x3 and 5x5
stride-1 convs, LRN, strided convs (3x3 and 5x5, stride 2), a grouped conv, a channel shuffle
(Reshape-Transpose-Reshape), 3x3 max pools with stride 2 and 1 (Inception's), a two-branch Concat
followed by an unfused BatchNormalization (DenseNet's pattern), a 3x3 average pool and a head: a
global average pool and three dense layers, 64 wide, or 1024 wide as AlexNet's and VGG's 4096 (their
CPMs narrow them to the class count, so a 1000-class sweep times 1000x1000 ones: 4 MB of weights
streamed from memory, as in AlexNet's, ZFNet's and VGG-19's CPMs), or a 1x1 conv to the classes and
then an average pool over the whole map, or a global average pool that the C runs inside the conv
(SqueezeNet's head: the `conv_gap` kernel). Input sizes (odd ones too), class counts and heads vary
per model, so every kind is seen at several output sizes.

A CPM's first node reads the tap cold and writes arena lines no node has touched yet, costs the
emulator prices per kernel (`first_touch_floats`); so some sweep models put another kernel first (a
`lead` conv before the growth, mirrored like the rest): the zoo's CPMs start with a 5x5 unpadded
conv (LeNet-5's), a 3x3 (VGG's), a strided 5x5 (ZFNet's) or a grouped conv (AlexNet's, ShuffleNet's),
and a kernel never timed first would have that cost extrapolated blind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# name -> (input height = width, classes, head); the sizes the zoo's CPMs run at (224 down to 7) scaled
# down so a sweep times in seconds, 1000-class heads as the zoo's classifiers have, and four heads:
# "dense" layers, 64 wide, or "wide" ones (AlexNet's, VGG's), or a 1x1 conv to the classes and then a
# whole-map AveragePool ("conv") or a GlobalAveragePool fused into the conv ("gap", SqueezeNet's).
# The fourth field is the lead conv, the CPM's first node ("": the growth's 1x1 conv is): a key of LEADS.
SWEEP_MODELS: dict[str, tuple[int, int, str, str]] = {
    "sweep32": (32, 10, "dense", "spatial3"),
    "sweep64": (64, 100, "conv", "strided"),
    "sweep112": (112, 1000, "wide", ""),
    "sweep56": (56, 1000, "gap", "grouped"),
    "sweep55": (55, 1000, "gap", ""),  # odd maps (55, 28, 14, 7), as AlexNet's, SqueezeNet's, Inception's
    "sweep208": (208, 1000, "gap", ""),  # a 1000-class head on a 13x13 map, as SqueezeNet's
    # every kind on small odd maps (9, 5, 3, 2): Inception's, DenseNet's last; first LeNet-5's 5x5 (13 to 9)
    "sweep13": (13, 10, "dense", "valid5"),
}
# lead -> (kernel size, stride, group, padded)
LEADS: dict[str, tuple[int, int, int, bool]] = {
    "spatial3": (3, 1, 1, True),
    "valid5": (5, 1, 1, False),
    "strided": (5, 2, 1, True),
    "grouped": (3, 1, 4, True),
}
WIDTH = 16  # backbone channels; the CPM narrows them to C


class _Graph:
    """A sequential ONNX graph under construction, random weights from one seed."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def _const(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        name = f"{op.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [f"{name}_out"], name=name, **attrs))
        return f"{name}_out"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, padded: bool = True) -> str:
        n = len(self.nodes)
        w = self.rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k)).astype(np.float32)
        ins = [x, self._const(f"w{n}", w), self._const(f"b{n}", np.zeros(cout, np.float32))]
        pads = [k // 2 if padded else 0] * 4
        y = self.node("Conv", ins, kernel_shape=[k, k], pads=pads, strides=[stride] * 2, group=group)
        return self.node("Relu", [y])

    def dense(self, x: str, cin: int, cout: int) -> str:
        n = len(self.nodes)
        w = self.rng.normal(0, np.sqrt(2.0 / cin), (cout, cin)).astype(np.float32)
        ins = [x, self._const(f"w{n}", w), self._const(f"b{n}", np.zeros(cout, np.float32))]
        return self.node("Gemm", ins, transB=1)

    def shuffle(self, x: str, groups: int, c: int, hw: int) -> str:
        n = len(self.nodes)
        split = self._const(f"s{n}", np.array([0, groups, c // groups, hw, hw], np.int64))
        back = self._const(f"r{n}", np.array([0, c, hw, hw], np.int64))
        y = self.node("Transpose", [self.node("Reshape", [x, split])], perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [y, back])

    def batchnorm(self, x: str, c: int) -> str:
        n = len(self.nodes)
        stats = [self.rng.uniform(0.5, 1.5, c), self.rng.normal(0, 0.1, c), self.rng.normal(0, 0.1, c), np.ones(c)]
        ins = [x, *(self._const(f"{p}{n}", s.astype(np.float32)) for p, s in zip("sbmv", stats))]
        return self.node("BatchNormalization", ins, epsilon=1e-5)


def sweep_model(size: int, classes: int, head: str = "dense", lead: str = "", seed: int = 0) -> onnx.ModelProto:
    """One sweep classifier on a [3, size, size] input, its head "dense", "wide", "conv" or "gap", its
    CPM's first node the `lead` conv (a key of LEADS) or, with "", the growth's first 1x1 conv."""
    g, c = _Graph(seed), WIDTH
    x = g.conv("input", 3, c, 3)  # the backbone's first layer: never mirrored
    side = size
    if lead:
        k, stride, group, padded = LEADS[lead]
        x = g.conv(x, c, c, k, stride=stride, group=group, padded=padded)
        side = (side + 2 * (k // 2 if padded else 0) - k) // stride + 1
    width = c
    for _ in range(3):  # DenseNet's growth: each 1x1 conv reads every map before it (CPM: C, 2C, 3C planes)
        x = g.node("Concat", [x, g.conv(x, width, c, 1)], axis=1)
        width += c
    x = g.conv(x, width, c, 1)  # a narrow conv over 4C planes
    x = g.node("LRN", [g.conv(g.conv(x, c, c, 3), c, c, 5)], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    x = g.conv(x, c, c, 3, stride=2)
    x = g.shuffle(g.conv(x, c, c, 3, group=4), 4, c, (side + 1) // 2)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    x = g.conv(x, c, c, 5, stride=2)
    x = g.node("Concat", [g.conv(x, c, c // 2, 1), g.conv(x, c, c // 2, 3)], axis=1)
    x = g.node("Relu", [g.batchnorm(x, c)])
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4)  # Inception's
    x = g.node("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    if head == "gap":
        x = g.node("Flatten", [g.node("GlobalAveragePool", [g.conv(x, c, classes, 1)])], axis=1)
    elif head == "conv":
        for _ in range(4):  # the four stride-2 layers above, each ceil(side / 2)
            side = (side + 1) // 2
        # an AveragePool over the whole map: the conv's output is stored, then pooled (not fused)
        pooled = g.node("AveragePool", [g.conv(x, c, classes, 1)], kernel_shape=[side, side])
        x = g.node("Flatten", [pooled], axis=1)
    else:
        hidden = 1024 if head == "wide" else 4 * c
        x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
        x = g.node("Relu", [g.dense(g.node("Relu", [g.dense(x, c, hidden)]), hidden, hidden)])
        x = g.dense(x, hidden, classes)
    graph = helper.make_graph(
        g.nodes,
        f"sweep{size}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", classes])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mirrorc-profile")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_sweep_models(out_dir: Path) -> dict[str, Path]:
    """Every SWEEP_MODELS entry as an ONNX file in `out_dir`: name -> path."""
    paths = {}
    for name, (size, classes, head, lead) in SWEEP_MODELS.items():
        paths[name] = out_dir / f"{name}.onnx"
        onnx.save(sweep_model(size, classes, head, lead), paths[name])
    return paths
