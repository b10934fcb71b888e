"""The Pass class and the PassManager.

A pass is a named step from graph to graph. It declares the facts it `requires` (established by
earlier passes) and the facts it `ensures`, and the form of graph it works on: an
onnx-graphsurgeon `Graph` ("gs") or an `onnx.ModelProto` ("proto"). The manager converts between
the two forms only when consecutive passes disagree, runs the passes in order, checks each pass's
requirements before it runs and its `check` (the ensured invariants) after, and turns any failure
into a `MirrorcError` that starts with the pass name: "<pass>: node '<name>': <reason>".
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from passes.errors import MirrorcError

# gs logs folding warnings (and a hint about the `colored` module) on stdout/stderr; CLI errors must
# stay one line, so only its errors are shown.
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
ort.set_default_logger_severity(3)  # gs folds constants with onnxruntime, which warns per node


@dataclasses.dataclass
class PassContext:
    """What passes share besides the graph: the source file, the user's options, the facts
    established so far, and `info` (results later passes and the driver read, e.g. taps)."""

    source: Path | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    facts: set[str] = dataclasses.field(default_factory=set)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


class Pass:
    """Subclass and set `name`, `requires`, `ensures`, `form`; implement `run` (and `check`)."""

    name: str = "pass"
    requires: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    form: str = "gs"  # "gs" (onnx_graphsurgeon.Graph) or "proto" (onnx.ModelProto)

    def run(self, ir, ctx: PassContext):
        raise NotImplementedError

    def check(self, ir, ctx: PassContext) -> None:
        """Verify what the pass ensures; raise MirrorcError naming the node on failure."""

    def fail(self, reason: str, node: str | None = None) -> MirrorcError:
        where = f"node '{node}': " if node is not None else ""
        return MirrorcError(f"{self.name}: {where}{reason}")


_BIG_BYTES = 1 << 20


def to_proto(ir) -> onnx.ModelProto:
    if isinstance(ir, onnx.ModelProto):
        return ir
    # gs copies every weight about four times on export (VGG-19: 574 MB, seconds); large constants are
    # left out of its export and written once into the model's initializers here.
    swapped: list[tuple[gs.Node, int, gs.Constant]] = []
    standins: dict[int, gs.Variable] = {}
    for node in ir.nodes:
        for i, t in enumerate(node.inputs):
            if isinstance(t, gs.Constant) and int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize > _BIG_BYTES:
                standin = standins.setdefault(id(t), gs.Variable(t.name, dtype=t.dtype, shape=list(t.shape)))
                swapped.append((node, i, t))
                node.inputs[i] = standin
    try:
        model = gs.export_onnx(ir, do_type_check=False)
    finally:
        for node, i, t in swapped:
            node.inputs[i] = t
    written = set()
    for _, _, t in swapped:
        if t.name in written:
            continue
        written.add(t.name)
        arr = np.ascontiguousarray(t.values)
        init = model.graph.initializer.add()
        init.name = t.name
        init.data_type = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
        init.dims.extend(arr.shape)
        init.raw_data = arr.tobytes()
    # gs writes its own IR version; use the lowest one that the opsets need, as onnx.helper does.
    model.ir_version = max(onnx.helper.find_min_ir_version_for(list(model.opset_import)), 8)
    return model


def to_gs(ir) -> gs.Graph:
    if isinstance(ir, gs.Graph):
        return ir
    return gs.import_onnx(ir)


def _convert(ir, form: str):
    if ir is None:  # the first pass (load) starts from the context's source file
        return None
    if form == "gs":
        return to_gs(ir)
    if form == "proto":
        return to_proto(ir)
    raise ValueError(f"unknown pass form {form!r}")


class PassManager:
    """Runs passes in order. `run(ir, ctx)` returns the last pass's output."""

    def __init__(self, passes: list[Pass]):
        self.passes = list(passes)

    def run(self, ir, ctx: PassContext):
        for p in self.passes:
            missing = [f for f in p.requires if f not in ctx.facts]
            if missing:
                raise MirrorcError(f"{p.name}: needs {', '.join(missing)} (run the passes that ensure it first)")
            start = time.perf_counter()
            ir = _convert(ir, p.form)
            try:
                ir = p.run(ir, ctx)
                p.check(ir, ctx)
            except MirrorcError as e:
                msg = str(e)
                if not msg.startswith(f"{p.name}:"):
                    msg = f"{p.name}: {msg}"
                raise MirrorcError(msg) from None
            ctx.facts.update(p.ensures)
            ctx.timings[p.name] = ctx.timings.get(p.name, 0.0) + time.perf_counter() - start
        return ir
