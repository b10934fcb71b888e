"""Per-layer description in the MirrorNet paper's notation, with parameter and MAC counts.

Conv layers are written [IC, OC, K, FI, FO] (paper Sec. IV-D; FI/FO are the input/output spatial
sizes) and dense layers [IC, OC]. Height and width are kept apart internally so non-square kernels
and feature maps are counted exactly; the notation collapses a pair to one number when it is square.

All counts are per sample (the batch dimension is left out):
  Conv  MACs = K_h * K_w * (IC / groups) * OC * FO_h * FO_w
  dense MACs = IC * OC (times any non-batch leading dims of a MatMul's input)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import onnx

from mirrorc.errors import MirrorcError

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    # what the planning functions accept as a model: loaded, as a gs graph, or a file
    ModelLike: TypeAlias = onnx.ModelProto | gs.Graph | str | os.PathLike

# Ops whose weight is a matrix; a MatMul/Gemm counts as "dense" when that matrix is an initializer.
_DENSE_OPS = ("Gemm", "MatMul")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One node of the graph. `kind` is "conv", "dense", "matmul" (activation x activation) or
    "other"; the shape fields are None for "other"."""

    name: str
    op_type: str
    kind: str
    params: int  # numbers held in initializers that this node reads
    macs: int  # per sample; 0 for "other"
    ic: int | None = None
    oc: int | None = None
    k: tuple[int, int] | None = None  # (K_h, K_w)
    fi: tuple[int, int] | None = None  # (FI_h, FI_w)
    fo: tuple[int, int] | None = None  # (FO_h, FO_w)
    groups: int = 1
    out_floats: int = 0  # numbers in the first output per sample; 0 when its shape is unknown
    strides: tuple[int, int] = (1, 1)  # a conv's; the emulator picks the kernel's line by them
    window: int = 1  # inputs read per output number: a pooling's kernel area, an LRN's size
    out_planes: int = 0  # channels of an image-shaped (rank >= 3) first output, else 0
    # a conv whose ReLU -> GlobalAveragePool run inside its kernel (passes.lower_c.fuse_epilogues): its
    # output map is summed as it is computed, never stored (set by mirrorc.profile.step_layers)
    fused_gap: bool = False
    # floats this node reads from what the normal world sent (taps, backbone logits): on a device they
    # were written by the other world since the CPM last ran, so they are read cold (set, as
    # fused_gap, by mirrorc.profile.step_layers and the partition report)
    tap_in_floats: int = 0
    tap_inputs: int = 0  # how many of its inputs those are
    # the first node of its kernel (or op type) in the CPM: a cold inference fetches that loop's code
    # here (mirrorc.plan.emulator.first_of_kind)
    first_of_kind: bool = False
    # floats of the arena lines it writes first in an inference (passes.lower_c.first_touch_floats)
    first_touch_floats: int = 0

    @property
    def notation(self) -> str:
        """The paper's notation: conv[IC, OC, K, FI, FO], dense[IC, OC], else the op type."""
        if self.kind == "conv":
            assert self.k is not None and self.fi is not None and self.fo is not None  # `_conv` sets them
            return f"conv[{self.ic}, {self.oc}, {_pair(self.k)}, {_pair(self.fi)}, {_pair(self.fo)}]"
        if self.kind in ("dense", "matmul"):
            return f"{self.kind}[{self.ic}, {self.oc}]"
        return self.op_type

    @property
    def workload(self) -> int:
        """The emulator's workload unit (paper Eq. 3 and the dense IC x OC); equals the MACs, which
        also account for groups and non-square sizes."""
        return self.macs

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "op_type": self.op_type,
            "kind": self.kind,
            "notation": self.notation,
            "params": self.params,
            "macs": self.macs,
        }
        if self.kind != "other":
            d.update(ic=self.ic, oc=self.oc)
        if self.kind == "conv":
            assert self.k is not None and self.fi is not None and self.fo is not None  # as in `notation`
            d.update(k=list(self.k), fi=list(self.fi), fo=list(self.fo), groups=self.groups)
        return d


def _pair(hw: tuple[int, int]) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


@dataclasses.dataclass(frozen=True)
class Totals:
    macs: int
    params: int


def as_model(model: ModelLike) -> onnx.ModelProto:
    """Accept a ModelProto, an onnx-graphsurgeon Graph or a path; return a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        from passes.load import read_model

        return read_model(model)  # bounded, checked; a bad file is one MirrorcError
    import onnx_graphsurgeon as gs

    if isinstance(model, gs.Graph):
        return gs.export_onnx(model)
    raise TypeError(f"expected onnx.ModelProto, onnx_graphsurgeon.Graph or a path, got {type(model).__name__}")


def _value_infos(model: onnx.ModelProto) -> list:
    """Value infos with shapes for every tensor: the model's own when complete, else inferred on a
    weight-free skeleton (passes.shapes) so big models are not serialized and the model is not touched."""
    g = model.graph
    known = {vi.name for vi in (*g.value_info, *g.output, *g.input) if vi.type.tensor_type.HasField("shape")}
    if all(o in known for n in g.node for o in n.output if o):
        return [*g.input, *g.value_info, *g.output]
    from passes.shapes import skeleton

    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), data_prop=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MirrorcError(f"layers: graph '{g.name}': shape inference failed: {first}") from None
    return [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


class Shapes:
    """Shapes (lists of int or None per dim) and element types of a model's tensors, and which
    tensors are weights. Build one with `Shapes(model)` and pass it to `layers()` to infer once.

    A weight is a float tensor computable from initializers alone: an initializer, a Constant, or the
    output of nodes fed only by weights (the model zoo's "light" files build their weights with
    ConstantOfShape). Integer constants (Reshape shapes, Gather indices) are not parameters."""

    def __init__(self, model):
        model = as_model(model)
        self.shape: dict[str, list] = {}
        self.elem: dict[str, int] = {}
        for vi in _value_infos(model):
            t = vi.type.tensor_type
            self.elem[vi.name] = t.elem_type
            if t.HasField("shape"):
                self.shape[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        self.const: set[str] = set()
        for init in model.graph.initializer:
            self.shape[init.name] = list(init.dims)
            self.elem[init.name] = init.data_type
            self.const.add(init.name)
        self.const_node: set[int] = set()  # indices of nodes that only compute weights
        for i, node in enumerate(model.graph.node):
            if all(x in self.const for x in node.input if x):
                self.const_node.add(i)
                self.const.update(o for o in node.output if o)

    def sample_floats(self, tensor: str) -> int:
        """Numbers per sample in `tensor` (batch dimension left out), 0 when its shape is unknown."""
        s = self.shape.get(tensor)
        return 0 if not s or None in s[1:] else int(np.prod(s[1:], dtype=np.int64))

    def weight_size(self, tensor: str) -> int:
        """Numbers in `tensor` if it is a float weight of known shape, else 0."""
        s = self.shape.get(tensor)
        if tensor not in self.const or s is None or None in s or self.elem.get(tensor) not in _FLOAT_TYPES:
            return 0
        return int(np.prod(s, dtype=np.int64))

    def need(self, node: onnx.NodeProto, tensor: str, rank: int | None = None) -> list[int]:
        """The fully known shape of `tensor`, or a MirrorcError naming the node."""
        s = self.shape.get(tensor)
        if s is None or any(d is None for d in s[1:]) or (rank is not None and len(s) != rank):
            raise MirrorcError(
                f"layers: node '{node.name or node.op_type}': shape of '{tensor}' is unknown "
                f"or not rank {rank} ({s}); give the model's input a fixed size"
            )
        return s


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _conv(node: onnx.NodeProto, shapes: Shapes, params: int) -> Layer:
    x = shapes.need(node, node.input[0], 4)
    w = shapes.need(node, node.input[1], 4)
    y = shapes.need(node, node.output[0], 4)
    groups = int(_attr(node, "group", 1))
    oc, ic_per_group, kh, kw = w
    macs = kh * kw * ic_per_group * oc * y[2] * y[3]
    return Layer(
        node.name,
        node.op_type,
        "conv",
        params,
        macs,
        ic=x[1],
        oc=oc,
        k=(kh, kw),
        fi=(x[2], x[3]),
        fo=(y[2], y[3]),
        groups=groups,
        strides=_pair_attr(node, "strides"),
    )


def _pair_attr(node: onnx.NodeProto, name: str) -> tuple[int, int]:
    v = [int(x) for x in _attr(node, name, [1, 1])]
    return (v[0], v[-1]) if v else (1, 1)


def _window(node: onnx.NodeProto, shapes: Shapes) -> int:
    """Inputs each output number of a pooling or LRN reads (1 for other ops)."""
    if node.op_type in ("MaxPool", "AveragePool", "LpPool"):
        return int(np.prod(_attr(node, "kernel_shape", [1]), dtype=np.int64))
    if node.op_type == "LRN":
        return int(_attr(node, "size", 1))
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        s = shapes.shape.get(node.input[0])
        return int(np.prod(s[2:], dtype=np.int64)) if s and None not in s[2:] else 1
    return 1


def _dense(node: onnx.NodeProto, shapes: Shapes, params: int) -> Layer:
    _a, b = node.input[0], node.input[1]
    y = shapes.need(node, node.output[0])
    if node.op_type == "Gemm":
        bs = shapes.need(node, b, 2)
        ic, oc = (bs[1], bs[0]) if _attr(node, "transB", 0) else (bs[0], bs[1])
        rows = 1  # per sample
    else:
        bs = shapes.need(node, b)
        ic, oc = bs[-2] if len(bs) >= 2 else bs[0], bs[-1] if len(bs) >= 2 else 1
        rows = int(np.prod([d for d in y[1:-1]], dtype=np.int64)) if len(y) > 2 else 1
    kind = "dense" if b in shapes.const else "matmul"
    return Layer(node.name, node.op_type, kind, params, int(rows * ic * oc), ic=int(ic), oc=int(oc))


def _with_sizes(layer: Layer, node: onnx.NodeProto, shapes: Shapes) -> Layer:
    """`layer` with the sizes the Performance Emulator's per-float and per-plane terms count: of the
    first output, when its shape is known (batch dimension left out)."""
    y = shapes.shape.get(node.output[0]) if node.output else None
    if not y or None in y[1:]:
        return layer
    planes = int(y[1]) if len(y) >= 3 else 0
    return dataclasses.replace(layer, out_floats=shapes.sample_floats(node.output[0]), out_planes=planes)


def layers(model: ModelLike, shapes: Shapes | None = None) -> list[Layer]:
    """Every node of `model` (ModelProto, gs.Graph or path) in graph order, described as a Layer.

    Conv, and Gemm/MatMul with a weight initializer, get the paper's notation and MACs; everything
    else is listed as kind "other" with its initializer parameter count."""
    model = as_model(model)
    shapes = shapes or Shapes(model)
    out = []
    for i, node in enumerate(model.graph.node):
        # Weights are counted at the node that uses them, not at the nodes that build them.
        params = 0 if i in shapes.const_node else sum(shapes.weight_size(x) for x in node.input if x)
        if node.op_type == "Conv":
            layer = _conv(node, shapes, params)
        elif node.op_type in _DENSE_OPS:
            layer = _dense(node, shapes, params)
        else:
            layer = Layer(node.name, node.op_type, "other", params, 0, window=_window(node, shapes))
        out.append(_with_sizes(layer, node, shapes))
    return out


def compute_layers(all_layers: Iterable[Layer]) -> list[Layer]:
    """Only the layers the paper counts as compute (conv and dense/matmul)."""
    return [layer for layer in all_layers if layer.kind != "other"]


def totals(all_layers: Iterable[Layer], names: Iterable[str] | None = None) -> Totals:
    """Total MACs and params of the layers whose node names are in `names` (all when None)."""
    wanted = None if names is None else set(names)
    sel = [layer for layer in all_layers if wanted is None or layer.name in wanted]
    return Totals(macs=sum(layer.macs for layer in sel), params=sum(layer.params for layer in sel))


def fmt_count(n: int | float) -> str:
    """A count in engineering units: 416.5K, 3.87G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:.3g}"


__all__ = ["Layer", "Totals", "layers", "Shapes", "compute_layers", "totals", "as_model", "fmt_count"]
