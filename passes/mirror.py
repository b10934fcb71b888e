"""Insert the Companion Partial Monitor (CPM): a channel-narrowed clone of stages 2..n+1.

For tap k (1-based) a normal-world `Gather` (`mirrorc/select{k}`) takes the selected channels (or
features, for a 2-D tap) of the backbone tensor: `mirrorc_tap{k}`, the bytes that cross to the
secure world. M_1 = mirrorc_tap1; the CPM clone of stage k+1 reads M_k; M_k = CPM_k + mirrorc_tap{k}
for k >= 2 (`cpm/m{k}`). The clone of the last stage gives `cpm_logits`; `mirrornet_logits` =
backbone_logits + cpm_logits; `label` = ArgMax. Nothing flows from the CPM back to the backbone.

How each op is narrowed (every CPM node and initializer name starts with "cpm/"):
- Conv keeps kernel, stride, pads, dilation; output channels become C (at most the backbone's),
  input channels are whatever the CPM tensor feeding it has. A depthwise conv stays depthwise
  (groups = its input channels); another grouped conv gets the largest groups dividing both
  narrowed channel counts and its backbone groups (1 if nothing else works).
- Gemm / MatMul with a constant weight: hidden dense widths are C_l = the flattened size of the
  CPM tensor entering the first dense layer (the paper's C x FO^2, Eq. 1) or `dense_width`,
  clamped to at least the number of classes K and at most the backbone's width there.
  A MatMul of an [N, ..., C] activation by a constant (ConvNeXt's Linear on channels-last tensors)
  is a 1x1 conv over the last axis: C outputs.
- The layers that produce the logits (parametric nodes with no other parametric node between them
  and the logits) keep K outputs.
- BatchNormalization/InstanceNormalization get fresh per-channel parameters for the narrowed
  channels, and so do a layer's bias or scale that the exporter split into a Mul/Add right after it
  (1 for Mul, 0 for Add); other constants of elementwise ops and PRelu slopes are cut (or repeated)
  along the axes that were narrowed.
- A Split along the channels keeps its proportions (each part at least one channel); a Slice of
  the channels takes the proportional range; Resize keeps its scales (explicit sizes get the
  CPM's channel count).
- Reshape shape constants are rewritten: output dims that came from the channel dim (a flatten, a
  channel-shuffle split or merge) are recomputed from the CPM's channel count.
- Ops that act per channel or per position (activations, pooling, LRN, Flatten, Transpose, ...)
  are cloned as they are; anything else on the way to the logits is an error naming the node.
The per-op rules live in the op registry (passes/ops, each op's `narrow`); this pass walks the graph,
crosses the worlds, matches channel counts and infers shapes.

Shapes of the new tensors come from onnx shape inference, one node at a time, so a narrowed graph
that does not fit together (e.g. a residual Add of 2 and 4 channels) fails at the offending node.

Weights: the CPM is always freshly initialized (PyTorch's default uniform(+-1/sqrt(fan_in)) for
Conv/Gemm/MatMul, identity BatchNorm). `init="random"` re-initializes the backbone the same way
(the paper trains MirrorNet from scratch); `init="keep"` keeps the backbone's weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from passes import contract, ops
from passes.base import Pass, PassContext
from passes.shapes import node_output_shapes
from passes.taps import is_parametric

CPM_PREFIX = "cpm/"  # every CPM node and initializer name starts with it
SELECT_MODES = ("first", "spread", "random")
INIT_MODES = ("random", "keep")


def is_cpm(name: str) -> bool:
    """Whether a node or initializer name belongs to the CPM (the secure part)."""
    return name.startswith(CPM_PREFIX)


def normalize_options(options: dict) -> dict:
    """The mirror options with defaults filled in, checked; errors name the option."""
    from passes.errors import MirrorcError

    opts: dict[str, Any] = {"channels": 2, "select": "first", "seed": 0, "init": "random", "dense_width": None}
    unknown = set(options) - set(opts)
    if unknown:
        raise MirrorcError(f"mirror: unknown option(s) {', '.join(sorted(unknown))}")
    opts.update({k: v for k, v in options.items()})
    if not isinstance(opts["channels"], (int, np.integer)) or opts["channels"] < 1:
        raise MirrorcError(f"mirror: option 'channels' must be a positive integer, got {opts['channels']!r}")
    if opts["select"] not in SELECT_MODES:
        raise MirrorcError(f"mirror: option 'select' must be one of {', '.join(SELECT_MODES)}, got {opts['select']!r}")
    if opts["init"] not in INIT_MODES:
        raise MirrorcError(f"mirror: option 'init' must be one of {', '.join(INIT_MODES)}, got {opts['init']!r}")
    dw = opts["dense_width"]
    if dw is not None and (not isinstance(dw, (int, np.integer)) or dw < 1):
        raise MirrorcError(f"mirror: option 'dense_width' must be a positive integer, got {dw!r}")
    opts["channels"] = int(opts["channels"])
    opts["seed"] = int(opts["seed"])
    opts["dense_width"] = None if dw is None else int(dw)
    return opts


def select_indices(width: int, count: int, mode: str, rng: np.random.Generator) -> list[int]:
    """`count` distinct indices out of `width`, in increasing order."""
    if mode == "first":
        return list(range(count))
    if mode == "spread":
        return [i * width // count for i in range(count)]
    return sorted(int(i) for i in rng.choice(width, size=count, replace=False))


def torch_uniform(rng: np.random.Generator, shape: int | Sequence[int], fan_in: int) -> np.ndarray:
    """PyTorch's default draw for a layer's weight and bias: uniform(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _elem_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def head_nodes(graph: gs.Graph) -> set[str]:
    """Parametric nodes with no other parametric node between them and the logits."""
    heads, seen = set(), set()
    stack = [t for t in graph.outputs[:1]]
    while stack:
        t = stack.pop()
        if id(t) in seen or not t.inputs:
            continue
        seen.add(id(t))
        node = t.inputs[0]
        if is_parametric(node):
            heads.add(node.name)
            continue
        stack.extend(x for x in node.inputs if isinstance(x, gs.Variable))
    return heads


def reinit_backbone(graph: gs.Graph, rng: np.random.Generator) -> None:
    """Fresh PyTorch-default weights for every Conv/Gemm/MatMul; identity BatchNorms and
    split-out layer affines (see `layer_affine`)."""
    for node in graph.nodes:
        if is_parametric(node):
            w = node.inputs[1]
            fan_in = _fan_in(node, w.shape)
            w.values = torch_uniform(rng, w.shape, fan_in)
            if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
                node.inputs[2].values = torch_uniform(rng, node.inputs[2].shape, fan_in)
        elif node.op == "BatchNormalization":
            c = node.inputs[1].shape
            for i, fill in ((1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0)):
                if isinstance(node.inputs[i], gs.Constant):
                    node.inputs[i].values = np.full(c, fill, dtype=np.float32)
        elif layer_affine(node) is not None:
            c = next(x for x in node.inputs if isinstance(x, gs.Constant))
            c.values = np.full(c.shape, layer_affine(node), dtype=np.float32)


def layer_affine(node: gs.Node) -> float | None:
    """For a Mul/Add of a constant right after a Conv/Gemm/MatMul/BatchNorm (a layer's bias or BN
    affine split out by the exporter, as in DenseNet or a MatMul+Add dense layer), the value it is
    reset to (1 for Mul, 0 for Add): these are layer parameters, not fixed constants. Else None."""
    if node.op not in ("Mul", "Add"):
        return None
    var = [x for x in node.inputs if isinstance(x, gs.Variable)]
    if len(var) != 1 or len(node.inputs) != 2 or not var[0].inputs:
        return None
    src = var[0].inputs[0]
    if src.op == "Mul" and layer_affine(src) is not None:
        src = next(x for x in src.inputs if isinstance(x, gs.Variable)).inputs[0]
    if not (is_parametric(src) or src.op == "BatchNormalization"):
        return None
    return 1.0 if node.op == "Mul" else 0.0


def _fan_in(node: gs.Node, wshape) -> int:
    if node.op == "Conv":
        return int(np.prod(wshape[1:]))
    if node.op == "Gemm":
        return int(wshape[1] if node.attrs.get("transB", 0) else wshape[0])
    return int(wshape[0])


class MirrorPass(Pass):
    name = "mirror"
    requires = ("canonical", "taps")
    ensures = ("mirrored",)
    form = "gs"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        self.opts = normalize_options(ctx.options)
        self.num_classes = ctx.info["num_classes"]
        self.opset = ctx.info["opset"]
        self.heads = head_nodes(graph)
        if self.opts["init"] == "random":
            reinit_backbone(graph, np.random.default_rng(self.opts["seed"]))
        tensors = graph.tensors()
        taps = [tensors[name] for name in ctx.info["taps"]]
        stage_of = ctx.info["stage_of"]
        backbone = list(graph.nodes)
        # Output channels forced on a Conv so that a binary op sees equal channel counts on both sides
        # (a ShuffleNet unit adds a 2C-channel shortcut to its branch). Found by building, so build again.
        self.overrides: dict[str, int] = {}
        for _attempt in range(len(backbone) + 1):
            try:
                self._build(graph, backbone, taps, stage_of)
                break
            except _Retry:
                for node in self.new_nodes:  # detach the partial CPM from the backbone tensors
                    node.inputs.clear()
                    node.outputs.clear()
        else:
            raise self.fail("channel counts of the CPM do not settle")
        graph.nodes.extend(self.new_nodes)
        self._finish(graph, len(taps) + 1)
        ctx.info["taps_meta"] = self.tap_meta
        ctx.info["node_world"] = self.world
        ctx.info["node_stage"] = self.stage
        ctx.info["cpm_head"] = sorted(f"cpm/{n}" for n in self.heads)
        ctx.info["options"] = self.opts
        ctx.info["dense_width"] = self.dense_width
        graph.toposort()
        return graph

    def _build(self, graph, backbone, taps, stage_of) -> None:
        """One attempt at the whole CPM; every piece of state starts afresh."""
        self.rng = np.random.default_rng([self.opts["seed"], 1])  # the CPM's own stream, same each attempt
        self.dense_width: int | None = self.opts["dense_width"]  # C_l, set at the first dense layer
        self.cpm: dict[int, gs.Variable] = {}  # id(backbone tensor) -> its CPM counterpart
        self.const_copies: dict[int, gs.Constant] = {}
        self.tap_meta: list[dict] = []
        self.new_nodes: list[gs.Node] = []
        self.depthwise: set[str] = set()
        self.world = {n.name: "normal" for n in backbone}
        self.stage = {n.name: stage_of[n.name] for n in backbone}
        current = 1
        for node in backbone:
            s = stage_of[node.name]
            while current < s:  # stage `current` is complete: its tap can cross over
                self._cross(current, taps[current - 1])
                current += 1
            if s >= 2:
                self._clone(node, s)

    def check(self, graph: gs.Graph, ctx: PassContext) -> None:
        names = [t.name for t in graph.outputs]
        if names != list(contract.OUTPUTS):
            raise self.fail(f"graph outputs are {names}")
        for node in graph.nodes:
            if self.world.get(node.name) == "secure":
                if not is_cpm(node.name):
                    raise self.fail("secure node without the cpm/ prefix", node.name)
                for x in node.inputs:
                    if isinstance(x, gs.Constant) and not is_cpm(x.name):
                        raise self.fail(f"CPM constant '{x.name}' without the cpm/ prefix", node.name)

    # -- crossing the worlds -------------------------------------------------------------------

    def _cross(self, k: int, tap: gs.Variable) -> None:
        width = int(tap.shape[1])
        if k == 1:
            count = (
                min(self.opts["channels"], width)
                if len(tap.shape) > 2
                else min(max(self.opts["dense_width"] or self.opts["channels"], self.num_classes), width)
            )
        else:
            out = self._cpm_of(tap, f"mirrorc/select{k}")
            count = int(out.shape[1])
            if count > width:
                raise self.fail(
                    f"the CPM has {count} channels at tap {k} but the backbone tensor '{tap.name}' "
                    f"has only {width}; use fewer channels",
                    out.inputs[0].name,
                )
            if list(out.shape[1:]) != [count, *tap.shape[2:]]:
                raise self.fail(
                    f"CPM tensor {out.shape} does not match tap '{tap.name}' {tap.shape}", out.inputs[0].name
                )
        idx = select_indices(width, count, self.opts["select"], self.rng)
        shape = [count, *[int(d) for d in tap.shape[2:]]]
        selected = gs.Variable(contract.tap_name(k), dtype=np.float32, shape=[tap.shape[0], *shape])
        indices = gs.Constant(f"mirrorc/select{k}/indices", np.array(idx, dtype=np.int64))
        self._add_node("Gather", f"mirrorc/select{k}", [tap, indices], [selected], {"axis": 1}, "normal", k)
        self.tap_meta.append(
            {
                "index": k,
                "tensor": tap.name,
                "selected": selected.name,
                "channels": idx,
                "shape": shape,
                "bytes": 4 * int(np.prod(shape)),
            }
        )
        if k == 1:
            self.cpm[id(tap)] = selected
        else:
            m = gs.Variable(f"cpm/m{k}", dtype=np.float32, shape=list(selected.shape))
            self._add_node("Add", f"cpm/add_m{k}", [self.cpm[id(tap)], selected], [m], {}, "secure", k)
            self.cpm[id(tap)] = m

    def _finish(self, graph: gs.Graph, last_stage: int) -> None:
        self.new_nodes = []
        logits = graph.outputs[0]
        cpm_logits = self._cpm_of(logits, "cpm/final_add")
        k = self.num_classes
        if list(cpm_logits.shape[1:]) != [k]:
            raise self.fail(f"CPM logits have shape {cpm_logits.shape}, expected [N, {k}]", cpm_logits.inputs[0].name)
        cpm_logits.name = contract.CPM_LOGITS
        logits.name = contract.BACKBONE_LOGITS
        total = gs.Variable(contract.MIRRORNET_LOGITS, dtype=np.float32, shape=list(logits.shape))
        label = gs.Variable(contract.LABEL, dtype=np.int64, shape=[logits.shape[0]])
        self._add_node("Add", "cpm/final_add", [logits, cpm_logits], [total], {}, "secure", last_stage)
        self._add_node("ArgMax", "cpm/argmax", [total], [label], {"axis": 1, "keepdims": 0}, "secure", last_stage)
        graph.nodes.extend(self.new_nodes)
        graph.outputs = [label, logits, total]

    # -- cloning -------------------------------------------------------------------------------

    def _cpm_of(self, t: gs.Tensor, node_name: str) -> gs.Variable:
        try:
            return self.cpm[id(t)]
        except KeyError:
            raise self.fail(
                f"reads backbone tensor '{t.name}', which is neither a tap nor computed in this stage", node_name
            ) from None

    def _add_node(self, op, name, inputs, outputs, attrs, world, stage) -> gs.Node:
        node = gs.Node(op, name=name, attrs=dict(attrs), inputs=list(inputs), outputs=list(outputs))
        self.new_nodes.append(node)
        self.world[name] = world
        self.stage[name] = stage
        return node

    def copy_const(self, c: gs.Constant) -> gs.Constant:
        """A cpm/-named copy of a backbone constant used unchanged (shared between CPM nodes)."""
        if id(c) not in self.const_copies:
            self.const_copies[id(c)] = gs.Constant(f"cpm/{c.name}", np.array(c.values))
        return self.const_copies[id(c)]

    def _clone(self, node: gs.Node, stage: int) -> None:
        name = f"cpm/{node.name}"
        # (a nameless Variable is an omitted optional input, e.g. Clip without a min: kept as is)
        xs = [self._cpm_of(x, node.name) if isinstance(x, gs.Variable) and x.name else x for x in node.inputs]
        attrs = dict(node.attrs)
        op = node.op
        narrow = getattr(ops.get(op), "narrow", None)  # how passes/ops says this op is narrowed
        if narrow is None:
            raise self.fail(f"{op} on the way to the logits: the mirror pass cannot narrow it", node.name)
        if narrow == ops.AS_IS:
            xs = [self.copy_const(x) if isinstance(x, gs.Constant) else x for x in xs]
        else:
            xs, attrs = narrow(self, node, xs, attrs)
        outs = [gs.Variable(f"cpm/{o.name}", dtype=o.dtype) for o in node.outputs]
        new = self._add_node(op, name, xs, outs, attrs, "secure", stage)
        self._infer(new)
        for o, n in zip(node.outputs, outs):
            self.cpm[id(o)] = n

    def _infer(self, node: gs.Node) -> None:
        same = _shape_preserved(node)
        if same is not None:  # most CPM nodes: skip onnx's per-node inference (a model per call)
            node.outputs[0].shape = same
            return
        proto = helper.make_node(
            node.op, [x.name for x in node.inputs], [o.name for o in node.outputs], name=node.name, **node.attrs
        )
        var_in = {
            x.name: (_elem_type(x.dtype), list(x.shape)) for x in node.inputs if isinstance(x, gs.Variable) and x.name
        }
        consts = [
            numpy_helper.from_array(np.asarray(x.values), x.name) for x in node.inputs if isinstance(x, gs.Constant)
        ]
        try:
            shapes = node_output_shapes(proto, var_in, consts, self.opset)
        except Exception as e:  # MirrorcError from shapes, naming the node
            raise self.fail(str(e).split(": ", 1)[-1], node.name) from None
        for o, (_et, shape) in zip(node.outputs, shapes):
            if shape is None or any(not isinstance(d, (int, str)) for d in shape):
                raise self.fail(f"cannot infer the shape of '{o.name}'", node.name)
            o.shape = shape

    def match_channels(self, node: gs.Node, xs: list) -> None:
        """Two CPM tensors meeting in a binary op must agree on channels: force the Conv that
        produces one side (through per-channel ops only) to the other side's count, and rebuild."""
        pairs = [(bb, x) for bb, x in zip(node.inputs, xs) if isinstance(x, gs.Variable) and x.name]
        if len(pairs) != 2:
            return
        rank = len(node.outputs[0].shape)

        def channels(
            shape: Sequence[int | str],
        ) -> int:  # size on the output's axis 1, after right-aligned broadcasting
            axis = 1 - (rank - len(shape))
            return int(shape[axis]) if axis >= 0 else 1

        (bb_a, var_a), (bb_b, var_b) = pairs
        if channels(bb_a.shape) != channels(bb_b.shape):
            return  # the backbone itself broadcasts over the channels
        a, b = channels(var_a.shape), channels(var_b.shape)
        if a == b:
            return
        var = [var_a, var_b]
        for side, want in ((var[0], b), (var[1], a)):
            conv = _free_conv(side)
            conv = None if conv in self.depthwise or conv in self.heads else conv
            if conv is not None and self.overrides.get(conv) != want:
                self.overrides[conv] = want
                raise _Retry()
        # No Conv directly on either side: look through Concats and depthwise convs (a ghost module
        # concatenates a 1x1 conv with a depthwise conv of it) and split the width across them.
        for side, want in ((var[0], b), (var[1], a)):
            widths = self._resizable_widths(side, want)
            if widths and any(self.overrides.get(conv) != w for conv, w in widths.items()):
                self.overrides.update(widths)
                raise _Retry()
        raise self.fail(
            f"the CPM brings {a} and {b} channels to this {node.op}; no Conv on either side can be resized to match",
            node.name,
        )

    def _resizable_widths(self, t: gs.Variable, want: int) -> dict[str, int] | None:
        """Output channels for the free Convs behind `t` (through per-channel ops, depthwise convs
        and channel Concats) that give `t` exactly `want` channels; None when none can."""
        coefs: dict[str, int] = {}  # free Conv -> how many of its channels each of its channels gives `t`
        fixed = self._width_terms(t, 1, coefs)
        if not coefs or want - fixed < sum(coefs.values()):
            return None
        # every Conv gets an even share; the remainder goes to the Convs that contribute fewest copies
        share, rest = divmod(want - fixed, sum(coefs.values()))
        widths = {conv: share for conv in coefs}
        for conv in sorted(coefs, key=lambda c: (coefs[c], c)):
            extra = rest // coefs[conv] if coefs[conv] <= rest else 0
            widths[conv] += extra
            rest -= extra * coefs[conv]
        return widths if rest == 0 else None

    def _width_terms(self, t: gs.Variable, times: int, coefs: dict[str, int]) -> int:
        """Channels of CPM tensor `t` as sum(coefs[conv] * width(conv)) + the returned fixed part,
        `times` copies of it; fills `coefs` with the free (resizable) Convs behind it."""
        node = t.inputs[0] if t.inputs else None
        width = int(t.shape[1])
        if node is None:
            return times * width
        if node.op == "Conv":
            bb_name = node.name[len(CPM_PREFIX) :]
            if bb_name in self.heads:
                return times * width
            if bb_name in self.depthwise:  # its channels follow its input's, times the multiplier
                src = node.inputs[0]
                return self._width_terms(src, times * (width // int(src.shape[1])), coefs)
            coefs[bb_name] = coefs.get(bb_name, 0) + times
            return 0
        if node.op == "Concat" and int(node.attrs.get("axis", 0)) % len(t.shape) == 1:
            parts = [x for x in node.inputs if isinstance(x, gs.Variable) and x.name]
            if len(parts) != len(node.inputs):  # a constant part keeps its width
                return times * width
            return sum(self._width_terms(x, times, coefs) for x in parts)
        var = [x for x in node.inputs if isinstance(x, gs.Variable) and x.name]
        if getattr(ops.get(node.op), "per_channel", False) and len(var) == 1:
            return self._width_terms(var[0], times, coefs)
        return times * width


def _shape_preserved(node: gs.Node) -> list | None:
    """The output shape of an elementwise/per-channel node whose variable inputs all have one shape
    and whose constants broadcast into it without growing it; None when onnx must work it out."""
    if not getattr(ops.get(node.op), "keeps_shape", False) or len(node.outputs) != 1:
        return None
    var = [x for x in node.inputs if isinstance(x, gs.Variable) and x.name]
    if not var or any(list(v.shape) != list(var[0].shape) for v in var):
        return None
    shape = list(var[0].shape)
    for c in node.inputs:
        if isinstance(c, gs.Constant):
            cs = list(c.shape)
            if node.op == "BatchNormalization" or node.op == "InstanceNormalization":
                if cs != [shape[1]]:
                    return None
            elif len(cs) > len(shape) or any(d not in (1, shape[len(shape) - len(cs) + i]) for i, d in enumerate(cs)):
                return None
    return shape


class _Retry(Exception):
    """Raised when a channel override was added; the CPM is built again."""


def _free_conv(t: gs.Variable) -> str | None:
    """Backbone name of the CPM Conv whose output reaches `t` through per-channel ops
    only (elementwise ops count only when their other inputs are constants)."""
    while t.inputs:
        node = t.inputs[0]
        if node.op == "Conv":
            return node.name[len(CPM_PREFIX) :]
        if not getattr(ops.get(node.op), "per_channel", False):
            return None
        if sum(isinstance(x, gs.Variable) for x in node.inputs) != 1:
            return None
        t = node.inputs[0]
    return None
