"""Conv: narrowed to C output channels (depthwise stays depthwise), run by F.conv*d, lowered to
mc_conv2d / mc_conv2d_s1 (runtime_c/kernels, conv family) with Relu and GlobalAveragePool epilogues."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.lower_c import EPI_GAP, EPI_RELU, _attrs, _err, _prod, scratch_name
from passes.mirror import torch_uniform
from passes.ops import registered
from passes.ops._torch import resolve_pads, torch_pad

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)


def narrow_conv(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """Kernel, stride, pads, dilation kept; C output channels (K for a head, an override to match a
    binary op); groups as large as both narrowed channel counts allow, depthwise kept depthwise."""
    x, w = xs[0], node.inputs[1]
    if not isinstance(w, gs.Constant):
        raise mp.fail("Conv weight is not a constant", node.name)
    oc, _, *kernel = w.shape
    groups = int(attrs.get("group", 1))
    bb_in = int(node.inputs[0].shape[1])
    c_in = int(x.shape[1])
    if groups > 1 and groups == bb_in:  # depthwise: stays depthwise, channel multiplier kept
        g, c_out = c_in, c_in * (oc // groups)
        mp.depthwise.add(node.name)
    else:
        c_out = mp.num_classes if node.name in mp.heads else min(mp.opts["channels"], oc)
        c_out = mp.overrides.get(node.name, c_out)
        g = math.gcd(groups, math.gcd(c_in, c_out))
    attrs["group"] = g
    fan_in = (c_in // g) * int(np.prod(kernel))
    name = f"cpm/{node.name}"
    new = [x, gs.Constant(f"{name}/weight", torch_uniform(mp.rng, [c_out, c_in // g, *kernel], fan_in))]
    if len(xs) > 2 and xs[2] is not None:
        new.append(gs.Constant(f"{name}/bias", torch_uniform(mp.rng, [c_out], fan_in)))
    return new, attrs


def torch_conv(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch.nn.functional as F

    group = attrs.get("group", 1)

    def conv(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        nd = w.dim() - 2
        kernel = list(attrs.get("kernel_shape", w.shape[2:]))
        strides = list(attrs.get("strides", [1] * nd))
        dilations = list(attrs.get("dilations", [1] * nd))
        pads = resolve_pads(attrs, x, kernel, strides, dilations)
        fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        if pads[:nd] == pads[nd:]:
            return fn(x, w, b, strides, pads[:nd], dilations, group)
        return fn(F.pad(x, torch_pad(pads, nd)), w, b, strides, 0, dilations, group)

    return conv


def spatial(node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, default_dil: int = 1) -> tuple[list, ...]:
    """(kernel, strides, dilations, pads_begin, pads_end) for 2-D, a 1-D op seen as 1 x W."""
    rank = len(xs) - 2
    k = list(a.get("kernel_shape", []))
    s = list(a.get("strides", [1] * rank))
    d = list(a.get("dilations", [default_dil] * rank))
    pads = list(a.get("pads", [0] * (2 * rank)))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * rank)
        for i in range(rank):
            total = max(0, (ys[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - xs[2 + i])
            small, big = total // 2, total - total // 2
            pads[i], pads[rank + i] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * rank)
    if rank == 1:  # 1 x W
        return [1, k[0]], [1, s[0]], [1, d[0]], [0, pads[0]], [0, pads[1]]
    return k, s, d, pads[:2], pads[2:]


def check_spatial_rank(node: onnx.NodeProto, xs: tuple) -> None:
    """The C kernels of Conv and the poolings are 2-D (1-D seen as 1 x W)."""
    if len(xs) not in (3, 4):
        raise _err(node, f"only 1-D and 2-D {node.op_type} is supported (input rank {len(xs)})")


def _conv_out_shape(node: onnx.NodeProto, shapes: dict, fused: dict | None = None) -> tuple[int, ...]:
    f = (fused or {}).get(node.output[0])
    return shapes[f.conv_out if f else node.output[0]]


def _conv_s1(node: onnx.NodeProto, shapes: dict, fused: dict | None = None) -> tuple[int, int, int, int, int] | None:
    """(c, oh, hp, wp, kw) when a Conv takes the padded stride-1 path (needs scratch), else None."""
    if node.op_type != "Conv" or len(shapes[node.input[0]]) != 4:
        return None
    a = _attrs(node)
    ws, ys = shapes[node.input[1]], _conv_out_shape(node, shapes, fused)
    kh, kw = ws[2:]
    if any(v != 1 for v in a.get("strides", [1, 1])) or any(v != 1 for v in a.get("dilations", [1, 1])) or kh * kw == 1:
        return None
    return shapes[node.input[0]][1], ys[2], ys[2] + kh - 1, ys[3] + kw - 1, kw


def conv_scratch(node: onnx.NodeProto, shapes: dict, fast_conv: bool = True, fused: dict | None = None) -> int:
    """Floats of scratch: the padded copy of the stride-1 path, or one output plane for a fused GAP."""
    s1 = _conv_s1(node, shapes, fused) if fast_conv else None
    if s1 is None:
        f = (fused or {}).get(node.output[0])
        # mc_conv2d with a fused global average pool: one output plane
        return _prod(shapes[f.conv_out][2:]) if f and f.epi & EPI_GAP else 0
    c, oh, hp, wp, kw = s1
    return c * (hp * wp + kw) + oh * wp  # see mc_conv2d_s1


def emit_conv(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    check_spatial_rank(node, xs)
    w = node.input[1]
    ws = em.shapes[w]
    f = em.fused.get(node.output[0])
    epi = f.epi if f else 0
    if f:
        ys = em.shapes[f.conv_out]
    if "kernel_shape" not in a:
        a = dict(a, kernel_shape=list(ws[2:]))
    k, s, d, pb, _ = spatial(node, a, xs, ys)
    h, wd = (1, xs[2]) if len(xs) == 3 else xs[2:]
    oh, ow = (1, ys[2]) if len(ys) == 3 else ys[2:]
    bias = em.operand(node.input[2]) if len(node.input) > 2 and node.input[2] else "0"
    if em.fast_conv and _conv_s1(node, em.shapes, em.fused) is not None:
        return [
            f"mc_conv2d_s1({em.buf(node.input[0])}, {em.operand(w)}, {bias}, {y}, "
            f"{em.buf(scratch_name(node))}, {xs[0]}, {xs[1]}, {h}, {wd}, {ys[1]}, {oh}, {ow}, {k[0]}, {k[1]}, "
            f"{pb[0]}, {pb[1]}, {a.get('group', 1)}, {epi});"
        ]
    scratch = em.buf(scratch_name(node)) if epi & EPI_GAP else "0"
    return [
        f"mc_conv2d({em.buf(node.input[0])}, {em.operand(w)}, {bias}, {y}, {scratch}, {xs[0]}, {xs[1]}, "
        f"{h}, {wd}, {ys[1]}, {oh}, {ow}, {k[0]}, {k[1]}, {s[0]}, {s[1]}, {pb[0]}, {pb[1]}, "
        f"{d[0]}, {d[1]}, {a.get('group', 1)}, {epi});"
    ]


op(
    "Conv",
    narrow=narrow_conv,
    torch=torch_conv,
    emit=emit_conv,
    scratch=conv_scratch,
    epilogues=(("Relu", EPI_RELU), ("GlobalAveragePool", EPI_GAP)),
    node_tests=True,
)
