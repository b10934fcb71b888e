"""Identity, Dropout (inference: a view), Softmax/LogSoftmax (training only: refused by the mirror
pass and the C backend). Resize has its own module (resize.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from passes.lower_c import _err
from passes.ops import AS_IS, registered
from passes.ops.shape import emit_copy

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)


def emit_dropout(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    ins = node.input
    if len(ins) > 2 and ins[2] and bool(em.consts.get(ins[2], False)):
        raise _err(node, "Dropout in training mode")
    return emit_copy(em, node, a, xs, ys, y)


def torch_dropout(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch
    import torch.nn.functional as F

    ratio_attr = attrs.get("ratio", 0.5)
    want_mask = len(node.output) > 1 and node.output[1]

    def dropout(
        x: Tensor, ratio: Tensor | None = None, training_mode: Tensor | None = None, *, training: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        p = ratio_attr if ratio is None else float(ratio)
        y = F.dropout(x, p, training) if training and p > 0 else x
        if want_mask:
            return y, (y != 0) if training else torch.ones_like(x, dtype=torch.bool)
        return y

    dropout.needs_training = True  # type: ignore[attr-defined]
    return dropout


def torch_softmax_like(name: str) -> Callable[..., Any]:
    """Builder of torch.<name> (softmax, log_softmax) with ONNX's axis rules (2-D coercion before opset 13)."""

    def build(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
        import torch

        fn = getattr(torch, name)
        if opset < 13:
            axis = attrs.get("axis", 1)

            def old(x: Tensor) -> Tensor:  # opset < 13: coerce to 2-D at `axis`
                ax = axis % x.dim()
                flat = x.reshape(int(np.prod(x.shape[:ax])), -1)
                return fn(flat, 1).reshape(x.shape)

            return old
        axis = attrs.get("axis", -1)
        return lambda x: fn(x, axis)

    return build


def torch_identity(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    return lambda x: x


op("Identity", narrow=AS_IS, torch=torch_identity, emit=emit_copy, inplace=True)
op("Dropout", narrow=AS_IS, torch=torch_dropout, config_slots=(1,), emit=emit_dropout, inplace=True, multi_output=True)
op("Softmax", torch=torch_softmax_like("softmax"))
op("LogSoftmax", torch=torch_softmax_like("log_softmax"))
