"""Helpers shared by the torch builders of the registry modules (torch is imported lazily)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def to_tensor(arr: np.ndarray) -> Any:
    """A torch tensor sharing nothing with a read-only or strided array."""
    import torch

    arr = np.asarray(arr)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr).copy()
    return torch.from_numpy(arr)


def torch_fn(name: str, functional: bool = False) -> Callable[..., Any]:
    """A builder returning `torch.<name>` (or `torch.nn.functional.<name>`) whatever the node."""

    def build(attrs: dict, opset: int, node: Any) -> Callable[..., Any]:
        import torch
        import torch.nn.functional as F

        return getattr(F if functional else torch, name)

    return build


def _same_pads(in_sizes, kernel, strides, dilations, upper: bool) -> list[int]:
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(total - small if not upper else small)
        ends.append(small if not upper else total - small)
    return begins + ends


def torch_pad(pads: list[int], nd: int) -> list[int]:
    """ONNX pads [b1..bn, e1..en] -> F.pad order (last dim first)."""
    out = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[i + nd]]
    return out


def resolve_pads(attrs: dict, x: Any, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """The explicit pads [b1..bn, e1..en] of a conv or pooling, auto_pad resolved for input `x`."""
    nd = len(kernel)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(x.shape[2:], kernel, strides, dilations, auto_pad == "SAME_UPPER")
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    return list(attrs.get("pads", [0] * (2 * nd)))
