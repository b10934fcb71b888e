"""HardSigmoid, y = max(0, min(1, alpha * x + beta)) (MobileNetV3's gates; HardSwish is x times
it): an activation, cloned as is, a tap may follow it. Declared in a module of its own to show that
an op is one file: its C is a loop this module emits itself, no kernel needed."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import onnx

from passes.lower_c import _prod, c_float
from passes.ops import AS_IS, registered

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)


def _alpha_beta(attrs: dict) -> tuple[float, float]:
    return float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))


def torch_hard_sigmoid(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    alpha, beta = _alpha_beta(attrs)

    def hard_sigmoid(x: Tensor, alpha: float, beta: float) -> Tensor:
        return torch.clamp(x * alpha + beta, 0.0, 1.0)

    return functools.partial(hard_sigmoid, alpha=alpha, beta=beta)


def emit_hard_sigmoid(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    alpha, beta = _alpha_beta(a)
    x = em.buf(node.input[0])
    # x[i] is read before y[i] is written: safe in place
    return [
        f"{{ int i; for (i = 0; i < {_prod(ys)}; i++) {{ float v = {c_float(alpha)} * {x}[i] + {c_float(beta)}; "
        f"{y}[i] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }} }}"
    ]


op(
    "HardSigmoid",
    narrow=AS_IS,
    per_channel=True,
    keeps_shape=True,
    tap_role="boundary",
    torch=torch_hard_sigmoid,
    emit=emit_hard_sigmoid,
    inplace=True,
    node_tests=True,
)
