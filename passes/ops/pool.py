"""Poolings: per channel, cloned as they are; a tap may follow them. C: mc_maxpool2d,
mc_avgpool2d, mc_global_avgpool / mc_global_maxpool (runtime_c/kernels, pool family)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import onnx

from passes.lower_c import _err, _prod
from passes.ops import AS_IS, registered
from passes.ops._torch import resolve_pads, torch_pad
from passes.ops.conv import check_spatial_rank, spatial

if TYPE_CHECKING:
    from torch import Tensor

_op = registered(__name__)


def op(name: str, **parts: Any) -> None:
    """A pooling: cloned as is, a tap may follow it."""
    _op(name, narrow=AS_IS, tap_role="pooling", **parts)


def _pool_params(attrs: dict, nd: int) -> tuple[list, list, list]:
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1] * nd))
    dilations = list(attrs.get("dilations", [1] * nd))
    return kernel, strides, dilations


def torch_maxpool(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch.nn.functional as F

    from passes.errors import MirrorcError

    ceil = bool(attrs.get("ceil_mode", 0))
    if len(node.output) > 1 and node.output[1]:
        raise MirrorcError(f"torchgraph: node '{node.name}': MaxPool with an Indices output is not supported")

    def maxpool(x: Tensor) -> Tensor:
        nd = x.dim() - 2
        kernel, strides, dilations = _pool_params(attrs, nd)
        pads = resolve_pads(attrs, x, kernel, strides, dilations)
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
        if pads[:nd] == pads[nd:] and all(2 * p <= k for p, k in zip(pads[:nd], kernel)):
            return fn(x, kernel, strides, pads[:nd], dilations, ceil)
        x = F.pad(x, torch_pad(pads, nd), value=float("-inf"))
        return fn(x, kernel, strides, 0, dilations, ceil)

    return maxpool


def torch_avgpool(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch
    import torch.nn.functional as F

    ceil = bool(attrs.get("ceil_mode", 0))
    include_pad = bool(attrs.get("count_include_pad", 0))

    def avgpool(x: Tensor) -> Tensor:
        nd = x.dim() - 2
        kernel, strides, _ = _pool_params(attrs, nd)
        pads = resolve_pads(attrs, x, kernel, strides, [1] * nd)
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        if not any(pads):
            return fn(x, kernel, strides, 0, ceil, True)
        if pads[:nd] == pads[nd:] and all(2 * p <= k for p, k in zip(pads[:nd], kernel)) and not ceil:
            return fn(x, kernel, strides, pads[:nd], ceil, include_pad)
        # asymmetric padding: sum over the zero-padded input, divide by the count of real elements
        tp = torch_pad(pads, nd)
        total = fn(F.pad(x, tp), kernel, strides, 0, ceil, True)
        if include_pad:
            return total
        ones = F.pad(torch.ones_like(x[:1, :1]), tp)
        return total / fn(ones, kernel, strides, 0, ceil, True)

    return avgpool


def emit_pool(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    check_spatial_rank(node, xs)
    k, s, d, pb, pe = spatial(node, a, xs, ys)
    h, wd = (1, xs[2]) if len(xs) == 3 else xs[2:]
    oh, ow = (1, ys[2]) if len(ys) == 3 else ys[2:]
    nc = xs[0] * xs[1]
    for i, (size, o) in enumerate(zip((h, wd), (oh, ow))):
        # onnxruntime drops a ceil_mode window that starts past the input and its padding; older
        # ONNX shape inference keeps it. Refuse rather than disagree with the reference.
        span = size + pb[i] + pe[i] - ((k[i] - 1) * d[i] + 1)
        want = (-(-span // s[i]) if a.get("ceil_mode", 0) else span // s[i]) + 1
        if a.get("ceil_mode", 0) and (want - 1) * s[i] >= size + pb[i]:
            want -= 1
        if want != o:
            raise _err(
                node,
                f"output size {o} differs from onnxruntime's {want} (ceil_mode window starting past the input)",
            )
    if node.op_type == "MaxPool":
        if a.get("storage_order", 0):
            raise _err(node, "storage_order is not supported")
        return [
            f"mc_maxpool2d({em.buf(node.input[0])}, {y}, {nc}, {h}, {wd}, {oh}, {ow}, {k[0]}, {k[1]}, "
            f"{s[0]}, {s[1]}, {pb[0]}, {pb[1]}, {d[0]}, {d[1]});"
        ]
    if any(v != 1 for v in d):
        raise _err(node, "AveragePool with dilations is not supported")
    return [
        f"mc_avgpool2d({em.buf(node.input[0])}, {y}, {nc}, {h}, {wd}, {oh}, {ow}, {k[0]}, {k[1]}, "
        f"{s[0]}, {s[1]}, {pb[0]}, {pb[1]}, {pe[0]}, {pe[1]}, {int(a.get('count_include_pad', 0))});"
    ]


def emit_global(kind: str) -> Callable[..., list[str]]:
    """Emitter of mc_global_<kind>pool over each of the N*C planes."""

    def emit(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
        return [f"mc_global_{kind}pool({em.buf(node.input[0])}, {y}, {xs[0] * xs[1]}, {_prod(xs[2:])});"]

    return emit


def torch_global(reduce: str) -> Callable[..., Any]:
    """Builder of a global pooling: `reduce` ("mean", "amax") over every spatial dim."""

    def build(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
        return lambda x: getattr(x, reduce)(dim=tuple(range(2, x.dim())), keepdim=True)

    return build


op("MaxPool", torch=torch_maxpool, emit=emit_pool, node_tests=True)
op("AveragePool", torch=torch_avgpool, emit=emit_pool, node_tests=True)
op("GlobalAveragePool", torch=torch_global("mean"), emit=emit_global("avg"), node_tests=True)
op("GlobalMaxPool", torch=torch_global("amax"), emit=emit_global("max"), node_tests=True)
op("LpPool")
op("GlobalLpPool")
