"""Split an annotated mirrornet.onnx into the two worlds (pass `split`).

    normal, secure = split(mirrornet)    # the split and fold_bn passes

`SplitPass` takes the mirrornet and hands on the secure graph (`ctx.info["normal"]` holds the
normal one); `split` runs it and `FoldBnPass` for callers that want both halves (attacks, tests).

- `normal`: the nodes annotated `mirrorc.world = normal`; outputs `backbone_logits` then
  `mirrorc_tap1..n` (the selected channels only), symbolic batch kept; holds only the initializers
  its nodes read, so no CPM weight.
- `secure`: the nodes annotated `secure`; inputs `mirrorc_tap1..n` (`[1, *shape]`) and
  `backbone_logits` (`[1, K]`); the single output `label` (int64 `[1]`; the evaluation-only
  `mirrornet_logits` stays an inner tensor); BatchNormalization folded into the preceding Conv
  (by the fold_bn pass that follows).

See docs/ARCHITECTURE.md ("mirrornet.onnx", "The secure graph")."""

from __future__ import annotations

import json

import onnx
from onnx import TensorProto, helper

from passes import contract
from passes.base import Pass, PassContext, PassManager, check_graph
from passes.errors import MirrorcError
from passes.fold_bn import FoldBnPass
from passes.mirror import is_cpm
from passes.verify import MIRRORNET_FACTS

# model metadata the normal world may see (tap layout, not the CPM)
_NORMAL_META = (contract.META_VERSION, contract.META_NUM_CLASSES, contract.META_TAPS)


def _err(msg: str) -> MirrorcError:
    return SplitPass().fail(msg)


def _world(node: onnx.NodeProto) -> str:
    for p in node.metadata_props:
        if p.key == contract.META_WORLD:
            if p.value not in ("normal", "secure"):
                break
            return p.value
    raise _err(f"node '{node.name}': 'mirrorc.world' metadata is missing or not normal|secure")


def _taps(model: onnx.ModelProto) -> list[dict]:
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        taps = sorted(json.loads(meta[contract.META_TAPS]), key=lambda t: t["index"])
        for k, t in enumerate(taps, 1):
            if t["index"] != k or t["selected"] != contract.tap_name(k):
                raise ValueError(f"tap {k} is {t['index']}/{t['selected']}")
            t["shape"] = [int(d) for d in t["shape"]]
        return taps
    except KeyError:
        raise _err("model metadata 'mirrorc.taps' is missing (not a mirrorc MirrorNet)") from None
    except (ValueError, TypeError) as e:
        raise _err(f"model metadata 'mirrorc.taps' is malformed ({e})") from None


def _sub_model(src: onnx.ModelProto, nodes, inputs, outputs, name: str, meta_keys) -> onnx.ModelProto:
    """A model of `nodes` with only the initializers they read."""
    used = {t for n in nodes for t in n.input}
    inits = [i for i in src.graph.initializer if i.name in used]
    graph = helper.make_graph(list(nodes), name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=list(src.opset_import), producer_name="mirrorc")
    model.ir_version = src.ir_version
    for p in src.metadata_props:
        if p.key in meta_keys:
            model.metadata_props.add(key=p.key, value=p.value)
    return model


def _value_info(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}


def split_worlds(mirrornet: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(normal, secure) of an annotated mirrornet, BatchNorm not folded; the input is not modified."""
    taps = _taps(mirrornet)
    g = mirrornet.graph
    init_names = {i.name for i in g.initializer}
    tap_names = [t["selected"] for t in taps]
    normal_nodes = [n for n in g.node if _world(n) == "normal"]
    secure_nodes = [n for n in g.node if _world(n) == "secure"]
    out_names = [o.name for o in g.output]
    if contract.BACKBONE_LOGITS not in out_names or contract.LABEL not in out_names:
        raise _err(f"mirrornet outputs must include 'label' and 'backbone_logits', got {out_names}")

    # one way only: normal nodes never read a secure tensor, secure nodes read only the taps and
    # the backbone logits from the normal world
    normal_made = {o for n in normal_nodes for o in n.output}
    secure_made = {o for n in secure_nodes for o in n.output}
    for n in normal_nodes:
        bad = [t for t in n.input if t in secure_made]
        if bad:
            raise _err(f"node '{n.name}': normal node reads secure tensor '{bad[0]}'")
    crossing = set(tap_names) | {contract.BACKBONE_LOGITS}
    for n in secure_nodes:
        for t in n.input:
            if t and t not in secure_made and t not in init_names and t not in crossing:
                raise _err(f"node '{n.name}': secure node reads '{t}', which is neither a tap nor backbone_logits")
    for t in [*tap_names, contract.BACKBONE_LOGITS]:
        if t not in normal_made:
            raise _err(f"tensor '{t}' is not produced by a normal-world node")

    k = contract.declared_num_classes(mirrornet, SplitPass.name) or 0
    if not k:  # shape inference over the whole model only when the metadata is missing
        logits_vi = _value_info(mirrornet).get(contract.BACKBONE_LOGITS)
        k = logits_vi.type.tensor_type.shape.dim[-1].dim_value if logits_vi is not None else 0
    if not k:
        raise _err("number of classes unknown (metadata 'mirrorc.num_classes')")

    # normal world: symbolic batch kept
    batch = "N"
    in_vi = [i for i in g.input if i.name not in init_names]
    if in_vi and in_vi[0].type.tensor_type.shape.dim:
        d0 = in_vi[0].type.tensor_type.shape.dim[0]
        batch = d0.dim_param or d0.dim_value or "N"
    normal_outputs = [helper.make_tensor_value_info(contract.BACKBONE_LOGITS, TensorProto.FLOAT, [batch, k])]
    normal_outputs += [
        helper.make_tensor_value_info(t["selected"], TensorProto.FLOAT, [batch, *t["shape"]]) for t in taps
    ]
    normal = _sub_model(mirrornet, normal_nodes, in_vi, normal_outputs, f"{g.name}_normal", _NORMAL_META)
    leaked = [i.name for i in normal.graph.initializer if is_cpm(i.name)]
    if leaked:
        raise _err(f"CPM initializer '{leaked[0]}' is read by a normal-world node")

    # secure world: batch 1
    secure_inputs = [helper.make_tensor_value_info(t["selected"], TensorProto.FLOAT, [1, *t["shape"]]) for t in taps]
    secure_inputs.append(helper.make_tensor_value_info(contract.BACKBONE_LOGITS, TensorProto.FLOAT, [1, k]))
    secure_outputs = [helper.make_tensor_value_info(contract.LABEL, TensorProto.INT64, [1])]
    meta = (contract.META_VERSION, contract.META_CHANNELS, contract.META_NUM_CLASSES, contract.META_TAPS)
    secure = _sub_model(mirrornet, secure_nodes, secure_inputs, secure_outputs, f"{g.name}_secure", meta)
    return normal, secure


class SplitPass(Pass):
    name = "split"
    requires = ("verified",)
    ensures = ("split",)
    form = "proto"

    def run(self, mirrornet: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto:
        normal, secure = split_worlds(mirrornet)
        ctx.info["normal"] = normal
        return secure

    def check(self, secure: onnx.ModelProto, ctx: PassContext) -> None:
        # structural checks here; the full one (shape inference) runs on the folded secure graph in
        # fold_bn, and the backbone's was the mirrornet's own verification (its size makes it slow)
        check_graph(self, ctx.info["normal"], "normal", full=False)
        check_graph(self, secure, "secure", full=False)

    def describe(self, secure: onnx.ModelProto, ctx: PassContext) -> str:
        return f"normal world {len(ctx.info['normal'].graph.node)} nodes, secure world {len(secure.graph.node)}"


def split(mirrornet: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(normal, secure) of a mirrornet.onnx, BatchNorm folded: the split and fold_bn passes."""
    ctx = PassContext(facts=set(MIRRORNET_FACTS))
    secure = PassManager([SplitPass(), FoldBnPass()]).run(mirrornet, ctx)
    return ctx.info["normal"], secure
