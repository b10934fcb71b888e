"""Small classifiers built with onnx.helper for the compiler-core tests (no tests in this file).

Each one exercises a structure of the model zoo at toy size: residual blocks with an identity and a
downsampling shortcut, an Inception module with LRN and a MatMul+Add head, DenseNet concatenation
with a transition, SqueezeNet's Fire modules and conv head, a ShuffleNet unit (grouped 1x1,
channel shuffle reshapes, depthwise 3x3, a stride-2 unit that concatenates its shortcut), a
ShuffleNet v2 channel split, a MobileNet v2 block, a squeeze-and-excitation scale, a channel Slice
and a Resize, a ConvNeXt-like block (dilated depthwise conv, LayerNorm over the channels between two
Transposes, a grouped 1x1, Pad, a reflect Pad and a linear Resize), torchvision's ConvNeXt block
(its Linears are MatMuls on channels-last tensors), a GhostNet bottleneck (a Concat of a 1x1 conv
and its depthwise copy added to a shortcut), a flatten whose shape is computed from Shape (torch's
x.view(x.size(0), -1)), and an opset-9 file with Dropout/Identity/Sum, a fixed batch of 1
and a spelled-out Reshape batch."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def const(self, arr: np.ndarray, kind: str = "c") -> str:
        n = self.name(kind)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, op: str, *xs: str, n_out: int = 1, **attrs) -> str:
        n = self.name(op.lower())
        outs = [f"{n}_out"] + [f"{n}_out{i}" for i in range(1, n_out)]
        self.nodes.append(helper.make_node(op, list(xs), outs, name=n, **attrs))
        return outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1, bias: bool = True) -> str:
        w = self.const(
            self.rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k)).astype(np.float32),
            "w",
        )
        ins = [x, w] + ([self.const(self.rng.normal(0, 0.1, cout).astype(np.float32), "b")] if bias else [])
        return self.op("Conv", *ins, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride], group=group)

    def bn(self, x: str, c: int) -> str:
        p = [
            self.const(v.astype(np.float32), "bn")
            for v in (
                self.rng.uniform(0.5, 1.5, c),
                self.rng.normal(0, 0.1, c),
                self.rng.normal(0, 0.1, c),
                self.rng.uniform(0.5, 1.5, c),
            )
        ]
        return self.op("BatchNormalization", x, *p, epsilon=1e-5)

    def gemm(self, x: str, fin: int, fout: int) -> str:
        w = self.const(self.rng.normal(0, np.sqrt(1.0 / fin), (fout, fin)).astype(np.float32), "w")
        b = self.const(self.rng.normal(0, 0.1, fout).astype(np.float32), "b")
        return self.op("Gemm", x, w, b, transB=1)

    def model(self, in_shape: list, out: str, classes: int, opset: int = 17, batch="N", spatial=()) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "fixture",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *in_shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, classes, *spatial])],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8 if opset >= 15 else 4
        onnx.checker.check_model(m, full_check=True)
        return m


def tiny_resnet() -> onnx.ModelProto:
    b = Builder(1)
    x = b.op("MaxPool", b.op("Relu", b.bn(b.conv("x", 3, 8), 8)), kernel_shape=[2, 2], strides=[2, 2])
    y = b.bn(b.conv(b.op("Relu", b.bn(b.conv(x, 8, 8), 8)), 8, 8), 8)
    x = b.op("Relu", b.op("Add", y, x))
    y = b.bn(b.conv(b.op("Relu", b.bn(b.conv(x, 8, 16, stride=2), 16)), 16, 16), 16)
    s = b.bn(b.conv(x, 8, 16, k=1, stride=2), 16)
    x = b.op("Relu", b.op("Add", y, s))
    x = b.op("Flatten", b.op("GlobalAveragePool", x), axis=1)
    return b.model([3, 16, 16], b.gemm(x, 16, 5), 5)


def tiny_inception() -> onnx.ModelProto:
    b = Builder(2)
    x = b.op("Relu", b.conv("x", 3, 8))
    b1 = b.op("Relu", b.conv(x, 8, 4, k=1))
    b2 = b.op("Relu", b.conv(b.op("Relu", b.conv(x, 8, 4, k=1)), 4, 6))
    b3 = b.op("Relu", b.conv(b.op("MaxPool", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]), 8, 2, k=1))
    x = b.op("LRN", b.op("Concat", b1, b2, b3, axis=1), size=3)
    x = b.op("Relu", b.conv(x, 12, 8))
    x = b.op("Flatten", b.op("GlobalAveragePool", x), axis=1)
    w = b.const(b.rng.normal(0, 0.3, (8, 7)).astype(np.float32), "w")
    logits = b.op("Add", b.op("MatMul", x, w), b.const(np.zeros(7, np.float32), "b"))
    return b.model([3, 12, 12], b.op("Softmax", logits, axis=1), 7)


def tiny_densenet() -> onnx.ModelProto:
    b = Builder(3)
    x = b.op("Relu", b.conv("x", 3, 8))
    c = 8
    for _ in range(2):
        new = b.conv(b.op("Relu", b.bn(x, c)), c, 4)
        x, c = b.op("Concat", x, new, axis=1), c + 4
    x = b.op("AveragePool", b.conv(b.op("Relu", b.bn(x, c)), c, 8, k=1), kernel_shape=[2, 2], strides=[2, 2])
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(x, 8, 8))), axis=1)
    return b.model([3, 12, 12], b.gemm(x, 8, 6), 6)


def tiny_squeezenet() -> onnx.ModelProto:
    b = Builder(8)
    x = b.op("MaxPool", b.op("Relu", b.conv("x", 3, 8)), kernel_shape=[2, 2], strides=[2, 2])
    for cin, squeeze, expand in ((8, 4, 6), (12, 4, 6)):  # two Fire modules
        s = b.op("Relu", b.conv(x, cin, squeeze, k=1))
        x = b.op(
            "Concat", b.op("Relu", b.conv(s, squeeze, expand, k=1)), b.op("Relu", b.conv(s, squeeze, expand)), axis=1
        )
    x = b.op("Relu", b.conv(x, 12, 5, k=1))  # the head is a Conv with one channel per class
    x = b.op("GlobalAveragePool", x)
    return b.model([3, 12, 12], b.op("Softmax", x, axis=1), 5, spatial=(1, 1))  # [N, 5, 1, 1] scores


def _shuffle(b: Builder, x: str, groups: int, c: int, hw: int) -> str:
    x = b.op("Reshape", x, b.const(np.array([0, groups, c // groups, hw, hw], np.int64), "shape"))
    x = b.op("Transpose", x, perm=[0, 2, 1, 3, 4])
    return b.op("Reshape", x, b.const(np.array([0, c, hw, hw], np.int64), "shape"))


def tiny_shufflenet() -> onnx.ModelProto:
    b = Builder(4)
    x = b.op("MaxPool", b.op("Relu", b.bn(b.conv("x", 3, 12, bias=False), 12)), kernel_shape=[2, 2], strides=[2, 2])
    # stride-1 unit: residual Add
    y = _shuffle(b, b.op("Relu", b.bn(b.conv(x, 12, 12, k=1, group=3, bias=False), 12)), 3, 12, 8)
    y = b.bn(b.conv(b.bn(b.conv(y, 12, 12, group=12, bias=False), 12), 12, 12, k=1, group=3, bias=False), 12)
    x = b.op("Relu", b.op("Add", y, x))
    # stride-2 unit: concat with the pooled shortcut
    y = _shuffle(b, b.op("Relu", b.bn(b.conv(x, 12, 12, k=1, group=3, bias=False), 12)), 3, 12, 8)
    y = b.bn(b.conv(b.bn(b.conv(y, 12, 12, stride=2, group=12, bias=False), 12), 12, 12, k=1, group=3, bias=False), 12)
    s = b.op("AveragePool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.op("Relu", b.op("Concat", y, s, axis=1))
    # stride-1 unit on 24 channels: the CPM's shortcut now has 2C channels
    y = _shuffle(b, b.op("Relu", b.bn(b.conv(x, 24, 24, k=1, group=3, bias=False), 24)), 3, 24, 4)
    y = b.bn(b.conv(b.bn(b.conv(y, 24, 24, group=24, bias=False), 24), 24, 24, k=1, group=3, bias=False), 24)
    x = b.op("Relu", b.op("Add", y, x))
    x = b.op("Flatten", b.op("GlobalAveragePool", x), axis=1)
    return b.model([3, 16, 16], b.gemm(x, 24, 4), 4)


def old_opset(opset: int = 9) -> onnx.ModelProto:
    """Opset 9 (or `opset`, 7 and up), fixed batch 1, Dropout/Identity/Sum, a Reshape that spells the
    batch out, Softmax."""
    b = Builder(5)
    x = b.op("Relu", b.conv("x", 1, 4))
    x = b.op("Dropout", x, ratio=0.5)
    y = b.op("Relu", b.conv(x, 4, 4))
    x = b.op("Identity", b.op("Sum", x, y))
    x = b.op("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])
    x = b.op("Reshape", x, b.const(np.array([1, -1], np.int64), "shape"))
    x = b.op("Relu", b.gemm(x, 4 * 4 * 4, 12))
    return b.model([1, 8, 8], b.op("Softmax", b.gemm(x, 12, 3)), 3, opset=opset, batch=1)


def dynamic_flatten() -> onnx.ModelProto:
    """What torch's exporter writes for x.view(x.size(0), -1): the flatten shape computed from Shape."""
    b = Builder(9)
    x = b.op("MaxPool", b.op("Relu", b.conv("x", 3, 8)), kernel_shape=[2, 2], strides=[2, 2])
    x = b.op("MaxPool", b.op("Relu", b.conv(x, 8, 8, group=2)), kernel_shape=[2, 2], strides=[2, 2])
    batch = b.op(
        "Unsqueeze",
        b.op("Gather", b.op("Shape", x), b.const(np.array(0, np.int64), "i"), axis=0),
        b.const(np.array([0], np.int64), "axes"),
    )
    shape = b.op("Concat", batch, b.const(np.array([-1], np.int64), "minus1"), axis=0)
    x = b.op("Relu", b.gemm(b.op("Reshape", x, shape), 8 * 2 * 2, 16))
    return b.model([3, 8, 8], b.gemm(x, 16, 4), 4)


def tiny_shufflenet_v2() -> onnx.ModelProto:
    """ShuffleNet v2's unit: split the channels in two, transform one half, concat, shuffle."""
    b = Builder(10)
    x = b.op("MaxPool", b.op("Relu", b.conv("x", 3, 8)), kernel_shape=[2, 2], strides=[2, 2])
    for _ in range(2):
        left = b.op("Split", x, b.const(np.array([4, 4], np.int64), "split"), n_out=2, axis=1)
        right = left.replace("_out", "_out1")
        right = b.op("Relu", b.bn(b.conv(b.bn(b.conv(right, 4, 4, group=4), 4), 4, 4, k=1), 4))
        x = _shuffle(b, b.op("Concat", left, right, axis=1), 2, 8, 4)
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(x, 8, 8, k=1))), axis=1)
    return b.model([3, 8, 8], b.gemm(x, 8, 3), 3)


def tiny_mobilenet_v2() -> onnx.ModelProto:
    """An inverted residual block with ReLU6 as Clip (min omitted: an empty optional input)."""
    b = Builder(11)
    six = b.const(np.array(6.0, np.float32), "six")
    x = b.op("Clip", b.bn(b.conv("x", 3, 8, stride=2), 8), "", six)
    y = b.op("Clip", b.bn(b.conv(x, 8, 16, k=1), 16), "", six)
    y = b.op("Clip", b.bn(b.conv(y, 16, 16, group=16), 16), "", six)
    x = b.op("Add", x, b.bn(b.conv(y, 16, 8, k=1), 8))
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Clip", b.conv(x, 8, 12, k=1), "", six)), axis=1)
    return b.model([3, 8, 8], b.gemm(x, 12, 3), 3)


def tiny_senet() -> onnx.ModelProto:
    """A squeeze-and-excitation scale (Mul of [N,C,H,W] by [N,C,1,1]) on a Concat's output."""
    b = Builder(12)
    x = b.op("MaxPool", b.op("Relu", b.conv("x", 3, 8)), kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("Concat", b.op("Relu", b.conv(x, 8, 8)), b.op("Relu", b.conv(x, 8, 8)), axis=1)
    s = b.op("Sigmoid", b.conv(b.op("Relu", b.conv(b.op("GlobalAveragePool", y), 16, 4, k=1)), 4, 16, k=1))
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(b.op("Mul", y, s), 16, 8, k=1))), axis=1)
    return b.model([3, 8, 8], b.gemm(x, 8, 3), 3)


def tiny_slice_resize() -> onnx.ModelProto:
    """A channel Slice and an upsampling Resize (sizes given) inside a stage."""
    b = Builder(13)
    x = b.op("MaxPool", b.op("Relu", b.conv("x", 3, 8)), kernel_shape=[2, 2], strides=[2, 2])
    x = b.op(
        "Slice",
        b.op("Relu", b.conv(x, 8, 8)),
        b.const(np.array([2], np.int64), "starts"),
        b.const(np.array([8], np.int64), "ends"),
        b.const(np.array([1], np.int64), "axes"),
    )
    sizes = b.const(np.array([1, 6, 8, 8], np.int64), "sizes")
    x = b.op("Resize", x, "", "", sizes, mode="nearest")
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(x, 6, 8))), axis=1)
    return b.model([3, 8, 8], b.gemm(x, 8, 3), 3, batch=1)


def tiny_convnext() -> onnx.ModelProto:
    """ConvNeXt's block at toy size: a dilated depthwise conv, torchvision's LayerNorm2d as
    Transpose -> LayerNormalization(axis=-1) -> Transpose, a grouped 1x1, a constant Pad before an
    unpadded 3x3, a residual Add; then a reflect Pad and a linear Resize (half_pixel) downsampling."""
    b = Builder(14)
    x = b.op("MaxPool", b.op("Relu", b.conv("x", 3, 8)), kernel_shape=[2, 2], strides=[2, 2])
    w = b.const(b.rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32), "w")
    y = b.op("Conv", x, w, kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2], group=8)
    y = b.op("Transpose", y, perm=[0, 2, 3, 1])
    scale, bias = (b.const(b.rng.normal(m, 0.1, 8).astype(np.float32), "ln") for m in (1.0, 0.0))
    y = b.op("Transpose", b.op("LayerNormalization", y, scale, bias, axis=-1, epsilon=1e-6), perm=[0, 3, 1, 2])
    y = b.op("Relu", b.conv(y, 8, 16, k=1, group=2))
    y = b.op("Pad", y, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"))
    w = b.const(b.rng.normal(0, 0.1, (8, 16, 3, 3)).astype(np.float32), "w")
    x = b.op("Add", x, b.op("Conv", y, w, kernel_shape=[3, 3]))
    x = b.op("Pad", b.op("Relu", x), b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"), mode="reflect")
    scales = b.const(np.array([1, 1, 0.5, 0.5], np.float32), "scales")
    x = b.op("Resize", x, "", scales, mode="linear")
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(x, 8, 8))), axis=1)
    return b.model([3, 8, 8], b.gemm(x, 8, 3), 3)


def tiny_cnblock() -> onnx.ModelProto:
    """torchvision's ConvNeXt block: a depthwise 7x7, then channels-last LayerNorm and two Linears
    (MatMul by a constant [C, 4C] and [4C, C] on [N, H, W, C], a bias Add, Gelu between), back to
    NCHW, a layer scale Mul and the residual Add."""
    b = Builder(16)
    x = b.op("Relu", b.conv("x", 3, 8, k=2, stride=2))
    y = b.op("Transpose", b.conv(x, 8, 8, k=7, group=8), perm=[0, 2, 3, 1])
    scale, bias = (b.const(b.rng.normal(m, 0.1, 8).astype(np.float32), "ln") for m in (1.0, 0.0))
    y = b.op("LayerNormalization", y, scale, bias, axis=-1, epsilon=1e-6)
    for cin, cout in ((8, 32), (32, 8)):
        w = b.const(b.rng.normal(0, np.sqrt(1.0 / cin), (cin, cout)).astype(np.float32), "w")
        y = b.op("Add", b.op("MatMul", y, w), b.const(b.rng.normal(0, 0.1, cout).astype(np.float32), "b"))
        y = b.op("Gelu", y) if cout == 32 else y
    y = b.op(
        "Mul",
        b.const(b.rng.uniform(0.5, 1.5, (8, 1, 1)).astype(np.float32), "gamma"),
        b.op("Transpose", y, perm=[0, 3, 1, 2]),
    )
    x = b.op("Add", x, y)
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(x, 8, 8, k=1))), axis=1)
    return b.model([3, 8, 8], b.gemm(x, 8, 3), 3, opset=20)


def _ghost_module(b: Builder, x: str, cin: int, cout: int, relu: bool) -> str:
    """GhostNet's module: a 1x1 conv to half the width, a depthwise 3x3 of it, the two concatenated."""
    act = (lambda t: b.op("Relu", t)) if relu else (lambda t: t)
    primary = act(b.bn(b.conv(x, cin, cout // 2, k=1, bias=False), cout // 2))
    cheap = act(b.bn(b.conv(primary, cout // 2, cout // 2, group=cout // 2, bias=False), cout // 2))
    return b.op("Concat", primary, cheap, axis=1)


def tiny_ghostnet() -> onnx.ModelProto:
    """A ghost bottleneck: two ghost modules and a residual Add, so the CPM's Concat of a narrowed
    1x1 conv and its depthwise copy must be brought to the shortcut's channel count."""
    b = Builder(15)
    x = b.op("MaxPool", b.op("Relu", b.conv("x", 3, 8)), kernel_shape=[2, 2], strides=[2, 2])
    for _ in range(2):
        x = b.op("Add", x, _ghost_module(b, _ghost_module(b, x, 8, 12, relu=True), 12, 8, relu=False))
    x = b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(x, 8, 8, k=1))), axis=1)
    return b.model([3, 8, 8], b.gemm(x, 8, 3), 3)


def unnarrowable() -> onnx.ModelProto:
    """LpNormalization across channels in stage 2: the mirror pass cannot narrow it."""
    b = Builder(6)
    x = b.op("MaxPool", b.op("Relu", b.conv("x", 1, 4)), kernel_shape=[2, 2], strides=[2, 2])
    x = b.op("LpNormalization", b.op("Relu", b.conv(x, 4, 4)), axis=1, p=2)
    x = b.op("Relu", b.conv(x, 4, 4))
    x = b.op("Flatten", b.op("GlobalAveragePool", x), axis=1)
    return b.model([1, 8, 8], b.gemm(x, 4, 3), 3)


def int_input() -> onnx.ModelProto:
    b = Builder(7)
    x = b.op("Cast", "x", to=TensorProto.FLOAT)
    x = b.op("Flatten", b.op("Relu", b.conv(x, 1, 2)), axis=1)
    m = b.model([1, 4, 4], b.gemm(x, 32, 3), 3)
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    return m


FIXTURES = {
    "tiny_resnet": tiny_resnet,
    "tiny_inception": tiny_inception,
    "tiny_densenet": tiny_densenet,
    "tiny_shufflenet": tiny_shufflenet,
    "tiny_squeezenet": tiny_squeezenet,
    "old_opset": old_opset,
    "dynamic_flatten": dynamic_flatten,
    "tiny_shufflenet_v2": tiny_shufflenet_v2,
    "tiny_mobilenet_v2": tiny_mobilenet_v2,
    "tiny_senet": tiny_senet,
    "tiny_slice_resize": tiny_slice_resize,
    "tiny_convnext": tiny_convnext,
    "tiny_ghostnet": tiny_ghostnet,
    "tiny_cnblock": tiny_cnblock,
}


def write(tmp_path, name: str) -> str:
    fn = {**FIXTURES, "unnarrowable": unnarrowable, "int_input": int_input}[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(fn(), str(path))
    return str(path)
