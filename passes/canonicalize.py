"""Bring a loaded classifier into the one form the later passes handle.

Steps, in order:
1. convert to opset 17 when the model's default opset is outside 17..21 (onnx.version_converter);
2. infer shapes and fold constants (the model zoo builds its weights with ConstantOfShape; torch
   exports compute flatten shapes with Shape/Gather/Concat) with onnx-graphsurgeon, again until no
   Shape node folds (ShuffleNet's channel shuffle reshapes by the Shape of a Shape-sized Slice); a
   symbolic batch is replaced by PROBE_BATCH meanwhile so that shape arithmetic folds;
   then refuse attention (MatMul of two activations) by name, and turn a constant-index GatherND
   chain that only broadcasts a 1x1 map (dynamo's AdaptiveAvgPool2d) into Concats;
3. drop Dropout and Identity, turn Sum into (a chain of) Add;
4. find the logits: the input of a trailing Softmax/LogSoftmax (dropped) or the output itself;
   [N, K, 1, 1] logits get a Flatten so the logits are always [N, K];
5. prune everything the logits do not need, name every node uniquely;
6. make the batch symbolic ("N") when the graph allows it (Reshape shape constants that spell
   the batch out become 0 = "copy"); otherwise a fixed source batch is kept. A fixed batch made
   symbolic is `info["batch_relaxed"]` (the compile report says so);
7. infer shapes; any unknown dimension other than the batch on the way to the logits is an error.

That the canonical model computes the source's logits (the Softmax input, if there was one; its
name is `info["logits_in_source"]`) is checked in onnxruntime by tests/test_core_zoo.py and
tests/test_core_passes.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

from passes.base import Pass, PassContext, to_gs
from passes.errors import MirrorcError
from passes.load import default_opset, first_line
from passes.shapes import infer_graph

TARGET_OPSET = 17
MAX_OPSET = 21  # passes handle 17..21 (Squeeze/Unsqueeze/Reduce* axes as inputs, Split sizes as input)
_SOFTMAX = ("Softmax", "LogSoftmax")
PROBE_BATCH = 97  # stands in for a symbolic batch while shape arithmetic is folded (rarely a real dim)
_PASS_THROUGH = ("Dropout", "Identity")
_PRODUCTS = ("MatMul", "Einsum")  # of two activations: attention


class CanonicalizePass(Pass):
    name = "canonicalize"
    requires = ("loaded",)
    ensures = ("canonical", "shapes")
    form = "proto"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> gs.Graph:
        opset = default_opset(model)
        assert opset is not None, "the load pass (required) rejects a model without a default-domain opset"
        source_names = {t for n in model.graph.node for t in n.output} | {i.name for i in model.graph.input}
        if not TARGET_OPSET <= opset <= MAX_OPSET:
            try:
                model = version_converter.convert_version(model, TARGET_OPSET)
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise self.fail(f"cannot convert opset {opset} to {TARGET_OPSET}: {first}") from None
        graph = to_gs(model)
        graph.inputs = [t for t in graph.inputs if isinstance(t, gs.Variable)]  # IR-3: weights as inputs
        self._refuse_attention(graph)  # before folding: a transformer's graph is slow to fold
        x = graph.inputs[0]
        probing = not isinstance(x.shape[0], int)
        if probing:  # fold shape arithmetic (x.view(x.size(0), -1)) at a recognizable batch, then undo it
            x.shape = [PROBE_BATCH, *x.shape[1:]]
        self._fold_shape_arithmetic(graph)
        self._gathers_to_concat(graph)
        self._drop_pass_through(graph)
        self._sum_to_add(graph)
        logits, logits_in_source = self._find_logits(graph, source_names)
        graph.outputs = [logits]
        graph.cleanup().toposort()
        self._name_nodes(graph)
        relaxed = self._batch_symbolic(graph, probing)
        self._flatten_logits(graph)
        self._check_logits_rank(graph)
        self._check_dims(graph)
        logits = graph.outputs[0]
        ctx.info["input"] = {"name": graph.inputs[0].name, "shape": list(graph.inputs[0].shape)}
        ctx.info["logits"] = logits.name
        ctx.info["logits_in_source"] = logits_in_source
        ctx.info["num_classes"] = int(logits.shape[1])
        ctx.info["opset"] = graph.opset
        # a fixed source batch made symbolic: the model then runs on any batch (the report says so)
        ctx.info["batch_relaxed"] = relaxed
        return graph

    def describe(self, graph: gs.Graph, ctx: PassContext) -> str:
        relaxed = ctx.info.get("batch_relaxed")
        return "" if relaxed is None else f"fixed batch {relaxed} relaxed to N"

    def check(self, graph: gs.Graph, ctx: PassContext) -> None:
        if len(graph.outputs) != 1 or len(graph.outputs[0].shape) != 2:
            raise self.fail("logits are not one [N, K] tensor", graph.outputs[0].name)
        for node in graph.nodes:
            if node.op in _PASS_THROUGH + ("Sum",) + _SOFTMAX:
                raise self.fail(f"{node.op} left in the graph", node.name)

    # -- steps ---------------------------------------------------------------------------------

    def _fold_shape_arithmetic(self, graph: gs.Graph) -> None:
        """Fold constants, and Shape/Gather/Concat arithmetic down to constant Reshape targets. A Shape
        folds only once its input's shape is known, and that shape may itself depend on an earlier
        Shape (ShuffleNet's channel shuffle slices by a Shape-computed size, then reshapes by the
        Shape of the result): so infer and fold again until no Shape node is left or none folds."""
        shapes = sum(n.op == "Shape" for n in graph.nodes)
        while True:
            if shapes:
                infer_graph(graph, where=self.name)
            try:
                graph.fold_constants(error_ok=False).cleanup()
            except Exception as e:  # onnxruntime evaluates the constant subgraphs (a ConstantOfShape of -1)
                raise self.fail(f"constant folding failed: {first_line(e)}") from None
            left = sum(n.op == "Shape" for n in graph.nodes)
            if not left or left == shapes:
                return
            shapes = left

    def _refuse_attention(self, graph: gs.Graph) -> None:
        """A product of two activations (Q K^T, then scores V) is attention: the mirror pass narrows
        layers with weights, and a transformer has no channel axis for a CPM to copy."""
        graph.toposort()
        activations = {t.name for t in graph.inputs}  # tensors computed from the input (weights are not)
        for node in graph.nodes:
            if any(t.name in activations for t in node.inputs):
                activations.update(t.name for t in node.outputs)
            if node.op in _PRODUCTS and sum(t.name in activations for t in node.inputs) >= 2:
                raise self.fail(
                    f"{node.op} of two activations: attention (a transformer) is not supported; "
                    "mirrorc compiles convolutional classifiers",
                    node.name,
                )

    def _gathers_to_concat(self, graph: gs.Graph) -> None:
        """The dynamo exporter writes AdaptiveAvgPool2d(7) on a 1x1 map as Transpose -> GatherND (constant
        indices, all 0) -> Transpose -> ReduceMean: every output pixel is the one input pixel. Such a
        chain, checked by running it in numpy, becomes Concats of copies along H and W, which every
        pass already handles (the mirror pass narrows a Concat off the channel axis)."""
        for gather in [n for n in graph.nodes if n.op == "GatherND"]:
            chain = _broadcast_chain(gather)
            if chain is None:
                continue
            x, out, shape = chain
            rows = gs.Variable(f"{out.name}/row", dtype=out.dtype, shape=[x.shape[0], shape[1], 1, shape[3]])
            row = gs.Node("Concat", name=f"{gather.name}/row", attrs={"axis": 3}, inputs=[x] * shape[3], outputs=[rows])
            grid = gs.Node("Concat", name=f"{gather.name}/grid", attrs={"axis": 2}, inputs=[rows] * shape[2])
            producer = out.inputs[0]
            producer.outputs.clear()
            grid.outputs = [out]
            graph.nodes.extend([row, grid])
        graph.cleanup().toposort()

    def _drop_pass_through(self, graph: gs.Graph) -> None:
        for node in list(graph.nodes):
            if node.op not in _PASS_THROUGH:
                continue
            if len(node.outputs) > 1 and node.outputs[1].outputs:
                raise self.fail("Dropout mask is used by other nodes", node.name)
            src, dst = node.inputs[0], node.outputs[0]
            self._replace_uses(graph, dst, src)
            node.outputs.clear()
            node.inputs.clear()
        graph.cleanup()

    @staticmethod
    def _replace_uses(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> None:
        for consumer in list(old.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is old:
                    consumer.inputs[i] = new
        graph.outputs = [new if t is old else t for t in graph.outputs]

    def _sum_to_add(self, graph: gs.Graph) -> None:
        for node in list(graph.nodes):
            if node.op != "Sum":
                continue
            ins, out = list(node.inputs), node.outputs[0]
            if len(ins) == 1:
                self._replace_uses(graph, out, ins[0])
                node.outputs.clear()
                node.inputs.clear()
                continue
            acc = ins[0]
            for j, x in enumerate(ins[1:], start=1):
                last = j == len(ins) - 1
                dst = out if last else gs.Variable(f"{out.name}/partial{j}", dtype=out.dtype)
                add = gs.Node("Add", name=node.name if last else f"{node.name}/add{j}", inputs=[acc, x], outputs=[dst])
                graph.nodes.append(add)
                acc = dst
            node.outputs.clear()
            node.inputs.clear()
        graph.cleanup()

    def _find_logits(self, graph: gs.Graph, source_names: set[str]) -> tuple[gs.Tensor, str]:
        """The logits tensor, and the name of a source-model tensor holding the same numbers."""
        out = graph.outputs[0]
        # Reshapes after the softmax (a [N,K,1,1] -> [N,K] squeeze) are kept, the softmax is removed.
        chain: list[gs.Node] = []
        t = out
        while t.inputs and t.inputs[0].op in ("Flatten", "Reshape", "Squeeze"):
            chain.append(t.inputs[0])
            t = t.inputs[0].inputs[0]
        if t.inputs and t.inputs[0].op in _SOFTMAX:
            soft = t.inputs[0]
            src = soft.inputs[0]
            if chain and not (src.shape is not None and len(src.shape) == 2):
                chain[-1].inputs[0] = src
                logits = out
            else:
                logits = src
            soft.outputs.clear()
            soft.inputs.clear()
            # The opset converter may have put a Flatten before the softmax: look through it.
            while src.name not in source_names and src.inputs and src.inputs[0].op in ("Flatten", "Reshape", "Squeeze"):
                src = src.inputs[0].inputs[0]
            in_source = src.name
        else:
            logits = out
            in_source = out.name
        return logits, in_source

    @staticmethod
    def _flatten_logits(graph: gs.Graph) -> None:
        """[N, K, 1, 1] scores (a conv head) become [N, K] logits."""
        logits = graph.outputs[0]
        shape = logits.shape
        if shape is not None and len(shape) == 4 and list(shape[2:]) == [1, 1]:
            flat = gs.Variable(f"{logits.name}/flat", dtype=np.float32, shape=list(shape[:2]))
            graph.nodes.append(
                gs.Node("Flatten", name=f"{logits.name}/flatten", attrs={"axis": 1}, inputs=[logits], outputs=[flat])
            )
            graph.outputs = [flat]

    @staticmethod
    def _name_nodes(graph: gs.Graph) -> None:
        seen: set[str] = set()
        for i, node in enumerate(graph.nodes):
            if not node.name or node.name in seen:
                base = node.name or f"{node.op}_{i}"
                name, k = base, 1
                while name in seen:
                    name, k = f"{base}_{k}", k + 1
                node.name = name
            seen.add(node.name)

    def _batch_symbolic(self, graph: gs.Graph, probing: bool) -> int | None:
        """Infer shapes with batch 'N' if the graph allows it, else with its own fixed batch.
        `probing`: the source batch was symbolic and PROBE_BATCH stands in for it; it must go.
        Returns the source's fixed batch when it was made symbolic, else None."""
        x = graph.inputs[0]
        if x.shape is not None and len(x.shape) and isinstance(x.shape[0], int):
            batch = x.shape[0]
            # Reshape targets that spell the batch out: copy it instead (0). Under allowzero a 0 would be
            # an empty dim; a target without 0s means the same with allowzero off, so it is turned off
            # (the dynamo exporter writes a fixed batch's flatten as [1, 25088], allowzero=1)
            spelled = [
                i
                for i, n in enumerate(graph.nodes)
                if n.op == "Reshape"
                and isinstance(n.inputs[1], gs.Constant)
                and np.asarray(n.inputs[1].values).ndim == 1
                and len(n.inputs[1].values) > 1
                and n.inputs[1].values[0] == batch
                and (not n.attrs.get("allowzero", 0) or all(v != 0 for v in n.inputs[1].values))
            ]

            def edit(g: gs.Graph) -> None:
                g.inputs[0].shape = ["N", *g.inputs[0].shape[1:]]
                copies: dict[str, gs.Constant] = {}  # one copy per shape constant, even if shared
                for i in spelled:
                    node = g.nodes[i]
                    old = node.inputs[1]
                    if old.name not in copies:
                        target = np.array(old.values, dtype=np.int64)
                        target[0] = 0
                        copies[old.name] = gs.Constant(f"{old.name}/batch", target)
                    node.inputs[1] = copies[old.name]
                    node.attrs["allowzero"] = 0

            try:
                infer_graph(graph, where=self.name, edit=edit)
                pinned = _pinned_batch(graph)
            except MirrorcError:
                pinned = False  # inference failed with a symbolic batch: keep the fixed one
            if pinned is None and (probing or _unknown_dims(graph) is None):  # (unknown: named by _check_dims)
                edit(graph)
                return None if probing else batch
            if pinned and probing:
                raise self.fail(
                    f"node '{pinned.inputs[0].name}' fixes the batch size of '{pinned.name}' "
                    f"to {pinned.shape[0]}; give the input a fixed batch size"
                )
        if probing:
            # at the probe batch the graph must infer: if not, that error is the reason, not the batch
            infer_graph(graph, where=self.name)
            raise self.fail(
                f"input '{x.name}': the graph computes with its symbolic batch in a way that "
                "cannot stay symbolic; give the input a fixed batch size"
            )
        infer_graph(graph, where=self.name)
        return None

    def _check_logits_rank(self, graph: gs.Graph) -> None:
        logits = graph.outputs[0]
        if logits.shape is None or len(logits.shape) != 2:
            raise self.fail(f"logits '{logits.name}' have shape {logits.shape}; expected [N, K] class scores")

    def _check_dims(self, graph: gs.Graph) -> None:
        bad = _unknown_dims(graph)
        if bad is not None:
            raise self.fail(
                f"tensor '{bad.name}' has unknown shape {bad.shape} on the way to the logits "
                "(only the batch may be symbolic; give the input a fixed size)"
            )


_CHAIN_OPS = ("Transpose", "ReduceMean")  # around a broadcasting GatherND


def _broadcast_chain(gather: gs.Node) -> tuple[gs.Variable, gs.Variable, list[int]] | None:
    """(x, y, shape of y) when `gather` sits in a Transpose/GatherND/ReduceMean chain that maps an
    [N, C, 1, 1] tensor x to a 4-D y = x broadcast to [N, C, H, W]; else None. The chain is run in
    numpy on a probe x (batch 2 when symbolic) to prove it."""
    indices = gather.inputs[1]
    if not isinstance(indices, gs.Constant) or gather.attrs.get("batch_dims", 0) != 0:
        return None
    nodes = [gather]
    x = gather.inputs[0]
    while isinstance(x, gs.Variable) and x.inputs and x.inputs[0].op == "Transpose" and len(x.outputs) == 1:
        nodes.insert(0, x.inputs[0])
        x = x.inputs[0].inputs[0]
    if not isinstance(x, gs.Variable) or x.shape is None or len(x.shape) != 4 or list(x.shape[2:]) != [1, 1]:
        return None
    if not isinstance(x.shape[1], int):
        return None
    batch = x.shape[0] if isinstance(x.shape[0], int) else 2
    probe = np.arange(batch * x.shape[1], dtype=np.float32).reshape(batch, x.shape[1], 1, 1) + 1
    value = probe
    node = nodes[0]
    while True:
        step = _run_numpy(node, value)
        if step is None:
            return None
        value = step
        out = node.outputs[0]
        past_gather = node is gather or node not in nodes
        if past_gather and value.ndim == 4 and value.shape[:2] == probe.shape[:2]:
            if np.array_equal(value, np.broadcast_to(probe, value.shape)):
                return x, out, [x.shape[0], *value.shape[1:]]
            return None
        if len(out.outputs) != 1 or out.outputs[0].inputs[0] is not out:
            return None
        node = out.outputs[0]
        if node not in nodes and node.op not in _CHAIN_OPS:
            return None


def _run_numpy(node: gs.Node, x: np.ndarray) -> np.ndarray | None:
    """One node of a broadcast chain on a numpy value; None for anything else."""
    if node.op == "Transpose":
        perm = node.attrs.get("perm")
        return np.transpose(x, perm) if perm is not None and len(perm) == x.ndim else None
    if node.op == "GatherND":
        idx = np.asarray(node.inputs[1].values, dtype=np.int64)
        if idx.shape[-1] > x.ndim or np.any(idx < 0):
            return None
        try:
            return x[tuple(idx[..., i] for i in range(idx.shape[-1]))]
        except IndexError:
            return None
    if node.op == "ReduceMean":
        axes = node.attrs.get("axes")
        if len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
            axes = node.inputs[1].values.tolist()
        if axes is None:
            return None
        return np.mean(x, axis=tuple(int(a) for a in axes), keepdims=bool(node.attrs.get("keepdims", 1)))
    return None


def _pinned_batch(graph: gs.Graph) -> gs.Tensor | None:
    """First node output whose batch dim came out as a number although the input's is symbolic
    (e.g. a Resize with explicit sizes): such a graph cannot take a symbolic batch."""
    for node in graph.nodes:
        for t in node.outputs:
            if isinstance(t, gs.Variable) and t.shape is not None and len(t.shape) and isinstance(t.shape[0], int):
                return t
    return None


def _unknown_dims(graph: gs.Graph) -> gs.Tensor | None:
    """First tensor whose non-batch dims are not all known, or None."""
    for node in graph.nodes:
        for t in node.outputs:
            if isinstance(t, gs.Variable) and (t.shape is None or any(not isinstance(d, int) for d in t.shape[1:])):
                return t
    return None
