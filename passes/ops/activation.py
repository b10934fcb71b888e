"""Activations: per position, so the CPM clones them as they are and a tap may follow them.
C: mc_relu / mc_sigmoid / mc_tanh / mc_leaky_relu / mc_elu / mc_clip (runtime_c/kernels,
mc_elementwise.c) and mc_hardswish / mc_gelu (mc_activation.c), all in place."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from passes.lower_c import FLT_MAX, _err, _prod, c_float
from passes.ops import AS_IS, registered
from passes.ops._torch import torch_fn

if TYPE_CHECKING:
    from torch import Tensor

_op = registered(__name__)


def op(name: str, **parts: Any) -> None:
    """An activation: cloned as is, per channel, shape kept, a tap boundary."""
    _op(name, narrow=AS_IS, per_channel=True, keeps_shape=True, tap_role="boundary", **parts)


def emit_unary(kernel: str) -> Callable[..., list[str]]:
    """Emitter of a kernel `kernel(x, y, n)`."""

    def emit(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
        return [f"{kernel}({em.buf(node.input[0])}, {y}, {_prod(ys)});"]

    return emit


def emit_alpha(kernel: str, default: float) -> Callable[..., list[str]]:
    """Emitter of a kernel `kernel(x, y, n, alpha)`."""

    def emit(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
        return [f"{kernel}({em.buf(node.input[0])}, {y}, {_prod(ys)}, {c_float(a.get('alpha', default))});"]

    return emit


def _const_scalar(em: Any, node: onnx.NodeProto, name: str, default: float) -> float:
    if not name:
        return default
    if name not in em.consts:
        raise _err(node, f"input '{name}' must be a constant")
    return float(np.asarray(em.consts[name]).ravel()[0])


def emit_clip(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    ins = node.input
    lo = a.get("min", _const_scalar(em, node, ins[1] if len(ins) > 1 else "", -FLT_MAX))
    hi = a.get("max", _const_scalar(em, node, ins[2] if len(ins) > 2 else "", FLT_MAX))
    return [f"mc_clip({em.buf(node.input[0])}, {y}, {_prod(ys)}, {c_float(lo)}, {c_float(hi)});"]


def torch_clip(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    if opset < 11:
        lo, hi = attrs.get("min", None), attrs.get("max", None)
        return lambda x: torch.clamp(x, lo, hi)

    def clip(x: Tensor, lo: Tensor | None = None, hi: Tensor | None = None) -> Tensor:
        return torch.clamp(x, None if lo is None else lo.item(), None if hi is None else hi.item())

    return clip


def torch_elu(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch.nn.functional as F

    return functools.partial(F.elu, alpha=attrs.get("alpha", 1.0))


def gelu_tanh(attrs: dict) -> bool:
    """Gelu's approximate attribute: "tanh", or "none" (the exact, erf form)."""
    approx = attrs.get("approximate", b"none")
    return (approx.decode() if isinstance(approx, bytes) else approx) == "tanh"


def torch_gelu(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch.nn.functional as F

    return functools.partial(F.gelu, approximate="tanh" if gelu_tanh(attrs) else "none")


def emit_gelu(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    return [f"mc_gelu({em.buf(node.input[0])}, {y}, {_prod(ys)}, {int(gelu_tanh(a))});"]


def torch_leaky_relu(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch.nn.functional as F

    return functools.partial(F.leaky_relu, negative_slope=attrs.get("alpha", 0.01))


_C = {"inplace": True, "node_tests": True}  # what every activation with a C kernel also declares
op("Relu", torch=torch_fn("relu", functional=True), emit=emit_unary("mc_relu"), **_C)
op("Sigmoid", torch=torch_fn("sigmoid"), emit=emit_unary("mc_sigmoid"), **_C)
op("Tanh", torch=torch_fn("tanh"), emit=emit_unary("mc_tanh"), **_C)
op("LeakyRelu", torch=torch_leaky_relu, emit=emit_alpha("mc_leaky_relu", 0.01), **_C)
op("Elu", torch=torch_elu, emit=emit_alpha("mc_elu", 1.0), **_C)
op("Clip", torch=torch_clip, config_slots=(1, 2), emit=emit_clip, const_operands=1, **_C)
op("HardSwish", torch=torch_fn("hardswish", functional=True), emit=emit_unary("mc_hardswish"), **_C)
op("Gelu", torch=torch_gelu, emit=emit_gelu, **_C)
for _name in ("Selu", "Celu", "Softplus", "Softsign", "ThresholdedRelu", "Mish"):
    op(_name)
