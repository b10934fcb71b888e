"""Normalizations: BatchNormalization and InstanceNormalization get fresh per-channel parameters
for the CPM's channels; LRN is cloned as is. C: mc_channel_affine (BN folded to scale and shift),
mc_lrn (runtime_c/kernels, norm family)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.lower_c import _err, _prod, c_float
from passes.ops import AS_IS, registered

if TYPE_CHECKING:
    from torch import Tensor

op = registered(__name__)


def narrow_norm(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """Identity parameters (scale 1, bias 0, mean 0, var 1) for the CPM's channels."""
    c = int(xs[0].shape[1])
    if node.attrs.get("training_mode", 0):
        raise mp.fail("BatchNormalization in training mode", node.name)
    fills = (1.0, 0.0, 0.0, 1.0)  # scale, bias, running mean, running var
    new = [xs[0]]
    for i, x in enumerate(xs[1:]):
        if not isinstance(x, gs.Constant):
            raise mp.fail("normalization parameters are not constants", node.name)
        new.append(gs.Constant(f"cpm/{node.name}/p{i + 1}", np.full([c], fills[i], dtype=np.float32)))
    return new, attrs


class _TorchBatchNorm:
    """BatchNormalization in torch. OnnxModule sets `stats_are_buffers` (running statistics are
    updated in place only when they are the module's buffers) and `frozen` (scale and bias not
    trainable: inference mode always)."""

    needs_training = True

    def __init__(self, attrs: dict) -> None:
        self.eps = attrs.get("epsilon", 1e-5)
        self.momentum = 1.0 - attrs.get("momentum", 0.9)  # ONNX weights the old value, torch the new one
        self.stats_are_buffers = False
        self.frozen = False

    def __call__(self, x: Any, scale: Any, bias: Any, mean: Any, var: Any, *, training: bool) -> Any:
        import torch.nn.functional as F

        if training and not self.frozen:
            tracked = self.stats_are_buffers
            return F.batch_norm(
                x, mean if tracked else None, var if tracked else None, scale, bias, True, self.momentum, self.eps
            )
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, self.eps)


def torch_batchnorm(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    return _TorchBatchNorm(attrs)


def emit_batchnorm(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    if len(node.output) > 1 and any(node.output[1:]):
        raise _err(node, "BatchNormalization in training mode")
    try:
        scale, bias, mean, var = (np.asarray(em.consts[t], np.float64) for t in node.input[1:5])
    except KeyError:
        raise _err(node, "scale, bias, mean and var must be constants") from None
    mul = scale / np.sqrt(var + a.get("epsilon", 1e-5))
    s = em.weight(f"{node.name or node.output[0]}/bn_scale", mul)
    t = em.weight(f"{node.name or node.output[0]}/bn_shift", bias - mean * mul)
    return [f"mc_channel_affine({em.buf(node.input[0])}, {s}, {t}, {y}, {xs[0]}, {xs[1]}, {_prod(xs[2:])});"]


def torch_lrn(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch.nn.functional as F

    size, alpha = attrs["size"], attrs.get("alpha", 1e-4)
    beta, bias = attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    before = (size - 1) // 2

    def lrn(x: Tensor) -> Tensor:
        sq = (x * x).unsqueeze(1)  # [N, 1, C, H, W]: pool over channels
        sq = F.pad(sq, (0, 0, 0, 0, before, size - 1 - before))
        square_sum = F.avg_pool3d(sq, (size, 1, 1), stride=1).squeeze(1) * size
        return x / (bias + alpha / size * square_sum) ** beta

    return lrn


def emit_lrn(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    return [
        f"mc_lrn({em.buf(node.input[0])}, {y}, {xs[0]}, {xs[1]}, {_prod(xs[2:])}, {a['size']}, "
        f"{c_float(a.get('alpha', 1e-4))}, {c_float(a.get('beta', 0.75))}, {c_float(a.get('bias', 1.0))});"
    ]


op(
    "BatchNormalization",
    narrow=narrow_norm,
    per_channel=True,
    keeps_shape=True,
    torch=torch_batchnorm,
    stat_slots=(3, 4),
    emit=emit_batchnorm,
    inplace=True,
    node_tests=True,
    const_operands=1,
)
op("InstanceNormalization", narrow=narrow_norm, per_channel=True, keeps_shape=True)
op(
    "LRN",
    narrow=AS_IS,
    per_channel=True,
    keeps_shape=True,
    tap_role="boundary",
    torch=torch_lrn,
    emit=emit_lrn,
    node_tests=True,
)
