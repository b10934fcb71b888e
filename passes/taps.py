"""Stages and taps of a canonical classifier.

A tap is a backbone tensor that every path from the input to the logits goes through (a
dominator), taken right after a block's nonlinearity or pooling. The rule:

1. Compute the chain of dominator tensors d_0 = input, ..., d_m = logits in one sweep: in a
   topological order of tensors and nodes, a tensor is a dominator iff no edge jumps over its
   position (every path must then pass through it).
2. Walk the chain. The nodes between d_i and d_(i+1) form segment i; a segment is parametric if it
   holds a Conv, or a Gemm/MatMul with a constant weight. A dominator is a tap candidate if the
   current stage already has a parametric op, it is not the logits, and its producer is an
   activation, a pooling, LRN, a residual Add (two non-constant inputs) or a Concat that does NOT
   take the previous dominator itself as an input (DenseNet's dense connectivity: those concats
   stay inside the stage). Pure reshapes (Flatten, Reshape, ...) are never candidates. Nor is:
   - a dominator that only fans out into two or more parametric ops which meet again in a Concat:
     the squeeze layer of a Fire module (SqueezeNet) is part of the module, not its boundary;
   - anything but a pooling after a dense Concat with no parametric op in between: DenseNet's
     BN+ReLU pre-activation of a transition belongs to the dense block.
3. When a parametric segment starts and the current stage has a parametric op and a candidate,
   the last candidate becomes a tap and the new stage begins. Parameterless stretches therefore
   merge into the next stage.

So LeNet-5 gets taps after pool1, pool2, fc1+relu, fc2+relu; a ResNet one per residual block (after
the block's ReLU; the last one after the global pooling); Inception/Fire one per module (the
Concat, or the pooling after it); DenseNet one per transition (after its pooling), none inside a
dense block. Stage k runs from tap k-1 (the input for k = 1) to tap k; the last stage (n+1 for n
taps) ends at the logits.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from passes import ops
from passes.base import Pass, PassContext


def is_parametric(node: gs.Node) -> bool:
    """Conv, or Gemm/MatMul with a constant weight: the layers the CPM narrows and counts."""
    if node.op == "Conv":
        return True
    return node.op in ("Gemm", "MatMul") and len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant)


def _variables(tensors) -> list[gs.Variable]:
    return [t for t in tensors if isinstance(t, gs.Variable)]


def dominators(graph: gs.Graph) -> tuple[list[gs.Tensor], dict[int, int]]:
    """(dominator chain from the input to the logits, position of each node by id). `graph` must be
    topologically sorted with one input and one output."""
    pos: dict[int, int] = {id(graph.inputs[0]): 0}
    node_pos: dict[int, int] = {}
    edges: list[tuple[int, int]] = []
    candidates: list[tuple[int, gs.Tensor]] = [(0, graph.inputs[0])]
    for i, node in enumerate(graph.nodes):
        p = 2 * i + 1
        node_pos[id(node)] = p
        for t in _variables(node.inputs):
            if id(t) in pos:
                edges.append((pos[id(t)], p))
        outs = _variables(node.outputs)
        for t in outs:
            pos[id(t)] = p + 1
        if len([t for t in outs if t.outputs or t in graph.outputs]) == 1:
            candidates.append((p + 1, next(t for t in outs if t.outputs or t in graph.outputs)))
    # reach[p]: the furthest end of any edge that starts before position p.
    edges.sort()
    chain, furthest, e = [], -1, 0
    for p, t in candidates:
        while e < len(edges) and edges[e][0] < p:
            furthest = max(furthest, edges[e][1])
            e += 1
        if furthest <= p:
            chain.append(t)
    return chain, node_pos


def _qualifies(t: gs.Tensor, previous: gs.Tensor, following: gs.Tensor | None) -> bool:
    if not t.inputs:
        return False
    if (
        len(t.outputs) >= 2
        and all(is_parametric(c) for c in t.outputs)
        and following is not None
        and following.inputs
        and following.inputs[0].op == "Concat"
    ):
        return False  # a Fire module's squeeze output: the module ends at the Concat
    node = t.inputs[0]
    if getattr(ops.get(node.op), "tap_role", None) in ("boundary", "pooling"):  # activation, LRN, pooling
        return True
    if node.op in ("Add", "Sum"):
        return len(_variables(node.inputs)) >= 2
    if node.op == "Concat":
        return not any(x is previous for x in node.inputs)
    return False


def find_taps(graph: gs.Graph) -> tuple[list[gs.Tensor], dict[str, int]]:
    """(taps in order, stage number of every node by name)."""
    chain, node_pos = dominators(graph)
    logits = graph.outputs[0]
    if chain[-1] is not logits:
        raise AssertionError("the logits must end the dominator chain")
    chain_pos = [0] + [node_pos[id(t.inputs[0])] + 1 for t in chain[1:]]
    param_pos = sorted(node_pos[id(n)] for n in graph.nodes if is_parametric(n))
    taps: list[gs.Tensor] = []
    stage_has_param, candidate, j = False, None, 0
    after_dense_concat = False  # no parametric op and no pooling since a dense-connectivity Concat
    for i in range(len(chain) - 1):
        # Is there a parametric node in segment i (between chain[i] and chain[i+1])?
        while j < len(param_pos) and param_pos[j] < chain_pos[i]:
            j += 1
        if j < len(param_pos) and param_pos[j] < chain_pos[i + 1]:
            if stage_has_param and candidate is not None:
                taps.append(candidate)
            candidate, stage_has_param, after_dense_concat = None, True, False
        d = chain[i + 1]
        producer = d.inputs[0].op if d.inputs else None
        if producer == "Concat" and any(x is chain[i] for x in d.inputs[0].inputs):
            after_dense_concat = True
        elif producer is not None and getattr(ops.get(producer), "tap_role", None) == "pooling":
            after_dense_concat = False
        following = chain[i + 2] if i + 2 < len(chain) else None
        if d is not logits and stage_has_param and not after_dense_concat and _qualifies(d, chain[i], following):
            candidate = d
    tap_pos = [node_pos[id(t.inputs[0])] + 1 for t in taps]
    stage_of, k = {}, 0
    for node in graph.nodes:
        p = node_pos[id(node)]
        while k < len(tap_pos) and tap_pos[k] < p:
            k += 1
        stage_of[node.name] = k + 1
    return taps, stage_of


class TapsPass(Pass):
    name = "taps"
    requires = ("canonical",)
    ensures = ("taps",)
    form = "gs"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        taps, stage_of = find_taps(graph)
        if not taps:
            raise self.fail(
                "found no tap: the model has a single parametric stage, so there is nothing for a CPM to mirror",
                graph.outputs[0].name,
            )
        ctx.info["taps"] = [t.name for t in taps]
        ctx.info["stage_of"] = stage_of
        ctx.info["num_stages"] = len(taps) + 1
        return graph

    def check(self, graph: gs.Graph, ctx: PassContext) -> None:
        params = {k: 0 for k in range(1, ctx.info["num_stages"] + 1)}
        for node in graph.nodes:
            if is_parametric(node):
                params[ctx.info["stage_of"][node.name]] += 1
        for k, count in params.items():
            if count == 0:
                raise self.fail(f"stage {k} has no parametric layer")
