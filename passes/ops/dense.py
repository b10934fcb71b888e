"""Gemm and MatMul: dense layers narrowed to C_l features (paper Eq. 1), run by F.linear/matmul,
lowered to mc_gemm / mc_matmul (runtime_c/kernels, dense family)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.lower_c import _err, _prod, c_float
from passes.mirror import torch_uniform
from passes.ops import registered
from passes.ops._torch import torch_fn
from passes.taps import is_parametric

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)


def narrow_dense(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """A dense layer with a constant weight: hidden widths C_l = the flattened CPM tensor entering
    the first dense layer (or `dense_width`), clamped to [K, the backbone's width]; heads keep K."""
    if not is_parametric(node):  # a MatMul of two activations (attention): nothing to narrow
        raise mp.fail(f"{node.op} on the way to the logits: the mirror pass cannot narrow it", node.name)
    x, w = xs[0], node.inputs[1]
    if node.op == "MatMul" and len(x.shape) > 2 and len(w.shape) == 2:
        return _narrow_pointwise(mp, node, x, w), attrs
    if len(x.shape) != 2 or len(w.shape) != 2:
        raise mp.fail("only 2-D dense layers can be narrowed", node.name)
    if node.op == "Gemm" and attrs.get("transA", 0):
        raise mp.fail("Gemm with transA=1 cannot be narrowed", node.name)
    trans_b = node.op == "Gemm" and attrs.get("transB", 0)
    bb_out = int(w.shape[0] if trans_b else w.shape[1])
    f_in = int(x.shape[1])
    if node.name in mp.heads:
        f_out = bb_out
    else:
        if mp.dense_width is None:
            mp.dense_width = f_in  # paper Eq. 1: C_l = C x FO^2, the flattened CPM tensor
        f_out = min(max(mp.dense_width, mp.num_classes), bb_out)
    name = f"cpm/{node.name}"
    shape = [f_out, f_in] if trans_b else [f_in, f_out]
    new = [x, gs.Constant(f"{name}/weight", torch_uniform(mp.rng, shape, f_in))]
    if len(xs) > 2 and xs[2] is not None:
        b = node.inputs[2]
        bshape = list(b.shape) if isinstance(b, gs.Constant) else [bb_out]
        bshape = [f_out if d == bb_out else d for d in bshape]
        new.append(gs.Constant(f"{name}/bias", torch_uniform(mp.rng, bshape, f_in)))
    return new, attrs


def _narrow_pointwise(mp: Any, node: gs.Node, x: gs.Variable, w: gs.Constant) -> list:
    """A MatMul of an [N, ..., C] activation by a constant [C, D]: a dense layer at every position
    over the last axis (ConvNeXt's Linear on channels-last tensors), i.e. a 1x1 conv: narrowed like
    one, to C output channels (a head keeps its outputs)."""
    bb_out, f_in = int(w.shape[1]), int(x.shape[-1])
    f_out = bb_out if node.name in mp.heads else min(mp.opts["channels"], bb_out)
    return [x, gs.Constant(f"cpm/{node.name}/weight", torch_uniform(mp.rng, [f_in, f_out], f_in))]


def torch_gemm(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch.nn.functional as F

    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)

    def gemm(a: Tensor, b: Tensor, c: Tensor | None = None) -> Tensor:
        if trans_a:
            a = a.t()
        if alpha == 1.0 and beta == 1.0 and (c is None or c.dim() <= 1):
            # the common dense layer: one fused kernel
            return F.linear(a, b if trans_b else b.t(), c)
        y = alpha * (a @ (b.t() if trans_b else b))
        return y if c is None else y + beta * c

    return gemm


def emit_gemm(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    A, B = node.input[0], node.input[1]
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
    sa, sb = em.shapes[A], em.shapes[B]
    m, k = (sa[1], sa[0]) if ta else sa
    n = sb[0] if tb else sb[1]
    c, rows, cols = "0", 1, 1
    if len(node.input) > 2 and node.input[2]:
        cs = em.shapes[node.input[2]]
        cs = (1,) * (2 - len(cs)) + tuple(cs)
        rows, cols = cs
        c = em.operand(node.input[2])
    if tb and B in em.consts:
        # a constant B is stored transposed: the kernel then runs along contiguous rows of B and
        # vectorises across the outputs (with transB a 1-row A gets one dot product per output)
        b, tb = em.weight(B + "^T", np.asarray(em.consts[B]).reshape(n, k).T), 0
    else:
        b = em.operand(B)
    return [
        f"mc_gemm({em.operand(A)}, {b}, {c}, {y}, {m}, {k}, {n}, {ta}, {tb}, "
        f"{c_float(a.get('alpha', 1.0))}, {c_float(a.get('beta', 1.0))}, {rows}, {cols});"
    ]


def emit_matmul(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    A, B = node.input
    sa, sb = list(em.shapes[A]), list(em.shapes[B])
    if len(sa) == 1:
        sa = [1, sa[0]]
    if len(sb) == 1:
        sb = [sb[0], 1]
    m, k = sa[-2:]
    n = sb[-1]
    ba, bb = sa[:-2], sb[:-2]
    batch = max(_prod(ba), _prod(bb))
    if (
        _prod(ba) not in (1, batch)
        or _prod(bb) not in (1, batch)
        or (_prod(ba) == _prod(bb) == batch and batch > 1 and ba[-len(bb) :] != bb[-len(ba) :])
    ):
        raise _err(node, f"MatMul batch broadcasting {em.shapes[A]} x {em.shapes[B]} is not supported")
    a_stride = m * k if _prod(ba) == batch else 0
    b_stride = k * n if _prod(bb) == batch else 0
    return [f"mc_matmul({em.operand(A)}, {em.operand(B)}, {y}, {batch}, {m}, {k}, {n}, {a_stride}, {b_stride});"]


op("Gemm", narrow=narrow_dense, torch=torch_gemm, emit=emit_gemm, node_tests=True)
op("MatMul", narrow=narrow_dense, torch=torch_fn("matmul"), emit=emit_matmul, node_tests=True)
