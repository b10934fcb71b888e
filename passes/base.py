"""The Pass class and the PassManager.

A pass is a named step from graph to graph. It declares the facts it `requires` (established by
earlier passes) and the facts it `ensures`, and the form of graph it works on: an
onnx-graphsurgeon `Graph` ("gs") or an `onnx.ModelProto` ("proto"). The manager converts between
the two forms only when consecutive passes disagree, runs the passes in order, checks each pass's
requirements before it runs and its `check` (the ensured invariants) after, and turns any failure
into a `MirrorcError` that starts with the pass name: "<pass>: node '<name>': <reason>".
Each pass run leaves a `PassResult` in `ctx.results` (the pattern of onnx-ir's pass infrastructure):
whether the graph changed, the nodes and initializers added and removed, a one-line summary, time.
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
    results: list[PassResult] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PassResult:
    """What one pass changed, measured by the manager on the graph before and after the pass.
    `modified`: nodes (name, op, inputs, outputs, attribute names), initializer names, graph
    inputs/outputs or (between two ModelProtos) metadata differ; attribute values are not compared."""

    name: str
    modified: bool
    nodes_added: tuple[str, ...]
    nodes_removed: tuple[str, ...]
    initializers_added: tuple[str, ...]
    initializers_removed: tuple[str, ...]
    summary: str
    seconds: float


class Pass:
    """Subclass and set `name`, `requires`, `ensures`, `form`; implement `run` (and `check`)."""

    name: str = "pass"
    requires: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    form: str = "gs"  # "gs" (onnx_graphsurgeon.Graph) or "proto" (onnx.ModelProto)

    # `ir` is Any here: each subclass takes the form it declares (onnx.ModelProto or gs.Graph), a
    # narrowing that a precise base type would reject as an unsafe override.
    def run(self, ir: Any, ctx: PassContext) -> Any:
        raise NotImplementedError

    def check(self, ir: Any, ctx: PassContext) -> None:
        """Verify what the pass ensures; raise MirrorcError naming the node on failure."""

    def describe(self, ir: Any, ctx: PassContext) -> str:
        """What the pass found or made, in a few words, for its PassResult ("" when the diff says it)."""
        return ""

    def fail(self, reason: str, node: str | None = None) -> MirrorcError:
        where = f"node '{node}': " if node is not None else ""
        return MirrorcError(f"{self.name}: {where}{reason}")


def check_graph(p: Pass, model: onnx.ModelProto, which: str, *, full: bool) -> None:
    """onnx.checker on a graph a pass made; the failure names the pass and the graph."""
    try:
        onnx.checker.check_model(model, full_check=full)
    except Exception as e:  # onnx raises several types
        raise p.fail(f"the {which} graph is invalid: {str(e).splitlines()[0]}") from None


_BIG_BYTES = 1 << 20


def to_proto(ir: onnx.ModelProto | gs.Graph) -> onnx.ModelProto:
    if isinstance(ir, onnx.ModelProto):
        return ir
    # gs copies every weight about four times on export (VGG-19: 574 MB, seconds); large constants are
    # left out of its export and written once into the model's initializers here.
    swapped: list[tuple[gs.Node, int, gs.Constant]] = []
    standins: dict[int, gs.Variable] = {}
    for node in ir.nodes:
        for i, t in enumerate(node.inputs):
            if (
                isinstance(t, gs.Constant)
                and int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize > _BIG_BYTES
            ):
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


def to_gs(ir: onnx.ModelProto | gs.Graph) -> gs.Graph:
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


@dataclasses.dataclass(frozen=True)
class _Fingerprint:
    """The parts of a graph a PassResult compares; the same for a gs.Graph and a ModelProto."""

    nodes: dict[str, tuple]  # key (name, else op and first output) -> (op, inputs, outputs, attribute names)
    initializers: frozenset[str]
    io: tuple[tuple[str, ...], tuple[str, ...]]
    metadata: dict[str, tuple] | None  # "" -> the model's metadata_props, node key -> its own (ModelProto only)


def _fingerprint(ir) -> _Fingerprint:
    if ir is None:
        return _Fingerprint({}, frozenset(), ((), ()), None)
    nodes: dict[str, tuple] = {}
    if isinstance(ir, onnx.ModelProto):
        g = ir.graph
        inits = frozenset(t.name for t in g.initializer)
        meta = {"": tuple((p.key, p.value) for p in ir.metadata_props)}
        for n in g.node:
            key = n.name or f"{n.op_type}:{n.output[0] if n.output else ''}"
            nodes[key] = (n.op_type, tuple(n.input), tuple(n.output), tuple(a.name for a in n.attribute))
            meta[key] = tuple((p.key, p.value) for p in n.metadata_props)
        io = (tuple(i.name for i in g.input if i.name not in inits), tuple(o.name for o in g.output))
        return _Fingerprint(nodes, inits, io, meta)
    inits = frozenset(name for name, t in ir.tensors().items() if isinstance(t, gs.Constant))
    for n in ir.nodes:
        out0 = n.outputs[0].name if n.outputs else ""
        nodes[n.name or f"{n.op}:{out0}"] = (
            n.op,
            tuple(t.name for t in n.inputs),
            tuple(t.name for t in n.outputs),
            tuple(n.attrs),
        )
    io = (tuple(t.name for t in ir.inputs), tuple(t.name for t in ir.outputs))
    return _Fingerprint(nodes, inits, io, None)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _result(name: str, before: _Fingerprint, after: _Fingerprint, note: str, seconds: float) -> PassResult:
    nodes_added = tuple(sorted(set(after.nodes) - set(before.nodes)))
    nodes_removed = tuple(sorted(set(before.nodes) - set(after.nodes)))
    changed = sum(1 for k in set(before.nodes) & set(after.nodes) if before.nodes[k] != after.nodes[k])
    inits_added = tuple(sorted(after.initializers - before.initializers))
    inits_removed = tuple(sorted(before.initializers - after.initializers))
    metadata_changed = (
        before.metadata is not None
        and after.metadata is not None
        and any(before.metadata[k] != after.metadata[k] for k in set(before.metadata) & set(after.metadata))
    )
    modified = bool(
        nodes_added
        or nodes_removed
        or changed
        or inits_added
        or inits_removed
        or before.io != after.io
        or metadata_changed
    )
    diff = [
        f"{sign}{_plural(len(items), what)}"
        for sign, items, what in (
            ("+", nodes_added, "node"),
            ("-", nodes_removed, "node"),
            ("+", inits_added, "initializer"),
            ("-", inits_removed, "initializer"),
        )
        if items
    ]
    if changed:
        diff.append(f"{_plural(changed, 'node')} rewired")
    if metadata_changed:
        diff.append("metadata changed")
    if before.io != after.io and not (nodes_added or nodes_removed):
        diff.append("graph inputs/outputs changed")
    summary = "; ".join(filter(None, [", ".join(diff) if modified else "graph unchanged", note]))
    return PassResult(name, modified, nodes_added, nodes_removed, inits_added, inits_removed, summary, seconds)


class PassManager:
    """Runs passes in order. `run(ir, ctx)` returns the last pass's output and appends one
    PassResult per pass to `ctx.results`."""

    def __init__(self, passes: list[Pass]):
        self.passes = list(passes)

    def run(self, ir: onnx.ModelProto | gs.Graph | None, ctx: PassContext) -> Any:
        for p in self.passes:
            missing = [f for f in p.requires if f not in ctx.facts]
            if missing:
                raise MirrorcError(f"{p.name}: needs {', '.join(missing)} (run the passes that ensure it first)")
            start = time.perf_counter()
            ir = _convert(ir, p.form)
            seconds = time.perf_counter() - start
            before = _fingerprint(ir)  # after the conversion, so metadata compares proto with proto
            start = time.perf_counter()
            try:
                ir = p.run(ir, ctx)
                p.check(ir, ctx)
            except MirrorcError as e:
                msg = str(e)
                if not msg.startswith(f"{p.name}:"):
                    msg = f"{p.name}: {msg}"
                raise MirrorcError(msg) from None
            seconds += time.perf_counter() - start
            ctx.facts.update(p.ensures)
            ctx.timings[p.name] = ctx.timings.get(p.name, 0.0) + seconds
            ctx.results.append(_result(p.name, before, _fingerprint(ir), p.describe(ir, ctx), seconds))
        return ir
