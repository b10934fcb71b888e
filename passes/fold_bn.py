"""Fold inference BatchNormalization into the Conv before it (pass `fold_bn`).

    y = scale * (conv(x, W) + b - mean) / sqrt(var + eps) + beta
      = conv(x, W * s) + (b - mean) * s + beta,          s = scale / sqrt(var + eps)

Computed in float64 and rounded once to float32, so the folded graph matches the original to about
1e-6 relative. A BatchNormalization is folded only when its input comes from a Conv whose output
nothing else reads and whose weights are constants; any other stays (the C backend lowers it as a
per-channel affine). Works on an `onnx.ModelProto`; the input model is not modified. `FoldBnPass`
folds the split's secure graph and gives it onnx's full check."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from passes.base import Pass, PassContext, check_graph


def fold_bn(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    readers: dict[str, int] = {}
    for node in g.node:
        for t in node.input:
            readers[t] = readers.get(t, 0) + 1
    producer = {o: node for node in g.node for o in node.output}

    removed = []
    for bn in [n for n in g.node if n.op_type == "BatchNormalization"]:
        conv = producer.get(bn.input[0])
        if (
            conv is None
            or conv.op_type != "Conv"
            or readers.get(bn.input[0], 0) != 1
            or bn.input[0] in graph_outputs
            or any(bn.output[1:])
        ):
            continue
        params = bn.input[1:5]
        if (
            not all(p in inits for p in params)
            or conv.input[1] not in inits
            or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits)
        ):
            continue
        scale, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in params)
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        if w.shape[0] != scale.shape[0]:
            raise FoldBnPass().fail(
                f"{scale.shape[0]} channels after Conv '{conv.name}' with {w.shape[0]} outputs", bn.name
            )
        has_bias = len(conv.input) > 2 and conv.input[2]
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else np.zeros(w.shape[0])
        s = scale / np.sqrt(var + eps)
        new_w = (w * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        new_b = ((b - mean) * s + beta).astype(np.float32)
        # fresh names: the original weights may be shared with another node
        base = conv.name or conv.output[0]
        w_name, b_name = f"{base}/folded_weight", f"{base}/folded_bias"
        g.initializer.extend([numpy_helper.from_array(new_w, w_name), numpy_helper.from_array(new_b, b_name)])
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        conv.output[0] = bn.output[0]
        removed.append(bn)

    for bn in removed:
        g.node.remove(bn)
    used = {t for n in g.node for t in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    # value_info of the removed conv outputs is stale
    live = {t for n in g.node for t in [*n.input, *n.output]}
    vis = [vi for vi in g.value_info if vi.name in live]
    del g.value_info[:]
    g.value_info.extend(vis)
    return out


def unfolded_count(model: onnx.ModelProto) -> int:
    """BatchNormalization nodes left in a model (for reports and tests)."""
    return sum(1 for n in model.graph.node if n.op_type == "BatchNormalization")


class FoldBnPass(Pass):
    name = "fold_bn"
    requires = ("split",)
    ensures = ("bn_folded",)
    form = "proto"

    def run(self, secure: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto:
        ctx.info["bn_before_fold"] = unfolded_count(secure)
        return fold_bn(secure)

    def check(self, secure: onnx.ModelProto, ctx: PassContext) -> None:
        check_graph(self, secure, "secure", full=True)  # with shape inference: the secure graph is small

    def describe(self, secure: onnx.ModelProto, ctx: PassContext) -> str:
        left = unfolded_count(secure)
        return f"{ctx.info['bn_before_fold'] - left} BatchNormalization folded, {left} left"


__all__ = ["FoldBnPass", "fold_bn", "unfolded_count"]
