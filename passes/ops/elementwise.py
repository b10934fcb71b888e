"""Elementwise ops. Binary ops (and PRelu) meet two CPM tensors or a CPM tensor and a constant:
channel counts are matched, constants cut along the narrowed axes (a layer's split-out bias/scale
reset). Unary math is cloned as is. C: mc_binary / mc_binary_bcast (runtime_c/kernels, elementwise
family), mc_erf (mc_activation.c)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.lower_c import _err, _prod
from passes.mirror import layer_affine
from passes.ops import AS_IS, registered
from passes.ops._torch import torch_fn

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)


def resize_axis(values: np.ndarray, axis: int, n: int) -> np.ndarray:
    """`values` cut to (or repeated up to) `n` entries along `axis`."""
    if values.shape[axis] >= n:
        return np.take(values, np.arange(n), axis=axis)
    reps = np.arange(n) % values.shape[axis]
    return np.take(values, reps, axis=axis)


def narrow_elementwise(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """Two CPM inputs get equal channels (see MirrorPass.match_channels); a constant is cut (or
    repeated) along every axis the CPM narrowed, a layer's split-out bias/scale reset."""
    mp.match_channels(node, xs)
    out_bb = node.outputs[0].shape
    var = next((x for x in xs if isinstance(x, gs.Variable)), None)
    if var is None:
        raise mp.fail("elementwise op without a variable input", node.name)
    new = []
    for i, x in enumerate(xs):
        if not isinstance(x, gs.Constant):
            new.append(x)
            continue
        v = np.asarray(x.values)
        reset = layer_affine(node)  # the backbone node's layer bias/scale: fresh, not copied
        if reset is not None:
            v = np.full(v.shape, reset, dtype=v.dtype)
        off = len(out_bb) - v.ndim
        for a in range(v.ndim):
            ax = a + off
            if ax < 0 or v.shape[a] == 1:
                continue
            bb, cp = out_bb[ax], var.shape[ax] if ax < len(var.shape) else None
            if v.shape[a] == bb and cp is not None and cp != bb:
                v = resize_axis(v, a, int(cp))
        new.append(gs.Constant(f"cpm/{node.name}/c{i}", np.ascontiguousarray(v)))
    return new, attrs


def emit_binary(kind: str) -> Callable[..., list[str]]:
    """Emitter of `mc_binary(kind, ...)`, strided (`mc_binary_bcast`) when an operand broadcasts."""

    def emit(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
        A, B = node.input[0], node.input[1]
        sa, sb = em.shapes[A], em.shapes[B]
        if tuple(sa) == tuple(sb) == tuple(ys):
            return [f"mc_binary({kind}, {em.operand(A)}, {em.operand(B)}, {y}, {_prod(ys)});"]
        rank = len(ys)
        if rank > 6:
            raise _err(node, "rank above 6")

        def strides(shape: tuple[int, ...]) -> list[int]:
            shape = (1,) * (rank - len(shape)) + tuple(shape)
            st, acc = [0] * rank, 1
            for i in range(rank - 1, -1, -1):
                st[i] = 0 if shape[i] == 1 and ys[i] != 1 else acc
                acc *= shape[i]
            return st

        # merge neighbouring dims that both operands walk the same way ([1,C,H,W] op [C,1,1] -> [C, H*W])
        dims, st_a, st_b = [ys[0]], [strides(sa)[0]], [strides(sb)[0]]
        for d, ta, tb in zip(ys[1:], strides(sa)[1:], strides(sb)[1:]):
            if d == 1:  # never advances
                continue
            if (
                all(
                    (prev == 0 and cur == 0) or (cur != 0 and prev == cur * d)
                    for prev, cur in ((st_a[-1], ta), (st_b[-1], tb))
                )
                or dims[-1] == 1
            ):
                dims[-1] *= d  # (a leading size-1 dim carries no stride information)
                st_a[-1], st_b[-1] = ta, tb
            else:
                dims.append(d)
                st_a.append(ta)
                st_b.append(tb)
        return [
            f"mc_binary_bcast({kind}, {em.operand(A)}, {em.operand(B)}, {y}, {len(dims)}, {em.ints(dims)}, "
            f"{em.ints(st_a)}, {em.ints(st_b)});"
        ]

    return emit


def binary_inplace(node: onnx.NodeProto, shapes: dict) -> bool:
    """A binary op may overwrite its first input when neither operand broadcasts."""
    out = shapes.get(node.output[0])
    return shapes.get(node.input[0]) == out and shapes.get(node.input[1]) == out


def torch_prelu(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    def prelu(x: Tensor, slope: Tensor) -> Tensor:
        if slope.dim() == 1 and x.dim() > 2 and slope.shape[0] == x.shape[1]:
            slope = slope.reshape(1, -1, *([1] * (x.dim() - 2)))
        return torch.where(x >= 0, x, x * slope)

    return prelu


def emit_erf(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    return [f"mc_erf({em.buf(node.input[0])}, {y}, {_prod(ys)});"]


def torch_extremum(name: str) -> Callable[..., Any]:
    """Builder of variadic Max/Min: torch.maximum/minimum folded over the inputs (they broadcast)."""

    def build(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
        import torch

        pairwise = getattr(torch, name)

        def extremum(*xs: Tensor) -> Tensor:
            out = xs[0]
            for x in xs[1:]:
                out = pairwise(out, x)
            return out

        return extremum

    return build


def torch_sum(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    def total(*xs: Tensor) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    return total


_BIN = {"narrow": narrow_elementwise, "keeps_shape": True}
for _name, _torch_name in (("Add", "add"), ("Sub", "sub"), ("Mul", "mul"), ("Div", "div")):
    _emit = emit_binary(f"MC_{_name.upper()}")
    op(
        _name,
        per_channel=True,
        torch=torch_fn(_torch_name),
        emit=_emit,
        inplace=binary_inplace,
        node_tests=True,
        **_BIN,
    )
# a constant operand of Max/Min is a bound and Pow's exponent a setting: configuration, not weights
for _name, _torch_name in (("Max", "maximum"), ("Min", "minimum")):
    op(
        _name,
        torch=torch_extremum(_torch_name),
        config_slots=(0, 1),
        emit=emit_binary(f"MC_{_name.upper()}"),
        inplace=binary_inplace,
        **_BIN,
    )
op("Pow", narrow=narrow_elementwise, torch=torch_fn("pow"), config_slots=(1,))
# PRelu is an activation to the tap rule; its slope may broadcast, so the kernel never runs in place
op(
    "PRelu",
    per_channel=True,
    tap_role="boundary",
    torch=torch_prelu,
    emit=emit_binary("MC_PRELU"),
    node_tests=True,
    **_BIN,
)
op("Sum", torch=torch_sum)
# unary math: per position
op("Neg", narrow=AS_IS, keeps_shape=True, torch=torch_fn("neg"))
op("Sqrt", narrow=AS_IS, keeps_shape=True, torch=torch_fn("sqrt"))
op("Exp", narrow=AS_IS, keeps_shape=True, torch=torch_fn("exp"))
op(
    "Erf",
    narrow=AS_IS,
    keeps_shape=True,
    torch=torch_fn("erf"),
    emit=emit_erf,
    inplace=True,
    node_tests=True,
)
for _name in ("Abs", "Reciprocal"):
    op(_name, narrow=AS_IS, keeps_shape=True)
for _name in ("Log", "Floor", "Ceil"):
    op(_name, narrow=AS_IS)
