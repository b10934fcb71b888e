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

from passes import contract
from passes.base import Pass, PassContext
from passes.shapes import node_output_shapes
from passes.taps import ACTIVATIONS, POOLINGS, is_parametric

CPM_PREFIX = "cpm/"  # every CPM node and initializer name starts with it
SELECT_MODES = ("first", "spread", "random")
INIT_MODES = ("random", "keep")

# Ops cloned as they are: they act per channel / per position, so a narrower channel dim is fine.
_AS_IS = (
    ACTIVATIONS
    | POOLINGS
    | {
        "LRN",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Abs",
        "Neg",
        "Exp",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Erf",
        "Floor",
        "Ceil",
        "Pad",
        "Cast",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceSum",
        "ReduceL2",
        "Concat",
        "Identity",
        "Dropout",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu")


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


def _resize_axis(values: np.ndarray, axis: int, n: int) -> np.ndarray:
    """`values` cut to (or repeated up to) `n` entries along `axis`."""
    if values.shape[axis] >= n:
        return np.take(values, np.arange(n), axis=axis)
    reps = np.arange(n) % values.shape[axis]
    return np.take(values, reps, axis=axis)


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

    def _copy_const(self, c: gs.Constant) -> gs.Constant:
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
        if op == "Conv":
            xs, attrs = self._conv(node, xs, attrs)
        elif op in ("Gemm", "MatMul") and is_parametric(node):
            xs = self._dense(node, xs, attrs)
        elif op in ("BatchNormalization", "InstanceNormalization"):
            xs = self._norm(node, xs)
        elif op in _ELEMENTWISE:
            self._match_channels(node, xs)
            xs = self._elementwise(node, xs)
        elif op == "Reshape":
            xs = self._reshape(node, xs)
        elif op == "Split":
            xs, attrs = self._split(node, xs, attrs)
        elif op == "Slice":
            xs = self._slice(node, xs)
        elif op == "Resize":
            xs = self._resize(node, xs)
        elif op in _AS_IS:
            xs = [self._copy_const(x) if isinstance(x, gs.Constant) else x for x in xs]
        else:
            raise self.fail(f"{op} on the way to the logits: the mirror pass cannot narrow it", node.name)
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

    def _conv(self, node, xs, attrs):
        x, w = xs[0], node.inputs[1]
        if not isinstance(w, gs.Constant):
            raise self.fail("Conv weight is not a constant", node.name)
        oc, _, *kernel = w.shape
        groups = int(attrs.get("group", 1))
        bb_in = int(node.inputs[0].shape[1])
        c_in = int(x.shape[1])
        if groups > 1 and groups == bb_in:  # depthwise: stays depthwise, channel multiplier kept
            g, c_out = c_in, c_in * (oc // groups)
            self.depthwise.add(node.name)
        else:
            c_out = self.num_classes if node.name in self.heads else min(self.opts["channels"], oc)
            c_out = self.overrides.get(node.name, c_out)
            g = math.gcd(groups, math.gcd(c_in, c_out))
        attrs["group"] = g
        fan_in = (c_in // g) * int(np.prod(kernel))
        name = f"cpm/{node.name}"
        new = [x, gs.Constant(f"{name}/weight", torch_uniform(self.rng, [c_out, c_in // g, *kernel], fan_in))]
        if len(xs) > 2 and xs[2] is not None:
            new.append(gs.Constant(f"{name}/bias", torch_uniform(self.rng, [c_out], fan_in)))
        return new, attrs

    def _match_channels(self, node, xs) -> None:
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
        raise self.fail(
            f"the CPM brings {a} and {b} channels to this {node.op}; no Conv on either side can be resized to match",
            node.name,
        )

    def _dense(self, node, xs, attrs):
        x, w = xs[0], node.inputs[1]
        if len(x.shape) != 2 or len(w.shape) != 2:
            raise self.fail("only 2-D dense layers can be narrowed", node.name)
        if node.op == "Gemm" and attrs.get("transA", 0):
            raise self.fail("Gemm with transA=1 cannot be narrowed", node.name)
        trans_b = node.op == "Gemm" and attrs.get("transB", 0)
        bb_out = int(w.shape[0] if trans_b else w.shape[1])
        f_in = int(x.shape[1])
        if node.name in self.heads:
            f_out = bb_out
        else:
            if self.dense_width is None:
                self.dense_width = f_in  # paper Eq. 1: C_l = C x FO^2, the flattened CPM tensor
            f_out = min(max(self.dense_width, self.num_classes), bb_out)
        name = f"cpm/{node.name}"
        shape = [f_out, f_in] if trans_b else [f_in, f_out]
        new = [x, gs.Constant(f"{name}/weight", torch_uniform(self.rng, shape, f_in))]
        if len(xs) > 2 and xs[2] is not None:
            b = node.inputs[2]
            bshape = list(b.shape) if isinstance(b, gs.Constant) else [bb_out]
            bshape = [f_out if d == bb_out else d for d in bshape]
            new.append(gs.Constant(f"{name}/bias", torch_uniform(self.rng, bshape, f_in)))
        return new

    def _norm(self, node, xs):
        c = int(xs[0].shape[1])
        if node.attrs.get("training_mode", 0):
            raise self.fail("BatchNormalization in training mode", node.name)
        fills = (1.0, 0.0, 0.0, 1.0)  # scale, bias, running mean, running var
        new = [xs[0]]
        for i, x in enumerate(xs[1:]):
            if not isinstance(x, gs.Constant):
                raise self.fail("normalization parameters are not constants", node.name)
            new.append(gs.Constant(f"cpm/{node.name}/p{i + 1}", np.full([c], fills[i], dtype=np.float32)))
        return new

    def _elementwise(self, node, xs):
        out_bb = node.outputs[0].shape
        var = next((x for x in xs if isinstance(x, gs.Variable)), None)
        if var is None:
            raise self.fail("elementwise op without a variable input", node.name)
        new = []
        for i, x in enumerate(xs):
            if not isinstance(x, gs.Constant):
                new.append(x)
                continue
            v = np.asarray(x.values)
            reset = layer_affine(node)  # the backbone node's layer bias/scale: fresh, not copied
            if reset is not None:
                v = np.full(v.shape, reset, dtype=v.dtype)
            off = len(out_bb) - v.ndim
            for a in range(v.ndim):
                ax = a + off
                if ax < 0 or v.shape[a] == 1:
                    continue
                bb, cp = out_bb[ax], var.shape[ax] if ax < len(var.shape) else None
                if v.shape[a] == bb and cp is not None and cp != bb:
                    v = _resize_axis(v, a, int(cp))
            new.append(gs.Constant(f"cpm/{node.name}/c{i}", np.ascontiguousarray(v)))
        return new

    def _split(self, node, xs, attrs):
        """A split along the channels (ShuffleNet v2's channel split) keeps its proportions."""
        rank = len(node.inputs[0].shape)
        axis = int(attrs.get("axis", 0)) % rank
        if axis != 1:
            return [self._copy_const(x) if isinstance(x, gs.Constant) else x for x in xs], attrs
        parts = len(node.outputs)
        if len(xs) > 1 and isinstance(xs[1], gs.Constant):
            sizes = [int(v) for v in np.asarray(xs[1].values)]
        elif "split" in attrs:
            sizes = [int(v) for v in attrs["split"]]
        else:
            sizes = [int(node.inputs[0].shape[1]) // parts] * parts
        c = int(xs[0].shape[1])
        if c < parts:
            raise self.fail(f"the CPM has {c} channels here, too few to split into {parts}", node.name)
        new = _proportional(sizes, c)
        attrs.pop("split", None)
        attrs.pop("num_outputs", None)
        return [xs[0], gs.Constant(f"cpm/{node.name}/split", np.array(new, dtype=np.int64))], attrs

    def _slice(self, node, xs):
        """A slice of the channels keeps its place: [s, e) of the backbone's channels becomes the
        proportional range of the CPM's (at least one channel)."""
        consts = [x for x in xs[1:] if x is not None and x.name]
        if any(not isinstance(x, gs.Constant) for x in consts):
            raise self.fail("Slice with computed bounds cannot be narrowed", node.name)
        rank = len(node.inputs[0].shape)
        starts, ends = (np.array(x.values, dtype=np.int64) for x in xs[1:3])
        axes = np.array(xs[3].values, dtype=np.int64) % rank if len(xs) > 3 and xs[3].name else np.arange(len(starts))
        steps = np.array(xs[4].values, dtype=np.int64) if len(xs) > 4 and xs[4].name else np.ones(len(starts), np.int64)
        starts, ends = starts.copy(), ends.copy()
        for i, ax in enumerate(axes):
            if ax != 1:
                continue
            bb, c = int(node.inputs[0].shape[1]), int(xs[0].shape[1])
            if steps[i] != 1:
                raise self.fail("Slice with a step along the channels cannot be narrowed", node.name)
            s, e = (int(np.clip(v + bb if v < 0 else v, 0, bb)) for v in (starts[i], ends[i]))
            new_s = min(s * c // bb, c - 1)
            starts[i], ends[i] = new_s, max(new_s + 1, e * c // bb)
        new = [xs[0], gs.Constant(f"cpm/{node.name}/starts", starts), gs.Constant(f"cpm/{node.name}/ends", ends)]
        return new + [self._copy_const(x) if isinstance(x, gs.Constant) else x for x in xs[3:]]

    def _resize(self, node, xs):
        """Resize keeps its scales; explicit output sizes get the CPM's channel count."""
        new = [xs[0]]
        for i, x in enumerate(xs[1:], start=1):
            if isinstance(x, gs.Constant) and i == 3 and x.shape and x.shape[0] == len(node.inputs[0].shape):
                sizes = np.array(x.values, dtype=np.int64)
                sizes[1] = int(xs[0].shape[1])
                new.append(gs.Constant(f"cpm/{node.name}/sizes", sizes))
            elif isinstance(x, gs.Constant):
                new.append(self._copy_const(x))
            elif x.name:
                raise self.fail("Resize with computed scales or sizes cannot be narrowed", node.name)
            else:
                new.append(x)
        return new

    def _reshape(self, node, xs):
        if not isinstance(node.inputs[1], gs.Constant):
            raise self.fail("Reshape with a computed shape cannot be narrowed", node.name)
        bb_in = [int(d) if isinstance(d, int) else d for d in node.inputs[0].shape]
        bb_out = list(node.outputs[0].shape)
        cp_in = list(xs[0].shape)
        target = np.array(node.inputs[1].values, dtype=np.int64)
        new_target = _narrow_reshape(bb_in, bb_out, cp_in, target)
        if new_target is None:
            raise self.fail(f"cannot map Reshape {bb_in} -> {bb_out} onto the CPM's {cp_in}", node.name)
        return [xs[0], gs.Constant(f"cpm/{node.name}/shape", new_target)]


_SHAPE_PRESERVING = ACTIVATIONS | {
    "BatchNormalization",
    "InstanceNormalization",
    "LRN",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Max",
    "Min",
    "Abs",
    "Neg",
    "Exp",
    "Erf",
    "Sqrt",
    "Reciprocal",
}


def _shape_preserved(node: gs.Node) -> list | None:
    """The output shape of an elementwise/per-channel node whose variable inputs all have one shape
    and whose constants broadcast into it without growing it; None when onnx must work it out."""
    if node.op not in _SHAPE_PRESERVING or len(node.outputs) != 1:
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


_PER_CHANNEL = ACTIVATIONS | {"BatchNormalization", "InstanceNormalization", "Add", "Sub", "Mul", "Div", "LRN"}


def _free_conv(t: gs.Variable) -> str | None:
    """Backbone name of the CPM Conv whose output reaches `t` through per-channel ops
    only (elementwise ops count only when their other inputs are constants)."""
    while t.inputs:
        node = t.inputs[0]
        if node.op == "Conv":
            return node.name[len(CPM_PREFIX) :]
        if node.op not in _PER_CHANNEL:
            return None
        if sum(isinstance(x, gs.Variable) for x in node.inputs) != 1:
            return None
        t = node.inputs[0]
    return None


def _proportional(sizes: list[int], total: int) -> list[int]:
    """`total` split into len(sizes) positive parts in the proportions of `sizes`."""
    whole = sum(sizes)
    out = [max(1, total * s // whole) for s in sizes]
    while sum(out) > total:  # take from the largest part
        out[out.index(max(out))] -= 1
    while sum(out) < total:
        out[out.index(min(out))] += 1
    return out


def _narrow_reshape(bb_in: list, bb_out: list, cp_in: list, target: np.ndarray) -> np.ndarray | None:
    """The CPM's Reshape target. Input and output dims of the backbone are matched in groups of equal
    product (dim 0, the batch, passes through); the group holding the channel dim is rebuilt from the
    CPM's channel count: a merge multiplies, a split takes, dim by dim, the largest divisor of what
    is left that also divides the backbone dim (the last dim takes the rest)."""
    if len(bb_in) < 2 or len(bb_out) < 1 or len(target) != len(bb_out):
        return None
    if bb_in[1:] == cp_in[1:]:
        return target
    ins, outs = bb_in[1:], bb_out[1:]
    if any(not isinstance(d, int) for d in ins + outs):
        return None
    # group dims: walk both lists, closing a group when the products agree
    groups, i, j = [], 0, 0
    while i < len(ins) or j < len(outs):
        gi, gj = [i], [j]
        pi, pj = ins[i] if i < len(ins) else 1, outs[j] if j < len(outs) else 1
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(ins):
                pi *= ins[i]
                gi.append(i)
                i += 1
            elif j < len(outs):
                pj *= outs[j]
                gj.append(j)
                j += 1
            else:
                return None
        groups.append(([a for a in gi if a < len(ins)], [b for b in gj if b < len(outs)]))
    new = [int(d) for d in outs]
    for gi, gj in groups:
        if not gj:
            continue
        if not gi:
            continue
        total = int(np.prod([cp_in[1 + a] for a in gi]))
        if total == int(np.prod([ins[a] for a in gi])):
            continue  # this group is not narrowed
        left = total
        for b in gj[:-1]:
            d = math.gcd(left, outs[b])
            new[b] = d
            left //= d
        new[gj[-1]] = left
    result = target.copy()
    result[1:] = new
    return result
