"""Normalizations: BatchNormalization, InstanceNormalization and LayerNormalization get fresh
parameters for the CPM's channels; LRN is cloned as is. C: mc_channel_affine (BN folded to scale
and shift), mc_lrn, mc_layernorm (runtime_c/kernels/mc_pool.c)."""

from __future__ import annotations

import functools
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
            if _ranks() > 1:
                return _sync_batch_norm(x, scale, bias, mean if tracked else None, var if tracked else None, self)
            return F.batch_norm(
                x, mean if tracked else None, var if tracked else None, scale, bias, True, self.momentum, self.eps
            )
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, self.eps)


def _ranks() -> int:
    """The world size of the torch.distributed process group this process trains in (1 outside one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@functools.cache
def _sum_over_ranks() -> Any:
    """An autograd function summing a tensor over the ranks, differentiably: the gradient of a sum is
    the sum of the ranks' gradients (torch.distributed.nn.functional.all_reduce, now deprecated, did
    this). Made on first use: passes/ does not need torch to import."""
    import torch
    import torch.distributed as dist

    class SumOverRanks(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, local: Any) -> Any:
            total = local.clone()
            dist.all_reduce(total)
            return total

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            total = grad.clone()
            dist.all_reduce(total)
            return total

    return SumOverRanks.apply


def _sync_batch_norm(x: Any, scale: Any, bias: Any, mean: Any, var: Any, bn: _TorchBatchNorm) -> Any:
    """Training-mode BatchNormalization over the batch of all ranks (torch.nn.SyncBatchNorm's
    semantics, on the interpreter's functional form): the mean and variance are all-reduced, through
    differentiable collectives so that the gradient is the global batch's too; the running statistics
    (when tracked) move by the global ones, the variance unbiased as F.batch_norm does."""
    import torch

    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.float()  # statistics in float32 even under fp16/bf16 autocast
    count = torch.tensor([xf.numel() // xf.shape[1]], dtype=xf.dtype, device=xf.device)
    sums = _sum_over_ranks()(torch.cat([xf.sum(dims), count]))
    n = sums[-1]
    batch_mean = sums[:-1] / n
    centred = xf - batch_mean.view(shape)
    batch_var = _sum_over_ranks()((centred * centred).sum(dims)) / n  # two passes: no E[x^2]-E[x]^2 cancellation
    if mean is not None and var is not None:
        with torch.no_grad():
            mean.mul_(1 - bn.momentum).add_(bn.momentum * batch_mean)
            var.mul_(1 - bn.momentum).add_(bn.momentum * batch_var * n / (n - 1).clamp(min=1))
    y = centred * torch.rsqrt(batch_var + bn.eps).view(shape)
    if scale is not None:
        y = y * scale.float().view(shape)
    if bias is not None:
        y = y + bias.float().view(shape)
    return y.to(x.dtype)


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


def narrow_layernorm(mp: Any, node: gs.Node, xs: list, attrs: dict) -> tuple[list, dict]:
    """A LayerNorm over the channels (ConvNeXt's, after its NCHW -> NHWC Transpose) narrows like
    BatchNorm: the CPM's copy normalises over its own shape from `axis` on, with fresh scale 1 and
    bias 0 of that shape."""
    shape = list(xs[0].shape)
    axis = int(attrs.get("axis", -1)) % len(shape)
    if axis == 0:
        raise mp.fail("LayerNormalization over the batch axis", node.name)
    normalized = [int(d) for d in shape[axis:]]
    if any(o for o in node.outputs[1:]):
        raise mp.fail("LayerNormalization with its Mean or InvStdDev output used", node.name)
    new = [xs[0], gs.Constant(f"cpm/{node.name}/scale", np.ones(normalized, dtype=np.float32))]
    if len(xs) > 2 and xs[2] is not None and xs[2].name:
        new.append(gs.Constant(f"cpm/{node.name}/bias", np.zeros(normalized, dtype=np.float32)))
    return new, attrs


def torch_layernorm(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[..., Any]:
    import torch

    axis, eps = attrs.get("axis", -1), attrs.get("epsilon", 1e-5)
    stats = len(node.output) > 1 and any(node.output[1:])

    def layernorm(x: Tensor, scale: Tensor, bias: Tensor | None = None) -> Tensor | tuple[Tensor, ...]:
        dims = tuple(range(axis % x.dim(), x.dim()))
        mean = x.mean(dims, keepdim=True)
        inv_std = torch.rsqrt((x - mean).square().mean(dims, keepdim=True) + eps)
        y = (x - mean) * inv_std * scale
        y = y if bias is None else y + bias
        return (y, mean, inv_std) if stats else y

    return layernorm


def emit_layernorm(em: Any, node: onnx.NodeProto, a: dict, xs: tuple, ys: tuple, y: str) -> list[str]:
    axis = a.get("axis", -1) % len(xs)
    inner = tuple(xs[axis:])
    if any(node.input[1:]) and not all(t in em.consts for t in node.input[1:] if t):
        raise _err(node, "LayerNormalization scale and bias must be constants")
    key = node.name or node.output[0]
    # scale and bias broadcast to the normalized shape, one float per normalized element
    scale = em.weight(f"{key}/ln_scale", np.broadcast_to(em.consts[node.input[1]], inner))
    has_bias = len(node.input) > 2 and node.input[2]
    bias = em.weight(f"{key}/ln_bias", np.broadcast_to(em.consts[node.input[2]], inner)) if has_bias else "0"
    stats = [em.buf(t) if t else "0" for t in (list(node.output[1:3]) + ["", ""])[:2]]  # Mean, InvStdDev
    return [
        f"mc_layernorm({em.buf(node.input[0])}, {scale}, {bias}, {y}, {stats[0]}, {stats[1]}, {_prod(xs[:axis])}, "
        f"{_prod(inner)}, {c_float(a.get('epsilon', 1e-5))});"
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
op(
    "LayerNormalization",
    narrow=narrow_layernorm,
    keeps_shape=True,
    torch=torch_layernorm,
    emit=emit_layernorm,
    multi_output=True,
    node_tests=True,
    const_operands=1,
)
