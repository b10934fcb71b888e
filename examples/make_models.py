"""Build the example classifiers as ONNX files with onnx.helper (no torch needed), random weights.

    python examples/make_models.py [OUT_DIR]      # writes every model in MODELS (default: examples/models)

- LeNet-5, 28x28x1 (MNIST), as in the MirrorNet paper's Fig. 3: conv[1,6,5,28,28]+ReLU+MaxPool,
  conv[6,16,5,14,10]+ReLU+MaxPool, Flatten, dense 400-120-84-10, Softmax output.
- VGG-7, 32x32x3 (CIFAR-10): six 3x3 convs with BatchNorm+ReLU (64,64,M,128,128,M,256,256,M) and one
  dense classifier 4096-10; logits output.
- The paper's VGG family for CIFAR-10 (Table III, Table IV): vgg6, vgg7_paper, vgg11, vgg16, from
  VGG_PAPER below; same blocks (3x3 conv without bias + BatchNorm + ReLU, 2x2 max pool after each
  block) and one dense classifier; logits output.

The paper does not print its VGG layers. Its Table IV emulator predictions at C = 4 (VGG-7 6.960 ms,
VGG-11 8.495, VGG-16 22.061) fix what the CPM can hold, because mirrorc mirrors every conv after the
first: by Eq. 4 with the 1.6 factor a mirrored 3x3 conv at C = 4 costs (0.03938*144*FO^2 +
504.3)*1.6 us, i.e. 10.10 ms at 32x32, 3.13 at 16x16, 1.39 at 8x8, 0.95 at 4x4, 0.84 at 2x2, and a
dense layer >= 0.47 ms (Eq. 5), the switch 0.35 ms (Eq. 2). So VGG-7 and VGG-11 cannot have a second
conv at 32x32 (10.1 ms alone): their first block is one conv, as in VGG config A (VGG-11); VGG-16
minus VGG-11 = 13.57 ms = one more conv at 32x32 and one at 16x16 (13.23 ms + their taps): VGG-16's
first two blocks have two convs, as in configs B/D. And an 8-conv, 3-dense VGG-11 is at least 10.6
ms (+25%) however its convs are spread over 16x16..2x2 (7 mirrored convs, 2 hidden dense), so the
paper's networks hold fewer layers than the ImageNet configs of the same name: the four below are
VGG trunks of 3, 4, 6 and 8 convs (widths 64-128-256-512, doubling after each pool as in VGG) with a
single dense classifier, as CIFAR VGGs use. Pipeline predictions at C = 4 (single invoke): 5.372
(VGG-6, not in Table IV), 6.764 (-2.8%), 8.657 (+1.9%), 21.982 ms (-0.4%). Their backbone MACs (40M,
77M, 134M, 209M) put VGG-11/VGG-7 at 1.73, near the ratio of the paper's measured backbone latencies
(1246/716 ms = 1.74); VGG-16/VGG-7 is 2.7 where the paper measured 6.3, so the paper's VGG-16
backbone may be wider than this one (the CPM, and so Table IV, cannot tell: it sees only feature map
sizes and layer counts).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def _init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, pad: int, bias: bool = True) -> str:
        n = self._name("conv")
        w = self.rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
        inputs = [x, self._init(f"{n}.weight", w)]
        if bias:
            inputs.append(self._init(f"{n}.bias", np.zeros(cout)))
        self.nodes.append(
            helper.make_node("Conv", inputs, [f"{n}_out"], name=n, kernel_shape=[k, k], pads=[pad] * 4, strides=[1, 1])
        )
        return f"{n}_out"

    def bn(self, x: str, c: int) -> str:
        n = self._name("bn")
        ins = [
            x,
            self._init(f"{n}.scale", np.ones(c)),
            self._init(f"{n}.bias", np.zeros(c)),
            self._init(f"{n}.mean", np.zeros(c)),
            self._init(f"{n}.var", np.ones(c)),
        ]
        self.nodes.append(helper.make_node("BatchNormalization", ins, [f"{n}_out"], name=n, epsilon=1e-5))
        return f"{n}_out"

    def op(self, op: str, x: str, **attrs) -> str:
        n = self._name(op.lower())
        self.nodes.append(helper.make_node(op, [x], [f"{n}_out"], name=n, **attrs))
        return f"{n}_out"

    def pool(self, x: str) -> str:
        return self.op("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])

    def dense(self, x: str, cin: int, cout: int) -> str:
        n = self._name("fc")
        w = self.rng.normal(0, np.sqrt(2.0 / cin), (cout, cin))
        ins = [x, self._init(f"{n}.weight", w), self._init(f"{n}.bias", np.zeros(cout))]
        self.nodes.append(helper.make_node("Gemm", ins, [f"{n}_out"], name=n, transB=1))
        return f"{n}_out"

    def model(self, name: str, in_shape: list, out: str, out_name: str, classes: int) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [out], [out_name], name="output"))
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *in_shape])],
            [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", classes])],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mirrorc-examples")
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m


def lenet5(seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    x = b.pool(b.op("Relu", b.conv("input", 1, 6, 5, pad=2)))
    x = b.pool(b.op("Relu", b.conv(x, 6, 16, 5, pad=0)))
    x = b.op("Flatten", x, axis=1)
    x = b.op("Relu", b.dense(x, 400, 120))
    x = b.op("Relu", b.dense(x, 120, 84))
    x = b.op("Softmax", b.dense(x, 84, 10), axis=1)
    return b.model("lenet5", [1, 28, 28], x, "probabilities", 10)


def vgg7(seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    x, cin = "input", 3
    for cout in (64, 64, "M", 128, 128, "M", 256, 256, "M"):
        if cout == "M":
            x = b.pool(x)
            continue
        x = b.op("Relu", b.bn(b.conv(x, cin, cout, 3, pad=1, bias=False), cout))
        cin = cout
    x = b.op("Flatten", x, axis=1)
    x = b.dense(x, 256 * 4 * 4, 10)
    return b.model("vgg7", [3, 32, 32], x, "logits", 10)


# The paper's VGG family (see the module docstring): ints are 3x3 conv output channels, "M" a 2x2 max pool.
VGG_PAPER: dict[str, list] = {
    "vgg6": [64, "M", 128, "M", 256, "M"],
    "vgg7_paper": [64, "M", 128, "M", 256, 256, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"],
}


def vgg_cifar(name: str, cfg: list, seed: int = 0, size: int = 32, classes: int = 10) -> onnx.ModelProto:
    """A VGG for 3 x size x size inputs: Conv(no bias)+BatchNorm+ReLU per int in `cfg`, MaxPool 2x2
    per "M", then Flatten and one dense classifier to `classes` logits."""
    b = _Builder(seed)
    x, cin = "input", 3
    for v in cfg:
        if v == "M":
            x, size = b.pool(x), size // 2
            continue
        x = b.op("Relu", b.bn(b.conv(x, cin, v, 3, pad=1, bias=False), v))
        cin = v
    x = b.op("Flatten", x, axis=1)
    x = b.dense(x, cin * size * size, classes)
    return b.model(name, [3, 32, 32], x, "logits", classes)


MODELS = {
    "lenet5": lenet5,
    "vgg7": vgg7,
    **{name: (lambda name=name: vgg_cifar(name, VGG_PAPER[name])) for name in VGG_PAPER},
}


def write_all(out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fn in MODELS.items():
        paths[name] = out / f"{name}.onnx"
        onnx.save(fn(), paths[name])
    return paths


if __name__ == "__main__":
    for _name, path in write_all(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "models").items():
        print(f"wrote {path}")
