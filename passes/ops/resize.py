"""Resize (nearest and linear upsampling/downsampling of the spatial dims, as CNN necks and
decoders use it): narrowed with its scales kept (explicit sizes get the CPM's channel count). The
coordinate mode is resolved here into per-axis source tables (index pairs and weights) that both
the torch part and the C kernel mc_resize2d (runtime_c/kernels/mc_layout.c) read, so the two agree
by construction; modes the exporters do not write (cubic, tf_crop_and_resize, antialias, ...) are
refused with one line naming the node and the mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.errors import MirrorcError
from passes.lower_c import _err
from passes.ops import registered

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)

COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def resize_modes(node: onnx.NodeProto, attrs: dict) -> tuple[str, str, str]:
    """(mode, coordinate mode, nearest mode) of a Resize; anything else is refused by name."""
    where = f"node '{node.name or node.output[0]}' (Resize)"
    mode = _text(attrs.get("mode", "nearest"))
    coord = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    nearest = _text(attrs.get("nearest_mode", "round_prefer_floor"))
    if mode not in ("nearest", "linear"):
        raise MirrorcError(f"{where}: mode '{mode}' is not supported (nearest, linear)")
    if coord not in COORD_MODES:
        raise MirrorcError(
            f"{where}: coordinate_transformation_mode '{coord}' is not supported ({', '.join(COORD_MODES)})"
        )
    if mode == "nearest" and nearest not in NEAREST_MODES:
        raise MirrorcError(f"{where}: nearest_mode '{nearest}' is not supported")
    for flag in ("antialias", "exclude_outside"):
        if attrs.get(flag, 0):
            raise MirrorcError(f"{where}: {flag}=1 is not supported")
    if _text(attrs.get("keep_aspect_ratio_policy", "stretch")) != "stretch" or "axes" in attrs:
        raise MirrorcError(f"{where}: keep_aspect_ratio_policy and axes are not supported")
    return mode, coord, nearest


def resize_plan(shape: list[int], scales: Any, sizes: Any) -> tuple[list[int], list[float]]:
    """(output shape, scale per dim): sizes win when given (scale = out / in), else
    out = floor(in * scale) as ONNX defines it."""
    if sizes is not None and len(sizes):
        out = [int(v) for v in sizes]
        return out, [o / i for o, i in zip(out, shape)]
    s = [float(v) for v in np.asarray(scales, np.float32)]
    return [int(np.floor(i * f)) for i, f in zip(shape, s)], s


def resize_table(n: int, out: int, scale: float, mode: str, coord: str, nearest: str) -> tuple[np.ndarray, ...]:
    """(i0, i1, w) along one axis: output j reads x[i0] + w * (x[i1] - x[i0]); computed in float32
    as onnxruntime does."""
    j = np.arange(out, dtype=np.float32)
    f = np.float32(scale)
    if coord == "align_corners":
        src = j * np.float32(n - 1) / np.float32(out - 1) if out > 1 else np.zeros(out, np.float32)
    elif coord == "asymmetric":
        src = j / f
    elif coord == "tf_half_pixel_for_nn":
        src = (j + np.float32(0.5)) / f
    elif coord == "pytorch_half_pixel" and out <= 1:
        src = np.zeros(out, np.float32)
    else:  # half_pixel, pytorch_half_pixel
        src = (j + np.float32(0.5)) / f - np.float32(0.5)
    if mode == "nearest":
        if nearest == "floor":
            idx = np.floor(src)
        elif nearest == "ceil":
            idx = np.ceil(src)
        elif nearest == "round_prefer_ceil":
            idx = np.floor(src + np.float32(0.5))
        else:  # round_prefer_floor: a tie goes down
            idx = np.where(src - np.floor(src) == np.float32(0.5), np.floor(src), np.round(src))
        i0 = np.clip(idx, 0, n - 1).astype(np.int64)
        return i0, i0, np.zeros(out, np.float32)
    src = np.clip(src, 0, n - 1)
    i0 = np.floor(src).astype(np.int64)
    return i0, np.minimum(i0 + 1, n - 1), (src - i0).astype(np.float32)


def narrow_resize(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """Resize keeps its scales; explicit output sizes get the CPM's channel count."""
    new = [xs[0]]
    for i, x in enumerate(xs[1:], start=1):
        if isinstance(x, gs.Constant) and i == 3 and x.shape and x.shape[0] == len(node.inputs[0].shape):
            sizes = np.array(x.values, dtype=np.int64)
            sizes[1] = int(xs[0].shape[1])
            new.append(gs.Constant(f"cpm/{node.name}/sizes", sizes))
        elif isinstance(x, gs.Constant):
            new.append(mp.copy_const(x))
        elif x.name:
            raise mp.fail("Resize with computed scales or sizes cannot be narrowed", node.name)
        else:
            new.append(x)
    return new, attrs


def _scales_sizes(node: onnx.NodeProto, opset: int, inputs: list) -> tuple[Any, Any]:
    """(scales, sizes) from the inputs: [X, scales] before opset 11, [X, roi, scales, sizes] after."""
    if opset < 11:
        return inputs[1] if len(inputs) > 1 else None, None
    get = lambda i: inputs[i] if len(inputs) > i else None  # noqa: E731
    return get(2), get(3)


def torch_resize(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    mode, coord, nearest = resize_modes(node, attrs)

    def resize(x: Tensor, *rest: Tensor | None) -> Tensor:
        scales, sizes = _scales_sizes(node, opset, [x, *rest])
        as_list = lambda t: None if t is None else t.tolist()  # noqa: E731
        out, factors = resize_plan(list(x.shape), as_list(scales), as_list(sizes))
        for d, (n, o, f) in enumerate(zip(x.shape, out, factors)):
            if n == o and f == 1.0:
                continue
            i0, i1, w = (torch.as_tensor(t) for t in resize_table(n, o, f, mode, coord, nearest))
            lo = x.index_select(d, i0)
            view = [1] * x.dim()
            view[d] = o
            x = lo + w.reshape(view) * (x.index_select(d, i1) - lo) if mode == "linear" else lo
        return x

    return resize


def emit_resize(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    mode, coord, nearest = resize_modes(node, a)
    inputs = [None] + [em.consts.get(t) if t else None for t in node.input[1:]]
    if any(t and t not in em.consts for t in node.input[1:]):
        raise _err(node, "Resize scales and sizes must be constants")
    # two inputs are [X, scales] (opset 10); from opset 11 a valid node has at least three
    scales, sizes = _scales_sizes(node, 11 if len(node.input) > 2 else 10, inputs)
    out, factors = resize_plan(list(xs), scales, sizes)
    if coord == "align_corners" and any(o != n * f for n, o, f in zip(xs, out, factors)):
        # the ONNX reference then uses in * scale as the output length, onnxruntime the floored one
        raise _err(node, "align_corners with a scale that does not give a whole output size")
    if tuple(out) != tuple(ys):
        raise _err(node, f"output shape {out} differs from the inferred {list(ys)}")
    if len(xs) not in (3, 4) or out[:2] != list(xs[:2]):
        raise _err(node, "only the spatial dims of a 3-D or 4-D tensor can be resized in C")
    h, w = (1, xs[2]) if len(xs) == 3 else xs[2:]
    oh, ow = (1, ys[2]) if len(ys) == 3 else ys[2:]
    fh = 1.0 if len(xs) == 3 else factors[2]
    rows = resize_table(h, oh, fh, mode, coord, nearest)
    cols = resize_table(w, ow, factors[-1], mode, coord, nearest)
    key = node.name or node.output[0]
    tables = [em.ints(rows[0]), em.ints(rows[1]), em.weight(f"{key}/resize_wy", rows[2])]
    tables += [em.ints(cols[0]), em.ints(cols[1]), em.weight(f"{key}/resize_wx", cols[2])]
    return [f"mc_resize2d({em.buf(node.input[0])}, {y}, {xs[0] * xs[1]}, {h}, {w}, {oh}, {ow}, {', '.join(tables)});"]


op(
    "Resize",
    narrow=narrow_resize,
    torch=torch_resize,
    config_slots=(1, 2),
    emit=emit_resize,
    node_tests=True,
    const_operands=1,
)
