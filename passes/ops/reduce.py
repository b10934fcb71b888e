"""Reductions: cloned as they are (they reduce over whatever axes the backbone's do). Over spatial
axes (global average pooling as the current exporter writes it: ReduceMean over [2, 3]) the CPM's
copy acts per channel; over the channel axis it reduces the CPM's own C channels, as the CPM's
copy of a normalisation normalises over its own channels: the CPM is trained, not a slice of the
backbone, so its copy need not compute the same function. ArgMax gives the label.
C: mc_reduce_axis (runtime_c/kernels/mc_reduce.c) when the reduced axes are one contiguous run,
mc_reduce_strided otherwise; mc_argmax_axis (elementwise family)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from passes.lower_c import _err, _prod
from passes.ops import AS_IS, registered

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)

_KIND = {"ReduceMean": "MC_REDUCE_MEAN", "ReduceMax": "MC_REDUCE_MAX"}


def torch_reduce(method: str) -> Callable[..., Any]:
    """Builder of a Reduce* op running `Tensor.<method>(dim, keepdim)`; axes from the attribute
    (opset < 18) or the second input, none meaning all (or nothing, with noop_with_empty_axes)."""

    def build(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
        keepdims = bool(attrs.get("keepdims", 1))
        noop = bool(attrs.get("noop_with_empty_axes", 0))
        static = attrs.get("axes")

        def reduce(x: Tensor, axes: Tensor | None = None) -> Tensor:
            given = axes.tolist() if axes is not None else (list(static) if static is not None else [])
            if not given:
                if noop:
                    return x
                given = list(range(x.dim()))
            return getattr(x, method)(dim=given, keepdim=keepdims)

        return reduce

    return build


def reduced_axes(em: Any, node: onnx.NodeProto, a: dict, rank: int) -> list[int]:
    """The axes a Reduce* node reduces, normalised to 0..rank-1 (all of them when none are given)."""
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in em.consts:
            raise _err(node, f"axes input '{node.input[1]}' must be a constant")
        axes = [int(v) for v in np.asarray(em.consts[node.input[1]]).ravel()]
    else:
        axes = [int(v) for v in a.get("axes", [])]
    if not axes:
        return [] if a.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({ax % rank for ax in axes})


def merged_dims(shape: tuple, axes: list[int]) -> list[tuple[int, bool]]:
    """(size, reduced) of `shape` with size-1 dims dropped (reducing them changes nothing) and
    neighbouring dims that are both reduced or both kept merged: [1,C,H,W] over [2,3] -> [(C,
    kept), (H*W, reduced)]."""
    dims: list[tuple[int, bool]] = []
    for i, d in enumerate(shape):
        if d == 1:
            continue
        red = i in axes
        if dims and dims[-1][1] == red:
            dims[-1] = (dims[-1][0] * d, red)
        else:
            dims.append((d, red))
    return dims


def emit_reduce(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    if 0 in xs:  # ONNX defines the empty reduction (-inf, nan); no classifier computes one
        raise _err(node, "a reduction of an empty tensor is not supported")
    dims = merged_dims(xs, reduced_axes(em, node, a, len(xs)))
    runs = [i for i, (_, red) in enumerate(dims) if red]
    x, kind = em.buf(node.input[0]), _KIND[node.op_type]
    if not runs:  # nothing (or only size-1 dims) reduced
        return [f"mc_copy({x}, {y}, {_prod(ys)});"]
    if len(runs) == 1:
        i = runs[0]
        outer, inner = _prod([d for d, _ in dims[:i]]), _prod([d for d, _ in dims[i + 1 :]])
        return [f"mc_reduce_axis({kind}, {x}, {y}, {outer}, {dims[i][0]}, {inner});"]
    sizes, flags = [d for d, _ in dims], [int(red) for _, red in dims]
    return [f"mc_reduce_strided({kind}, {x}, {y}, {len(dims)}, {em.ints(sizes)}, {em.ints(flags)});"]


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


_REDUCE = {"narrow": AS_IS, "emit": emit_reduce, "node_tests": True}
op("ReduceMean", torch=torch_reduce("mean"), **_REDUCE)
op("ReduceMax", torch=torch_reduce("amax"), **_REDUCE)
for _name in ("ReduceMin", "ReduceSum", "ReduceL2"):
    op(_name, narrow=AS_IS)
op("ArgMax", torch=torch_argmax, emit=emit_argmax, node_tests=True)
