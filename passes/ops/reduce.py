"""Reductions: cloned as they are (they reduce over whatever axes the backbone's do); ArgMax gives
the label. C: mc_argmax_axis (runtime_c/kernels, reduce family)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import onnx

from passes.lower_c import _prod
from passes.ops import AS_IS, registered

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)


def torch_reduce_mean(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    keepdims = bool(attrs.get("keepdims", 1))
    static = attrs.get("axes")

    def reduce_mean(x: Tensor, axes: Tensor | None = None) -> Tensor:
        ax = static if axes is None else axes.tolist()
        return x.mean(dim=list(ax) if ax is not None else list(range(x.dim())), keepdim=keepdims)

    return reduce_mean


def torch_argmax(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    axis, keepdims = attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    last = bool(attrs.get("select_last_index", 0))

    def argmax(x: Tensor) -> Tensor:
        if last:
            flipped = x.flip(axis)
            return x.shape[axis] - 1 - flipped.argmax(axis, keepdim=keepdims)
        return x.argmax(axis, keepdim=keepdims)

    return argmax


def emit_argmax(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    axis = a.get("axis", 0) % len(xs)
    return [
        f"mc_argmax_axis({em.buf(node.input[0])}, (int32_t *){y}, {_prod(xs[:axis])}, {xs[axis]}, "
        f"{_prod(xs[axis + 1 :])}, {int(a.get('select_last_index', 0))});"
    ]


op("ReduceMean", narrow=AS_IS, torch=torch_reduce_mean)
for _name in ("ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"):
    op(_name, narrow=AS_IS)
op("ArgMax", torch=torch_argmax, emit=emit_argmax, node_tests=True)
