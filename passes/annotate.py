"""Partition annotations on the mirrored model (docs/ARCHITECTURE.md, "mirrornet.onnx"):
`mirrorc.world` (normal | secure) and `mirrorc.stage` on every node's metadata_props, and the
model metadata: format version, C, K, the taps, the mirror options and the source file's hash."""

from __future__ import annotations

import json

import onnx

from passes import contract
from passes.base import Pass, PassContext


def set_props(proto: onnx.NodeProto | onnx.ModelProto, props: dict[str, str]) -> None:
    """Set (replace) string metadata entries on a NodeProto or ModelProto."""
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)


def get_props(proto: onnx.NodeProto | onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


class AnnotatePass(Pass):
    name = "annotate"
    requires = ("mirrored",)
    ensures = ("annotated",)
    form = "proto"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto:
        world, stage = ctx.info["node_world"], ctx.info["node_stage"]
        for node in model.graph.node:
            if node.name not in world:
                raise self.fail("node has no world assigned by the mirror pass", node.name or node.op_type)
            set_props(node, {contract.META_WORLD: world[node.name], contract.META_STAGE: str(stage[node.name])})
        opts = ctx.info["options"]
        set_props(
            model,
            {
                contract.META_VERSION: contract.FORMAT_VERSION,
                contract.META_CHANNELS: str(opts["channels"]),
                contract.META_NUM_CLASSES: str(ctx.info["num_classes"]),
                contract.META_TAPS: json.dumps(ctx.info["taps_meta"]),
                contract.META_OPTIONS: json.dumps(opts),
                contract.META_SOURCE: json.dumps(ctx.info.get("source", {})),
            },
        )
        model.producer_name = "mirrorc"
        return model

    def check(self, model: onnx.ModelProto, ctx: PassContext) -> None:
        for node in model.graph.node:
            if get_props(node).get(contract.META_WORLD) not in contract.WORLDS:
                raise self.fail("node without mirrorc.world", node.name)
