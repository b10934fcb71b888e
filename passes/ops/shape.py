"""Shape and layout ops. Views (Flatten, Reshape, Squeeze, Unsqueeze) are a copy in C, or nothing
when the memory plan puts the output on its input; Transpose and Concat have kernels in
mc_elementwise.c, Split, Slice and Pad in mc_layout.c (runtime_c/kernels). Reshape targets, Split
sizes and Slice bounds along the channels are recomputed for the CPM; Shape/Gather/Constant
arithmetic is folded by the interpreter."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.lower_c import _err, _prod, c_float
from passes.ops import AS_IS, registered
from passes.ops._torch import to_tensor, torch_pad

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)

_ONNX_TO_TORCH_DTYPE = {  # names in torch, looked up when a Cast is built
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


# -- narrowing ------------------------------------------------------------------------------------


def proportional(sizes: list[int], total: int) -> list[int]:
    """`total` split into len(sizes) positive parts in the proportions of `sizes`."""
    whole = sum(sizes)
    out = [max(1, total * s // whole) for s in sizes]
    while sum(out) > total:  # take from the largest part
        out[out.index(max(out))] -= 1
    while sum(out) < total:
        out[out.index(min(out))] += 1
    return out


def narrow_reshape_target(bb_in: list, bb_out: list, cp_in: list, target: np.ndarray) -> np.ndarray | None:
    """The CPM's Reshape target. Input and output dims of the backbone are matched in groups of equal
    product (dim 0, the batch, passes through); the group holding the channel dim is rebuilt from the
    CPM's channel count: a merge multiplies, a split takes, dim by dim, the largest divisor of what
    is left that also divides the backbone dim (the last dim takes the rest)."""
    if len(bb_in) < 2 or len(bb_out) < 1 or len(target) != len(bb_out):
        return None
    if bb_in[1:] == cp_in[1:]:
        return target
    ins, outs = bb_in[1:], bb_out[1:]
    if any(not isinstance(d, int) for d in ins + outs):
        return None
    # group dims: walk both lists, closing a group when the products agree
    groups, i, j = [], 0, 0
    while i < len(ins) or j < len(outs):
        gi, gj = [i], [j]
        pi, pj = ins[i] if i < len(ins) else 1, outs[j] if j < len(outs) else 1
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(ins):
                pi *= ins[i]
                gi.append(i)
                i += 1
            elif j < len(outs):
                pj *= outs[j]
                gj.append(j)
                j += 1
            else:
                return None
        groups.append(([a for a in gi if a < len(ins)], [b for b in gj if b < len(outs)]))
    new = [int(d) for d in outs]
    for gi, gj in groups:
        if not gj:
            continue
        if not gi:
            continue
        total = int(np.prod([cp_in[1 + a] for a in gi]))
        if total == int(np.prod([ins[a] for a in gi])):
            continue  # this group is not narrowed
        left = total
        for b in gj[:-1]:
            d = math.gcd(left, outs[b])
            new[b] = d
            left //= d
        new[gj[-1]] = left
    result = target.copy()
    result[1:] = new
    return result


def narrow_reshape(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """Output dims that came from the channel dim are recomputed from the CPM's channel count."""
    if not isinstance(node.inputs[1], gs.Constant):
        raise mp.fail("Reshape with a computed shape cannot be narrowed", node.name)
    bb_in = [int(d) if isinstance(d, int) else d for d in node.inputs[0].shape]
    bb_out = list(node.outputs[0].shape)
    cp_in = list(xs[0].shape)
    target = np.array(node.inputs[1].values, dtype=np.int64)
    new_target = narrow_reshape_target(bb_in, bb_out, cp_in, target)
    if new_target is None:
        raise mp.fail(f"cannot map Reshape {bb_in} -> {bb_out} onto the CPM's {cp_in}", node.name)
    return [xs[0], gs.Constant(f"cpm/{node.name}/shape", new_target)], attrs


def narrow_split(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """A split along the channels (ShuffleNet v2's channel split) keeps its proportions."""
    rank = len(node.inputs[0].shape)
    axis = int(attrs.get("axis", 0)) % rank
    if axis != 1:
        return [mp.copy_const(x) if isinstance(x, gs.Constant) else x for x in xs], attrs
    parts = len(node.outputs)
    if len(xs) > 1 and isinstance(xs[1], gs.Constant):
        sizes = [int(v) for v in np.asarray(xs[1].values)]
    elif "split" in attrs:
        sizes = [int(v) for v in attrs["split"]]
    else:
        sizes = [int(node.inputs[0].shape[1]) // parts] * parts
    c = int(xs[0].shape[1])
    if c < parts:
        raise mp.fail(f"the CPM has {c} channels here, too few to split into {parts}", node.name)
    new = proportional(sizes, c)
    attrs.pop("split", None)
    attrs.pop("num_outputs", None)
    return [xs[0], gs.Constant(f"cpm/{node.name}/split", np.array(new, dtype=np.int64))], attrs


def narrow_slice(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """A slice of the channels keeps its place: [s, e) of the backbone's channels becomes the
    proportional range of the CPM's (at least one channel)."""
    consts = [x for x in xs[1:] if x is not None and x.name]
    if any(not isinstance(x, gs.Constant) for x in consts):
        raise mp.fail("Slice with computed bounds cannot be narrowed", node.name)
    rank = len(node.inputs[0].shape)
    starts, ends = (np.array(x.values, dtype=np.int64) for x in xs[1:3])
    axes = np.array(xs[3].values, dtype=np.int64) % rank if len(xs) > 3 and xs[3].name else np.arange(len(starts))
    steps = np.array(xs[4].values, dtype=np.int64) if len(xs) > 4 and xs[4].name else np.ones(len(starts), np.int64)
    starts, ends = starts.copy(), ends.copy()
    for i, ax in enumerate(axes):
        if ax != 1:
            continue
        bb, c = int(node.inputs[0].shape[1]), int(xs[0].shape[1])
        if steps[i] != 1:
            raise mp.fail("Slice with a step along the channels cannot be narrowed", node.name)
        s, e = (int(np.clip(v + bb if v < 0 else v, 0, bb)) for v in (starts[i], ends[i]))
        new_s = min(s * c // bb, c - 1)
        starts[i], ends[i] = new_s, max(new_s + 1, e * c // bb)
    new = [xs[0], gs.Constant(f"cpm/{node.name}/starts", starts), gs.Constant(f"cpm/{node.name}/ends", ends)]
    return new + [mp.copy_const(x) if isinstance(x, gs.Constant) else x for x in xs[3:]], attrs


def narrow_pad(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """Spatial pads are cloned as they are; a Pad that adds or drops channels would give the CPM
    channels its narrowing never accounted for, and is refused."""
    rank = len(node.inputs[0].shape)
    pads = xs[1].values if len(xs) > 1 and isinstance(xs[1], gs.Constant) else attrs.get("pads")
    axes = xs[3].values if len(xs) > 3 and isinstance(xs[3], gs.Constant) else None
    if pads is None:
        raise mp.fail("Pad with computed pads cannot be narrowed", node.name)
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    if 1 in axes and (pads[axes.index(1)] or pads[axes.index(1) + len(axes)]):
        raise mp.fail("Pad along the channels cannot be narrowed", node.name)
    return [mp.copy_const(x) if isinstance(x, gs.Constant) else x for x in xs], attrs


# -- index plans shared by the torch and C parts ---------------------------------------------------


def split_sizes(attrs: dict, n: int, parts: int, split: Any = None) -> list[int]:
    """Sizes of a Split's outputs along an axis of n: the `split` input or attribute, else
    num_outputs (opset 18: ceil(n / parts) each, the last one smaller) or equal parts."""
    if split is not None and len(split):
        return [int(v) for v in split]
    if "split" in attrs:
        return [int(v) for v in attrs["split"]]
    k = int(attrs.get("num_outputs", parts))
    each = -(-n // k)
    return [each] * (k - 1) + [n - each * (k - 1)]


def slice_bounds(start: int, end: int, step: int, n: int) -> tuple[int, int]:
    """(first index, count) of an ONNX Slice along a dim of n (negative indices count from the end;
    starts and ends are clamped to [0, n] for positive steps, [0, n-1] and [-1, n-1] for negative)."""
    start, end = start + n if start < 0 else start, end + n if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), n), min(max(end, 0), n)
        return start, max(0, -(-(end - start) // step))
    start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
    return start, max(0, -(-(start - end) // -step))


def slice_plan(
    node: onnx.NodeProto, shape: list[int], starts: Any, ends: Any, axes: Any, steps: Any
) -> tuple[list[int], list[int], list[int]]:
    """Per dim of `shape`: (first index, step, count) of a Slice with these (constant) bounds."""
    from passes.errors import MirrorcError

    rank = len(shape)
    starts, ends = [int(v) for v in starts], [int(v) for v in ends]
    axes = list(range(len(starts))) if axes is None else [int(v) % rank for v in axes]
    steps = [1] * len(starts) if steps is None else [int(v) for v in steps]
    first, step, count = [0] * rank, [1] * rank, list(shape)
    for ax, b, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise MirrorcError(f"node '{node.name or node.output[0]}' (Slice): a step of 0 along axis {ax}")
        first[ax], count[ax] = slice_bounds(b, e, st, int(shape[ax]))
        step[ax] = st
    return first, step, count


PAD_MODES = {"constant": 0, "reflect": 1, "edge": 2}  # MC_PAD_* in mirrorc_kernels.h


def pad_plan(node: onnx.NodeProto, attrs: dict, rank: int, pads: Any, axes: Any) -> tuple[str, list[int], list[int]]:
    """(mode, begins, ends) of a Pad over all `rank` dims; pads from the input (opset 11+) or the
    attribute, for `axes` (opset 18) or every dim. Modes other than constant/reflect/edge are refused."""
    from passes.errors import MirrorcError

    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in PAD_MODES:
        raise MirrorcError(f"node '{node.name or node.output[0]}' (Pad): mode '{mode}' is not supported")
    values = [int(v) for v in (attrs["pads"] if pads is None else pads)]
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    begins, ends = [0] * rank, [0] * rank
    for i, ax in enumerate(axes):
        begins[ax], ends[ax] = values[i], values[i + len(axes)]
    return mode, begins, ends


def pad_source(n: int, begin: int, out: int, mode: str) -> np.ndarray:
    """Input index read for each of `out` output positions along a dim of n (-1: the constant),
    as mc_pad's pad_source computes it."""
    i = np.arange(out) - begin
    inside = (i >= 0) & (i < n)
    if mode == "edge":
        return np.clip(i, 0, n - 1)
    if mode == "reflect":
        period = 2 * (n - 1)
        if period == 0:
            return np.zeros(out, dtype=np.int64)
        r = np.mod(i, period)
        return np.where(r < n, r, period - r)
    return np.where(inside, i, -1)


def _const_input(em: Any, node: onnx.NodeProto, i: int, what: str) -> np.ndarray | None:
    """Input i of a node as a constant array (None when absent); a computed one is refused."""
    if len(node.input) <= i or not node.input[i]:
        return None
    if node.input[i] not in em.consts:
        raise _err(node, f"{what} must be a constant")
    return np.asarray(em.consts[node.input[i]])


# -- C --------------------------------------------------------------------------------------------


def emit_copy(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    """A view: nothing when the memory plan put the output on the input, else a copy."""
    x, out = node.input[0], node.output[0]
    if em.buf(x) == y:
        return [f"/* in place: {out} is {x} */"]
    return [f"mc_copy({em.buf(x)}, {y}, {_prod(ys)});"]


def emit_transpose(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    perm = a.get("perm", list(range(len(xs)))[::-1])
    if len(xs) > 6:
        raise _err(node, "rank above 6")
    return [f"mc_transpose({em.buf(node.input[0])}, {y}, {len(xs)}, {em.ints(xs)}, {em.ints(perm)});"]


def emit_concat(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    axis = a["axis"] % len(ys)
    outer, inner_y = _prod(ys[:axis]), _prod(ys[axis:])
    lines, offset = [], 0
    for t in node.input:
        inner_x = _prod(em.shapes[t][axis:])
        lines.append(f"mc_concat_part({em.operand(t)}, {y}, {outer}, {inner_x}, {inner_y}, {offset});")
        offset += inner_x
    return lines


def emit_split(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    axis = a.get("axis", 0) % len(xs)
    sizes = split_sizes(a, xs[axis], len(node.output), _const_input(em, node, 1, "the split sizes"))
    outer, inner_x, block = _prod(xs[:axis]), _prod(xs[axis:]), _prod(xs[axis + 1 :])
    lines, offset = [], 0
    for t, size in zip(node.output, sizes):
        if t:  # an unused output is skipped
            args = f"{outer}, {size * block}, {inner_x}, {offset}"
            lines.append(f"mc_split_part({em.buf(node.input[0])}, {em.buf(t)}, {args});")
        offset += size * block
    return lines


def emit_slice(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    if len(xs) > 6:
        raise _err(node, "rank above 6")
    if "starts" in a:  # opset < 10: attributes
        bounds = [a["starts"], a["ends"], a.get("axes"), None]
    else:
        bounds = [_const_input(em, node, i, "Slice starts, ends, axes and steps") for i in range(1, 5)]
    first, step, count = slice_plan(node, list(xs), *bounds)
    if tuple(count) != tuple(ys):
        raise _err(node, f"output shape {list(count)} differs from the inferred {list(ys)}")
    if not _prod(ys):
        return [f"/* {node.output[0]} is empty */"]
    return [
        f"mc_slice({em.buf(node.input[0])}, {y}, {len(xs)}, {em.ints(xs)}, {em.ints(first)}, "
        f"{em.ints(step)}, {em.ints(ys)});"
    ]


def emit_pad(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    if len(xs) > 6:
        raise _err(node, "rank above 6")
    pads = _const_input(em, node, 1, "Pad pads")
    value = _const_input(em, node, 2, "Pad constant_value")
    axes = _const_input(em, node, 3, "Pad axes")
    mode, begins, _ = pad_plan(node, a, len(xs), pads, axes)
    fill = float(value.reshape(-1)[0]) if value is not None and value.size else float(a.get("value", 0.0))
    return [
        f"mc_pad({em.buf(node.input[0])}, {y}, {len(xs)}, {em.ints(xs)}, {em.ints(begins)}, {em.ints(ys)}, "
        f"{PAD_MODES[mode]}, {c_float(fill)});"
    ]


# -- torch ----------------------------------------------------------------------------------------


def torch_flatten(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    axis = attrs.get("axis", 1)

    def flatten(x: Tensor) -> Tensor:
        ax = axis % x.dim() if x.dim() else 0
        return x.reshape(int(np.prod(x.shape[:ax])), -1)

    return flatten


def torch_reshape(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    allowzero = attrs.get("allowzero", 0)
    static = attrs.get("shape")  # opset < 5

    def reshape(x: Tensor, shape: Tensor | None = None) -> Tensor:
        target: list = list(static or ()) if shape is None else [int(v) for v in shape.tolist()]
        if not allowzero:
            target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return x.reshape(target)

    return reshape


def torch_transpose(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    perm = attrs.get("perm")
    return lambda x: x.permute(*(perm if perm is not None else reversed(range(x.dim()))))


def torch_squeeze(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    static = attrs.get("axes")

    def squeeze(x: Tensor, axes: Tensor | None = None) -> Tensor:
        ax = static if axes is None else axes.tolist()
        if ax is None:
            return x.squeeze()
        ax = sorted((a % x.dim() for a in ax), reverse=True)
        for a in ax:
            x = x.squeeze(a)
        return x

    return squeeze


def torch_unsqueeze(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    static = attrs.get("axes")

    def unsqueeze(x: Tensor, axes: Tensor | None = None) -> Tensor:
        ax = list((static or ()) if axes is None else axes.tolist())
        rank = x.dim() + len(ax)
        for a in sorted(a % rank for a in ax):
            x = x.unsqueeze(a)
        return x

    return unsqueeze


def torch_concat(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    axis = attrs["axis"]
    return lambda *xs: torch.cat(xs, axis)


def torch_gather(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    axis = attrs.get("axis", 0)

    def gather(x: Tensor, idx: Tensor) -> Tensor:
        ax = axis % x.dim()
        idx = torch.where(idx < 0, idx + x.shape[ax], idx).long()
        out = x.index_select(ax, idx.reshape(-1))
        return out.reshape(*x.shape[:ax], *idx.shape, *x.shape[ax + 1 :])

    return gather


def torch_shape(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    return lambda x: torch.tensor(list(x.shape), dtype=torch.int64)


def torch_constant(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch
    from onnx import numpy_helper

    from passes.errors import MirrorcError

    if "value" in attrs:
        value = to_tensor(numpy_helper.to_array(attrs["value"]))
    elif "value_float" in attrs:
        value = torch.tensor(attrs["value_float"], dtype=torch.float32)
    elif "value_floats" in attrs:
        value = torch.tensor(attrs["value_floats"], dtype=torch.float32)
    elif "value_int" in attrs:
        value = torch.tensor(attrs["value_int"], dtype=torch.int64)
    elif "value_ints" in attrs:
        value = torch.tensor(attrs["value_ints"], dtype=torch.int64)
    else:
        raise MirrorcError(f"torchgraph: node '{node.name}': Constant without a supported value attribute")
    return lambda: value


def torch_constant_of_shape(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch
    from onnx import numpy_helper

    value = attrs.get("value")
    fill = to_tensor(numpy_helper.to_array(value)) if value is not None else torch.zeros(1)

    def constant_of_shape(shape: Tensor) -> Tensor:
        return torch.full([int(v) for v in shape.tolist()], fill.reshape(-1)[0].item(), dtype=fill.dtype)

    return constant_of_shape


def torch_cast(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    from passes.errors import MirrorcError

    to = attrs["to"]
    if to not in _ONNX_TO_TORCH_DTYPE:
        raise MirrorcError(f"torchgraph: node '{node.name}': Cast to data type {to} is not supported")
    dtype = getattr(torch, _ONNX_TO_TORCH_DTYPE[to])
    return lambda x: x.to(dtype)


def torch_split(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    axis = attrs.get("axis", 0)
    parts = len(node.output)

    def split(x: Tensor, sizes: Tensor | None = None) -> Tensor | tuple[Tensor, ...]:
        ax = axis % x.dim()
        out = x.split(split_sizes(attrs, x.shape[ax], parts, None if sizes is None else sizes.tolist()), ax)
        return out[0] if parts == 1 else tuple(out)

    return split


def _take(x: Tensor, dim: int, index: Any) -> Tensor:
    """x indexed along dim by an array of indices."""
    import torch

    return x.index_select(dim, torch.as_tensor(np.asarray(index, dtype=np.int64)))


def torch_slice(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    def slice_(
        x: Tensor,
        starts: Tensor | None = None,
        ends: Tensor | None = None,
        axes: Tensor | None = None,
        steps: Tensor | None = None,
    ) -> Tensor:
        if starts is None or ends is None:  # opset < 10: attributes
            bounds = [attrs["starts"], attrs["ends"], attrs.get("axes"), None]
        else:
            bounds = [t if t is None else t.tolist() for t in (starts, ends, axes, steps)]
        first, step, count = slice_plan(node, list(x.shape), *bounds)
        for d, (b, st, n) in enumerate(zip(first, step, count)):
            if (b, st, n) == (0, 1, x.shape[d]):
                continue
            x = x.narrow(d, b, n) if st == 1 else _take(x, d, np.arange(n) * st + b)
        return x

    return slice_


def torch_pad_op(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch.nn.functional as F

    def pad(x: Tensor, pads: Tensor | None = None, value: Tensor | None = None, axes: Tensor | None = None) -> Tensor:
        rank = x.dim()
        mode, begins, ends = pad_plan(
            node, attrs, rank, None if pads is None else pads.tolist(), None if axes is None else axes.tolist()
        )
        if mode == "constant":
            v = attrs.get("value", 0.0) if value is None or not value.numel() else float(value.reshape(-1)[0])
            return F.pad(x, torch_pad(begins + ends, rank), value=v)
        for d in range(rank):  # reflect, edge: gather each dim through mc_pad's index table
            if begins[d] or ends[d]:
                x = _take(x, d, pad_source(x.shape[d], begins[d], x.shape[d] + begins[d] + ends[d], mode))
        return x

    return pad


_VIEW = {"emit": emit_copy, "inplace": True}
op("Flatten", narrow=AS_IS, torch=torch_flatten, node_tests=True, **_VIEW)
op("Reshape", narrow=narrow_reshape, torch=torch_reshape, node_tests=True, **_VIEW)
op("Squeeze", narrow=AS_IS, torch=torch_squeeze, **_VIEW)
op("Unsqueeze", narrow=AS_IS, torch=torch_unsqueeze, **_VIEW)
op("Transpose", narrow=AS_IS, torch=torch_transpose, emit=emit_transpose, node_tests=True)
op("Concat", narrow=AS_IS, torch=torch_concat, emit=emit_concat, node_tests=True)
op("Split", narrow=narrow_split, torch=torch_split, emit=emit_split, multi_output=True, node_tests=True)
op("Slice", narrow=narrow_slice, torch=torch_slice, emit=emit_slice, node_tests=True)
op("Pad", narrow=narrow_pad, torch=torch_pad_op, config_slots=(2,), emit=emit_pad, node_tests=True, const_operands=1)
op("Cast", narrow=AS_IS, torch=torch_cast)
op("DepthToSpace", narrow=AS_IS)
op("SpaceToDepth", narrow=AS_IS)
op("Gather", torch=torch_gather)
op("Shape", torch=torch_shape)
op("Constant", torch=torch_constant)
op("ConstantOfShape", torch=torch_constant_of_shape, config_slots=(0,))
