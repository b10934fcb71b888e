"""Lower the secure graph to fixed-size C (pass `lower_c`).

`lower(secure, name)` turns the secure graph of `passes/split.py` (BatchNorm folded by
`passes/fold_bn.py`) into the generated model of
docs/ARCHITECTURE.md ("Generated C model interface"): every shape a compile-time constant, weights as
`static const float` arrays of exact hex-float literals, one static arena and a per-session carry
state laid out by `passes/memplan.py`, one C call per node into `runtime_c/kernels` (a Conv's only
consumer chain Relu -> GlobalAveragePool runs inside the conv call: `fuse_epilogues`). Each node runs at
the earliest command where all its inputs exist (command k-1 brings `mirrorc_tap{k}`, the final
command brings `backbone_logits`). The output is deterministic: the same graph gives byte-identical
sources.

Two passes live here: `MemPlanPass` ("memplan": schedule and memory plan of the secure graph,
`plan_secure`, which sizes the C's own scratch and fused epilogues and packs with
`passes/memplan.py`) and `LowerCPass` ("lower_c": the C text from that plan, `ctx.info["lowered"]`).

What each op lowers to (kernel call, in-place, scratch, fused epilogues) is its `emit` part in the
op registry (`passes/ops`); this module holds the machinery: shapes, schedule, memory plan, emitter
state and the generated files.

`lower_function(model)` lowers any supported single-command graph to one C function
`void <fn>(const float *const *in, void *const *out)`; the kernel tests run the ONNX backend node
tests through it, and benchmarks can time a graph with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import SupportsInt

import numpy as np
import onnx
from onnx import helper, numpy_helper

import runtime_c
from passes import contract, memplan, ops
from passes.base import Pass, PassContext
from passes.errors import MirrorcError

# Worst-case stack of the generated functions and the kernels they call (no recursion, no VLAs,
# largest kernel frame ~200 bytes on x86-64/aarch64; tests/test_c_lower.py checks it with
# -fstack-usage). Stated for TA_STACK_SIZE with headroom.
STACK_BYTES = 2048
FLT_MAX = 3.4028234663852886e38


def supported_ops() -> tuple[str, ...]:
    """The ops the C backend lowers: those with an `emit` part in the op registry (passes/ops)."""
    return ops.supporting("emit")


@dataclasses.dataclass
class Lowered:
    files: dict[str, str]  # relative path -> source text
    sizes: dict[str, int]  # weights, arena, state, stack (bytes)
    tap_floats: list[int]
    num_classes: int
    memory: dict = dataclasses.field(default_factory=dict)  # memplan summary (+ naive size)
    commands: list[list[str]] = dataclasses.field(default_factory=list)  # node names per command
    weights: dict[str, str] = dataclasses.field(default_factory=dict)  # initializer (or derived) -> C symbol


def _err(node: onnx.NodeProto | None, msg: str) -> MirrorcError:
    where = f"node '{node.name or node.output[0]}' ({node.op_type}): " if node is not None else ""
    return MirrorcError(f"{LowerCPass.name}: {where}{msg}")


def c_float(v: float) -> str:
    """A C float literal that parses to exactly this float32 (hex float, trailing zeros trimmed)."""
    return c_floats(np.array([v], np.float32))[0]


def c_floats(data: np.ndarray) -> list[str]:
    """c_float of every element (the weights path: millions of values, so no regex per value)."""
    data = np.asarray(data, np.float32).ravel()
    if not np.isfinite(data).all():
        raise _err(None, "non-finite constant in a weight array")
    out = []
    for v in data.astype(np.float64).tolist():  # float32 -> float64 is exact
        mant, exp = v.hex().split("p")
        out.append(f"{mant.rstrip('0').rstrip('.')}p{exp}f")
    return out


# ---------------------------------------------------------------------------------------------
# graph preparation


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            attr = node.attribute[0]
            if attr.name != "value":
                raise _err(node, f"Constant with '{attr.name}' is not supported")
            consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


Shapes = Mapping[str, Sequence[int]]  # tensor name -> its static shape


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor's static shape by ONNX shape inference; a symbolic or unknown dim is an error."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises several types here
        raise _err(None, f"shape inference failed: {str(e).splitlines()[0]}") from None
    shapes: dict[str, tuple[int, ...]] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in t.shape.dim)
    for init in g.initializer:
        shapes[init.name] = tuple(init.dims)
    for node in g.node:
        for t in [*node.input, *node.output]:
            if t and t not in shapes and node.op_type != "Constant":
                raise _err(node, f"tensor '{t}' has no static shape (is the batch fixed at 1?)")
    return shapes


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


# kernel epilogue bits (mirrorc_kernels.h MC_EPI_*)
EPI_RELU, EPI_GAP = 1, 2


@dataclasses.dataclass(frozen=True)
class Fused:
    """A Conv that runs its only consumers, Relu and/or GlobalAveragePool in that order, as kernel
    epilogues: the Conv node then writes the chain's last output."""

    conv_out: str  # the Conv's own output, never materialised
    epi: int  # EPI_RELU | EPI_GAP bits
    absorbed: tuple[str, ...]  # names of the absorbed nodes, for the command lists

    @property
    def pools(self) -> bool:
        """Whether the chain ends in the GlobalAveragePool: the conv's map is summed, never stored."""
        return bool(self.epi & EPI_GAP)


def _name(node) -> str:
    return node.name or node.output[0]


def fuse_epilogues(items: list, keep: set[str]) -> tuple[list, dict[str, Fused]]:
    """`items`, (tag, node) pairs in run order -> the same with each Conv -> [Relu] ->
    [GlobalAveragePool] chain as one Conv node (keeping the Conv's tag) that writes the chain's last
    output, and {that output: Fused}. A link is fused only when it is the tensor's sole consumer and
    the tensor is not in `keep` (graph outputs). Saves a pass over the activation per link, and the
    GAP link never materialises the conv output (SqueezeNet's head: [1000, 13, 13] -> 1000 floats)."""
    consumers: dict[str, list] = {}
    for _, nd in items:
        for t in nd.input:
            consumers.setdefault(t, []).append(nd)
    absorbed: set[int] = set()
    fused: dict[str, Fused] = {}
    out: list[tuple[object, onnx.NodeProto]] = []
    for tag, nd in items:
        if id(nd) in absorbed:
            continue
        epilogues = getattr(ops.get(nd.op_type), "epilogues", ())
        if not epilogues:
            out.append((tag, nd))
            continue
        t, epi, chain = nd.output[0], 0, []
        for op, bit in epilogues:
            users = consumers.get(t, [])
            if t not in keep and len(users) == 1 and users[0].op_type == op and len(users[0].input) == 1:
                chain.append(users[0])
                epi |= bit
                t = users[0].output[0]
        if not chain:
            out.append((tag, nd))
            continue
        conv = onnx.NodeProto()
        conv.CopyFrom(nd)
        conv.output[0] = t
        absorbed.update(id(u) for u in chain)
        fused[t] = Fused(nd.output[0], epi, tuple(_name(u) for u in chain))
        out.append((tag, conv))
    return out, fused


# ---------------------------------------------------------------------------------------------
# per-node emission


class _Emitter:
    """Turns nodes into kernel calls. `buf(name)` gives the C expression of an activation tensor;
    constant inputs become `static const float` arrays registered in `self.weights`."""

    def __init__(self, shapes, consts, buf, prefix: str = "", fast_conv: bool = True, fused=None):
        self.shapes, self.consts, self.buf, self.prefix = shapes, consts, buf, prefix
        self.fast_conv = fast_conv  # stride-1 convs through a padded copy in scratch
        self.fused: dict[str, Fused] = fused or {}  # see fuse_epilogues
        self.weights: dict[str, tuple[str, np.ndarray]] = {}  # key -> (C symbol, float32 data)
        self.int_arrays: list[str] = []

    def weight(self, key: str, data: np.ndarray) -> str:
        if key not in self.weights:
            self.weights[key] = (f"{self.prefix}W{len(self.weights)}", np.ascontiguousarray(data, np.float32).ravel())
        return self.weights[key][0]

    def operand(self, name: str) -> str:
        """A float input: a weight symbol if constant, else the activation's buffer."""
        if name in self.consts:
            return self.weight(name, self.consts[name])
        return self.buf(name)

    def ints(self, values: Iterable[SupportsInt]) -> str:
        """A `static const int` array for kernels taking shapes/strides/perms."""
        sym = f"{self.prefix}I{len(self.int_arrays)}"
        vals = [int(v) for v in values] or [0]
        self.int_arrays.append(f"static const int {sym}[{len(vals)}] = {{{', '.join(map(str, vals))}}};")
        return sym

    def emit(self, node: onnx.NodeProto) -> list[str]:
        """The C statements of one node, by its op's `emit` in the registry (passes/ops)."""
        op = node.op_type
        spec = ops.get(op)
        emit = spec.emit if spec is not None else None
        if spec is None or emit is None:
            raise _err(node, f"op {op} is not supported by the C backend (supported: {', '.join(supported_ops())})")
        a = _attrs(node)
        x = node.input[0]
        out = node.output[0]
        xs, ys = self.shapes[x], self.shapes[out]
        y = self.buf(out)
        if len(node.output) > 1 and any(node.output[1:]) and not spec.multi_output:
            raise _err(node, "extra outputs are not supported")
        return emit(self, node, a, xs, ys, y)


def _weights_source(emitter: _Emitter, guard: str, header_comment: str) -> str:
    out = [f"/* {header_comment} */", f"#ifndef {guard}", f"#define {guard}", ""]
    for key, (sym, data) in emitter.weights.items():
        out.append(f"/* {key} {list(data.shape)} */")
        out.append(f"static const float {sym}[{max(1, data.size)}] = {{")
        vals = c_floats(data) or ["0.0f"]
        for i in range(0, len(vals), 8):
            out.append("    " + ", ".join(vals[i : i + 8]) + ",")
        out.append("};")
    out += ["", f"#endif /* {guard} */", ""]
    return "\n".join(out)


def _weight_bytes(emitter: _Emitter) -> int:
    return sum(4 * max(1, d.size) for _, d in emitter.weights.values())


# ---------------------------------------------------------------------------------------------
# the secure model


def _check_secure(secure: onnx.ModelProto) -> tuple[int, list[str]]:
    g = secure.graph
    names = [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
    taps = [n for n in names if n != contract.BACKBONE_LOGITS]
    expected = [contract.tap_name(k) for k in range(1, len(taps) + 1)]
    if contract.BACKBONE_LOGITS not in names:
        raise _err(None, "secure graph input 'backbone_logits' is missing")
    if not taps:
        raise _err(None, "secure graph has no tap input (mirrorc_tap1..n)")
    if taps != expected:
        raise _err(None, f"secure graph inputs must be {expected + ['backbone_logits']}, got {names}")
    if [o.name for o in g.output] != [contract.LABEL]:
        raise _err(None, f"secure graph output must be ['label'], got {[o.name for o in g.output]}")
    return len(taps), taps


def scratch_floats(
    node: onnx.NodeProto, shapes: Shapes, fast_conv: bool = True, fused: Mapping[str, Fused] | None = None
) -> int:
    """Scratch a node's kernel needs for the duration of its step (its op's `scratch`, 0 for most)."""
    scratch = getattr(ops.get(node.op_type), "scratch", None)
    return scratch(node, shapes, fast_conv, fused) if scratch is not None else 0


def scratch_name(node: onnx.NodeProto) -> str:
    return f"{node.output[0]}#scratch"


def plan_steps(
    body: Iterable[tuple[int, onnx.NodeProto]],
    shapes: Shapes,
    consts: Container[str],
    fast_conv: bool = True,
    fused: Mapping[str, Fused] | None = None,
) -> tuple[list[memplan.Step], dict[str, int]]:
    """The memplan steps of `body`, (command, node) pairs in run order, each writing its outputs and
    then its kernel's scratch (live only during the step); and the floats of every tensor and scratch."""
    steps, floats = [], {t: _prod(sh) for t, sh in shapes.items()}
    for cmd, nd in body:
        scratch = scratch_floats(nd, shapes, fast_conv, fused)
        if scratch:
            floats[scratch_name(nd)] = scratch
        steps.append(
            memplan.Step(
                cmd, [t for t in nd.input if t not in consts], list(nd.output) + ([scratch_name(nd)] if scratch else [])
            )
        )
    return steps, floats


def inplace_steps(nodes: Sequence[onnx.NodeProto], shapes: Shapes, consts: Container[str]) -> set[int]:
    """Indices of nodes whose output may overwrite their first input (see memplan)."""
    out = set()
    for i, nd in enumerate(nodes):
        if not nd.input or nd.input[0] in consts:
            continue
        inplace = getattr(ops.get(nd.op_type), "inplace", False)
        if inplace is True or (callable(inplace) and inplace(nd, shapes)):
            out.add(i)
    return out


def schedule(secure: onnx.ModelProto) -> list[tuple[int, onnx.NodeProto]]:
    """(command, node) in run order: command k-1 for nodes that need `mirrorc_tap{k}` and nothing
    later, command n (final) for the rest; within a command the graph's topological order."""
    n_taps, taps = _check_secure(secure)
    ready = {t: k for k, t in enumerate(taps)}
    ready[contract.BACKBONE_LOGITS] = n_taps
    order = []
    for node in secure.graph.node:
        if node.op_type == "Constant":
            continue
        try:
            cmd = max((ready[t] for t in node.input if t and t in ready), default=0)
        except KeyError:
            raise _err(node, "graph is not topologically sorted") from None
        if contract.LABEL in node.output:
            cmd = n_taps
        for t in node.output:
            ready[t] = cmd
        order.append((cmd, node))
    order.sort(key=lambda item: item[0])  # stable: keeps topological order inside a command
    return order


@dataclasses.dataclass
class SecurePlan:
    """The secure graph scheduled and memory-planned (everything `lower` needs but the C text)."""

    n_taps: int
    taps: list[str]
    shapes: dict
    consts: dict
    body: list  # (command, node) in run order, the label's ArgMax left out
    argmax: onnx.NodeProto
    tap_floats: list[int]
    num_classes: int
    inputs: dict  # graph input -> the command that brings it
    memory: memplan.MemoryPlan
    fast_conv: bool
    fused: dict  # fused conv output -> Fused (see fuse_epilogues)


def plan_secure(secure: onnx.ModelProto, fast_conv: bool = True) -> SecurePlan:
    """Schedule and memory plan of the secure graph, without generating code (reports use it for
    the exact arena and state sizes the generated model will have). `fast_conv` gives stride-1
    convolutions scratch in the arena (faster, more memory)."""
    n_taps, taps = _check_secure(secure)
    shapes = static_shapes(secure)
    consts = _constants(secure)
    order = schedule(secure)
    label_nodes = [nd for _, nd in order if contract.LABEL in nd.output]
    if len(label_nodes) != 1 or label_nodes[0].op_type != "ArgMax":
        raise _err(None, "'label' must be produced by one ArgMax node")
    argmax = label_nodes[0]
    logits = argmax.input[0]
    num_classes = _prod(shapes[logits])
    if shapes[logits][0] != 1 or num_classes != shapes[contract.BACKBONE_LOGITS][-1]:
        raise _err(argmax, f"ArgMax input {shapes[logits]} is not [1, K] with K = {shapes['backbone_logits'][-1]}")
    for t in taps + [contract.BACKBONE_LOGITS]:
        if shapes[t][0] != 1:
            raise _err(None, f"input '{t}' must have batch 1, has shape {list(shapes[t])}")
    tap_floats = [_prod(shapes[t]) for t in taps]

    order, fused = fuse_epilogues(order, {contract.LABEL})  # a chain runs in its Conv's command (its inputs')
    body = [(cmd, nd) for cmd, nd in order if nd is not argmax]
    steps, floats = plan_steps(body, shapes, consts, fast_conv, fused)
    steps.append(memplan.Step(n_taps, [logits], []))
    inputs = {t: k for k, t in enumerate(taps)}
    inputs[contract.BACKBONE_LOGITS] = n_taps
    mplan = memplan.plan(steps, floats, inputs, inplace=inplace_steps([nd for _, nd in body], shapes, consts))
    return SecurePlan(
        n_taps, taps, shapes, consts, body, argmax, tap_floats, num_classes, inputs, mplan, fast_conv, fused
    )


LINE_FLOATS = 16  # a 64-byte cache line


def first_touch_floats(sp: SecurePlan) -> list[int]:
    """Per step of `sp.body`: the floats of arena and carry lines it writes (outputs, scratch) that no
    earlier step of the inference touched. An inference that starts with cold caches fetches each such
    line from memory before writing it (the emulator's per_first_touch_float term); a line written
    again later is in the cache by then. Carried taps count as touched from the start."""
    steps, _ = plan_steps(sp.body, sp.shapes, sp.consts, sp.fast_conv, sp.fused)
    buffers = sp.memory.buffers
    touched: dict[bool, set[int]] = {False: set(), True: set()}  # carry region? -> lines

    def lines(name: str) -> set[int]:
        b = buffers[name]
        return set(range(b.offset // LINE_FLOATS, (b.offset + b.floats + LINE_FLOATS - 1) // LINE_FLOATS))

    for t in sp.taps:
        if t in buffers:
            touched[True] |= lines(t)
    out = []
    for step in steps:
        fresh = 0
        for t in step.outputs:
            if t in buffers:
                new = lines(t) - touched[buffers[t].carry]
                touched[buffers[t].carry] |= new
                fresh += len(new) * LINE_FLOATS
        out.append(fresh)
    return out


def lower(
    secure: onnx.ModelProto,
    name: str,
    tee_memory: int | None = None,
    *,
    fast_conv: bool = True,
    plan: SecurePlan | None = None,
    profile: bool = False,
) -> Lowered:
    """Generate the C model of the secure graph; `name` is the model's name in comments; `plan`, the
    graph's `plan_secure` if already made (the memplan pass). With `profile` (the calibration build
    of `mirrorc.plan.profile`, never a release TA), every scheduled node `i` of `plan.body` is
    bracketed by `mirrorc_profile_begin()` / `mirrorc_profile_end(i)`, which the timing harness
    defines; without it the C is exactly the release C. When the model does not fit
    `tee_memory` bytes (weights + arena + state + stack), the stride-1 conv scratch is given up
    first; if it still does not fit, MirrorcError."""
    sp = plan if plan is not None and plan.fast_conv == fast_conv else plan_secure(secure, fast_conv)
    n_taps, taps, shapes, consts, body, argmax = sp.n_taps, sp.taps, sp.shapes, sp.consts, sp.body, sp.argmax
    tap_floats, num_classes, inputs, mplan = sp.tap_floats, sp.num_classes, sp.inputs, sp.memory
    logits = argmax.input[0]

    def buf(t: str) -> str:
        b = mplan.buffers.get(t)
        if b is None:
            if t in inputs:  # read during its own command: the caller's buffer
                return "tap" if t != contract.BACKBONE_LOGITS else contract.BACKBONE_LOGITS
            raise _err(None, f"tensor '{t}' has no buffer")
        return f"(s->carry + {b.offset})" if b.carry else f"(mirrorc_arena + {b.offset})"

    emitter = _Emitter(shapes, consts, buf, fast_conv=fast_conv, fused=sp.fused)
    per_cmd: list[list[str]] = [[] for _ in range(n_taps + 1)]
    cmd_nodes: list[list[str]] = [[] for _ in range(n_taps + 1)]
    for k, t in enumerate(taps):  # taps read after their own command are copied into the state
        if t in mplan.buffers:
            per_cmd[k].append(f"mc_copy(tap, {buf(t)}, {tap_floats[k]}); /* keep {t} */")
    if contract.BACKBONE_LOGITS in mplan.buffers:  # cannot happen: nothing follows the final command
        raise _err(None, "backbone_logits carried")
    for step, (cmd, nd) in enumerate(body):
        f = sp.fused.get(nd.output[0])
        ops = "+".join(
            [nd.op_type]
            + (["Relu"] if f and f.epi & EPI_RELU else [])
            + (["GlobalAveragePool"] if f and f.epi & EPI_GAP else [])
        )
        per_cmd[cmd].append(
            f"/* {_name(nd)}{''.join(', ' + a for a in f.absorbed) if f else ''}: {ops} -> "
            f"{list(shapes[nd.output[0]])} */"
        )
        per_cmd[cmd].extend(
            ["mirrorc_profile_begin();", *emitter.emit(nd), f"mirrorc_profile_end({step});"]
            if profile
            else emitter.emit(nd)
        )
        cmd_nodes[cmd] += [_name(nd), *(f.absorbed if f else ())]
    cmd_nodes[n_taps].append(argmax.name or contract.LABEL)

    weight_bytes = _weight_bytes(emitter)
    arena_bytes = 4 * max(1, mplan.arena_floats)
    state_bytes = 4 * max(1, mplan.carry_floats)
    sizes = {"weights": weight_bytes, "arena": arena_bytes, "state": state_bytes, "stack": STACK_BYTES}
    total = sum(sizes.values())
    if (
        tee_memory is not None
        and total > tee_memory
        and fast_conv
        and any(scratch_floats(nd, shapes, True, sp.fused) for _, nd in body)
    ):
        return lower(secure, name, tee_memory, fast_conv=False, profile=profile)
    if tee_memory is not None and total > tee_memory:
        raise _err(
            None,
            f"model '{name}' needs {total} bytes in the TA (weights {weight_bytes}, arena {arena_bytes}, "
            f"state {state_bytes}, stack {STACK_BYTES}), more than the TEE memory limit of {tee_memory} bytes",
        )

    header = _model_header(name, n_taps, num_classes, tap_floats, sizes, mplan)
    source = _model_source(name, emitter, per_cmd, n_taps, buf(logits), num_classes, mplan)
    if profile:  # the harness's timer hooks, declared before their first use
        hooks = f"#define MIRRORC_PROFILE_STEPS {len(body)}\n{PROFILE_HOOKS}"
        source = source.replace('#include "mirrorc_weights.h"\n', f'#include "mirrorc_weights.h"\n{hooks}', 1)
    weights = _weights_source(
        emitter,
        "MIRRORC_WEIGHTS_H",
        f"mirrorc weights of model '{name}': {weight_bytes} bytes, exact float32 "
        "hex literals. Included by mirrorc_model.c only.",
    )
    files = {"model/mirrorc_model.h": header, "model/mirrorc_model.c": source, "model/mirrorc_weights.h": weights}
    for src in [runtime_c.KERNEL_DIR / "mirrorc_kernels.h", *runtime_c.kernel_sources()]:
        files[f"kernels/{src.name}"] = src.read_text()
    memory = dict(mplan.summary(), weight_bytes=weight_bytes, fast_conv=fast_conv)
    symbols = {key: sym for key, (sym, _) in emitter.weights.items()}
    return Lowered(files, sizes, tap_floats, num_classes, memory, cmd_nodes, symbols)


class MemPlanPass(Pass):
    """Schedule and memory plan of the secure graph (`ctx.info["secure_plan"]`): what the report's
    estimate and the lowering read."""

    name = "memplan"
    requires = ("bn_folded",)
    ensures = ("memory_planned",)
    form = "proto"

    def __init__(self, fast_conv: bool = True):
        self.fast_conv = fast_conv

    def run(self, secure: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto:
        ctx.info["secure_plan"] = plan_secure(secure, self.fast_conv)
        return secure

    def check(self, secure: onnx.ModelProto, ctx: PassContext) -> None:
        mp = ctx.info["secure_plan"].memory
        for b in mp.buffers.values():
            top = mp.carry_floats if b.carry else mp.arena_floats
            if b.offset < 0 or b.offset + b.floats > top:
                raise self.fail(
                    f"tensor '{b.name}' at [{b.offset}, {b.offset + b.floats}) lies outside its "
                    f"{'carry state' if b.carry else 'arena'} of {top} floats"
                )

    def describe(self, secure: onnx.ModelProto, ctx: PassContext) -> str:
        sp = ctx.info["secure_plan"]
        return f"{sp.n_taps + 1} commands, arena {4 * sp.memory.arena_floats} B, state {4 * sp.memory.carry_floats} B"


class LowerCPass(Pass):
    """The C model of the planned secure graph (`ctx.info["lowered"]`, a `Lowered`); the graph
    passes through unchanged."""

    name = "lower_c"
    requires = ("memory_planned",)
    ensures = ("lowered_c",)
    form = "proto"

    def __init__(self, model_name: str, tee_memory: int | None = None):
        self.model_name = model_name
        self.tee_memory = tee_memory

    def run(self, secure: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto:
        ctx.info["lowered"] = lower(secure, self.model_name, self.tee_memory, plan=ctx.info["secure_plan"])
        return secure

    def check(self, secure: onnx.ModelProto, ctx: PassContext) -> None:
        lowered = ctx.info["lowered"]
        missing = [
            f
            for f in (
                "model/mirrorc_model.h",
                "model/mirrorc_model.c",
                "model/mirrorc_weights.h",
                "kernels/mirrorc_kernels.h",
            )
            if f not in lowered.files
        ]
        if missing:
            raise self.fail(f"generated sources lack {', '.join(missing)}")
        if lowered.tap_floats != ctx.info["secure_plan"].tap_floats:
            raise self.fail(f"taps of {lowered.tap_floats} floats, the plan has {ctx.info['secure_plan'].tap_floats}")

    def describe(self, secure: onnx.ModelProto, ctx: PassContext) -> str:
        lowered = ctx.info["lowered"]
        conv = "" if lowered.memory.get("fast_conv", True) else ", compact conv scratch"
        return f"{len(lowered.files)} C files, {sum(lowered.sizes.values())} B in the TA{conv}"


# What a profiling build of the model calls around every scheduled node (lower(profile=True)).
PROFILE_HOOKS = "void mirrorc_profile_begin(void);\nvoid mirrorc_profile_end(unsigned step);\n"


def _model_header(name, n_taps, k, tap_floats, sizes, mplan) -> str:
    planned = 4 * (mplan.arena_floats + mplan.carry_floats)
    return f"""/* Generated by mirrorc from the secure graph of '{name}'. Do not edit.
 *
 * Fixed-size CPM: every shape is a compile-time constant, no malloc, no stdio, no libm.
 * Memory (bytes): weights {sizes["weights"]} (static const), arena {sizes["arena"]} (static, shared
 * by all sessions: nothing in it outlives a command), state {sizes["state"]} per session (tensors
 * carried across commands), stack {sizes["stack"]} (worst case of the kernels).
 * Naive buffers would need {4 * mplan.naive_floats} bytes; the liveness plan needs {planned}.
 *
 * Call order per inference: mirrorc_run_tap(s, 0, tap1) ... mirrorc_run_tap(s, {n_taps - 1}, tap{n_taps}),
 * then mirrorc_run_final(s, backbone_logits). The caller validates sizes and order. */
#ifndef MIRRORC_MODEL_H
#define MIRRORC_MODEL_H

#include <stdint.h>

#define MIRRORC_NUM_TAPS        {n_taps}
#define MIRRORC_NUM_CLASSES     {k}
#define MIRRORC_TAP_FLOATS      {{ {", ".join(map(str, tap_floats))} }}
#define MIRRORC_SINGLE_FLOATS   ({" + ".join(map(str, tap_floats))} + {k})
#define MIRRORC_WEIGHT_BYTES    {sizes["weights"]}
#define MIRRORC_ARENA_BYTES     {sizes["arena"]}
#define MIRRORC_STATE_BYTES     {sizes["state"]}
#define MIRRORC_STACK_BYTES     {sizes["stack"]}

typedef struct {{ float carry[{sizes["state"] // 4}]; }} mirrorc_state_t;

void    mirrorc_reset(mirrorc_state_t *s);
void    mirrorc_run_tap(mirrorc_state_t *s, unsigned k, const float *tap);  /* k = 0..n-1 */
int32_t mirrorc_run_final(mirrorc_state_t *s, const float *backbone_logits);  /* the label */
#ifdef MIRRORC_DEBUG
/* as mirrorc_run_final, and copies the MirrorNet logits (backbone + CPM) to logits[K] */
int32_t mirrorc_debug_run_final(mirrorc_state_t *s, const float *backbone_logits, float *logits);
#endif

#endif /* MIRRORC_MODEL_H */
"""


def _model_source(name, emitter, per_cmd, n_taps, logits_buf, k, mplan) -> str:
    out = [
        f"/* Generated by mirrorc: the CPM of '{name}' as kernel calls. Do not edit. */",
        '#include "mirrorc_model.h"',
        '#include "mirrorc_kernels.h"',
        '#include "mirrorc_weights.h"',
        "",
    ]
    out.append(f"static float mirrorc_arena[{max(1, mplan.arena_floats)}];")
    out += emitter.int_arrays
    out += [
        "",
        "void mirrorc_reset(mirrorc_state_t *s)",
        "{",
        "    unsigned i;",
        "    for (i = 0; i < sizeof(s->carry) / sizeof(s->carry[0]); i++) s->carry[i] = 0.0f;",
        "}",
        "",
    ]
    for cmd in range(n_taps):
        out.append(f"static void run_tap{cmd}(mirrorc_state_t *s, const float *tap)")
        out += ["{", "    (void)s; (void)tap;"] + [f"    {line}" for line in per_cmd[cmd]] + ["}", ""]
    out += ["void mirrorc_run_tap(mirrorc_state_t *s, unsigned k, const float *tap)", "{", "    switch (k) {"]
    out += [f"    case {cmd}: run_tap{cmd}(s, tap); break;" for cmd in range(n_taps)]
    out += ["    default: break;", "    }", "}", ""]
    out += [
        "static int32_t run_final(mirrorc_state_t *s, const float *backbone_logits, float *logits)",
        "{",
        "    (void)s; (void)backbone_logits;",
    ]
    out += [f"    {line}" for line in per_cmd[n_taps]]
    out += [
        f"    if (logits) mc_copy({logits_buf}, logits, {k});",
        f"    return mc_argmax({logits_buf}, {k});",
        "}",
        "",
        "int32_t mirrorc_run_final(mirrorc_state_t *s, const float *backbone_logits)",
        "{",
        "    return run_final(s, backbone_logits, 0);",
        "}",
        "",
        "#ifdef MIRRORC_DEBUG",
        "int32_t mirrorc_debug_run_final(mirrorc_state_t *s, const float *backbone_logits, float *logits)",
        "{",
        "    return run_final(s, backbone_logits, logits);",
        "}",
        "#endif",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# any graph as one function (kernel tests, benchmarks)


def lower_function(model: onnx.ModelProto, fn: str = "mirrorc_graph") -> tuple[str, dict]:
    """C source of `void fn(const float *const *in, void *const *out)` computing `model` (static
    shapes, float32 inputs; ArgMax outputs are int32). Returns (source, memplan summary)."""
    shapes = static_shapes(model)
    consts = _constants(model)
    g = model.graph
    in_names = [i.name for i in g.input if i.name not in consts]
    out_names = [o.name for o in g.output]
    body, fused = fuse_epilogues([(0, nd) for nd in g.node if nd.op_type != "Constant"], set(out_names))
    nodes = [nd for _, nd in body]
    steps, floats = plan_steps(body, shapes, consts, True, fused)
    steps.append(memplan.Step(0, out_names, []))
    mplan = memplan.plan(
        steps, floats, {t: 0 for t in in_names}, external=set(out_names), inplace=inplace_steps(nodes, shapes, consts)
    )

    def buf(t: str) -> str:
        if t in out_names:
            return f"((float *)out[{out_names.index(t)}])"
        if t in in_names:
            return f"in[{in_names.index(t)}]"
        return f"({fn}_arena + {mplan.buffers[t].offset})"

    emitter = _Emitter(shapes, consts, buf, prefix=f"{fn}_", fused=fused)
    body = []
    for nd in nodes:
        body.extend(emitter.emit(nd))
    src = [
        '#include "mirrorc_kernels.h"',
        _weights_source(emitter, f"{fn.upper()}_WEIGHTS", f"weights of {fn}"),
        f"static float {fn}_arena[{max(1, mplan.arena_floats)}];",
        *emitter.int_arrays,
        f"void {fn}(const float *const *in, void *const *out)",
        "{",
        "    (void)in;",
    ]
    src += [f"    {line}" for line in body] + ["}", ""]
    return "\n".join(src), mplan.summary()
