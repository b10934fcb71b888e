"""The op registry: everything mirrorc knows about an ONNX op, in one place per op family.

Each module of this package (one per family: conv, dense, norm, activation, elementwise, pool,
reduce, shape, misc) declares its ops with `register(Op(...))`. An `Op` says, part by part:
- `narrow`: how the mirror pass clones it into the CPM -- `AS_IS` (it acts per channel or per
  position, constants are copied) or a function `(mirror_pass, node, xs, attrs) -> (xs, attrs)`;
- `torch`: how the training interpreter runs it -- a builder `(attrs, opset, node) -> fn(*inputs)`
  (torch is imported inside the builders, so `passes` imports without torch);
- `emit`: how the C backend lowers it -- `(emitter, node, attrs, xs, ys, y) -> [C statements]`, with
  `inplace` (output may overwrite the first input), `scratch` (kernel scratch floats) and
  `epilogues` (consumer ops a kernel runs as fused epilogues);
- `node_tests`: the ONNX backend node tests of the op run against the C kernels (with
  `const_operands`, the first input the C backend needs as a constant).
Every list of supported ops (`narrowable`, `trainable`, `emittable`, `node_tested`) is derived from
the registered ops; the modules are found with pkgutil, so adding an op is one new module here
(plus its tests) and no edit elsewhere. Modules whose name starts with "_" hold shared helpers.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

AS_IS = "as_is"  # narrowing: cloned unchanged (constants copied under the cpm/ prefix)
PARTS = ("narrow", "torch", "emit")


@dataclasses.dataclass(frozen=True)
class Op:
    """What mirrorc knows about one ONNX op (see the module docstring); None: that part cannot."""

    name: str
    module: str = ""  # the registry module that declared it (set by `register`)
    # mirror pass
    narrow: str | Callable[..., Any] | None = None
    per_channel: bool = False  # output channel i depends on input channel i only (channel matching)
    keeps_shape: bool = False  # output shape = the shape of its variable inputs (no shape inference)
    tap_role: str | None = None  # the tap rule may cut after it: "boundary" (activation, LRN) or "pooling"
    # training interpreter
    torch: Callable[..., Any] | None = None
    config_slots: tuple[int, ...] = ()  # float inputs that are configuration, never weights
    stat_slots: tuple[int, ...] = ()  # float inputs that are running statistics (buffers)
    # C backend
    emit: Callable[..., Any] | None = None
    inplace: bool | Callable[..., bool] = False  # or fn(node, shapes) -> bool
    scratch: Callable[..., int] | None = None  # fn(node, shapes, fast_conv, fused) -> floats
    epilogues: tuple[tuple[str, int], ...] = ()  # (consumer op, MC_EPI_* bit), in chain order
    multi_output: bool = False  # extra outputs allowed (and ignored) by the C backend
    # node tests (C against the ONNX backend node tests and onnxruntime)
    node_tests: bool = False
    const_operands: int | None = None  # first input the C backend needs as a constant


_OPS: dict[str, Op] = {}
_loaded = False


def register(op: Op) -> Op:
    """Declare `op`; called at import time by the registry modules. A name declared twice is an error."""
    if op.name in _OPS:
        raise ValueError(f"op registry: {op.name} declared by both {_OPS[op.name].module} and {op.module}")
    _OPS[op.name] = op
    return op


def _load() -> None:
    """Import every registry module once (lazily: the modules use helpers of the passes that look ops up)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get(name: str) -> Op | None:
    """The registered op called `name`, or None."""
    _load()
    return _OPS.get(name)


def all_ops() -> list[Op]:
    """Every registered op, sorted by name."""
    _load()
    return [_OPS[k] for k in sorted(_OPS)]


def supporting(part: str) -> tuple[str, ...]:
    """Names of the ops that declare `part` ("narrow", "torch" or "emit"), sorted."""
    if part not in PARTS:
        raise ValueError(f"op registry: unknown part {part!r}")
    return tuple(op.name for op in all_ops() if getattr(op, part) is not None)


def with_tap_role(role: str) -> frozenset[str]:
    """Names of the ops with this tap role ("boundary", "pooling")."""
    return frozenset(op.name for op in all_ops() if op.tap_role == role)


def node_tested() -> tuple[str, ...]:
    """Ops whose ONNX backend node tests run against the C kernels."""
    return tuple(op.name for op in all_ops() if op.node_tests)


def registered(module: str) -> Callable[..., Op]:
    """`register` bound to a module name: `op = registered(__name__)` then `op("Relu", ...)`."""
    short = module.rsplit(".", 1)[-1]

    def declare(name: str, **parts: Any) -> Op:
        return register(Op(name, module=short, **parts))

    return declare
