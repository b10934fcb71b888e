"""Verify the partition of an annotated mirrornet.onnx (docs/ARCHITECTURE.md invariants):

- every node has `mirrorc.world` = normal | secure;
- no secure node feeds a normal node (checked edge by edge; the failure names the edge);
- the only graph outputs computed in the secure world are `label` and the evaluation-only
  `mirrornet_logits`; the outputs are exactly label, backbone_logits, mirrornet_logits;
- the model passes `onnx.checker.check_model(full_check=True)` — run on a skeleton whose large
  initializers are inputs of the same shape (shapes and types are what the full check infers), plus
  a byte-count check of every initializer, so VGG-19's 574 MB of weights are not serialized.
"""

from __future__ import annotations

import numpy as np
import onnx

from passes import contract
from passes.annotate import get_props
from passes.base import Pass, PassContext
from passes.shapes import skeleton

# what a mirrornet.onnx carries by its contract (docs/ARCHITECTURE.md), also after training, which
# changes only initializers: the facts a pass context starts from when handed one
MIRRORNET_FACTS = ("annotated", "verified")
OUTPUTS = list(contract.OUTPUTS)
SECURE_OUTPUTS = {contract.LABEL, contract.MIRRORNET_LOGITS}


def check_partition(model: onnx.ModelProto) -> None:
    """Raise MirrorcError('verify: ...') naming the first violation."""
    p = VerifyPass()
    world: dict[str, str] = {}  # tensor -> world of its producer (collected first: any node order)
    node_world: list[str] = []
    for node in model.graph.node:
        w = get_props(node).get(contract.META_WORLD)
        if w not in contract.WORLDS:
            raise p.fail(f"mirrorc.world is {w!r}, expected normal or secure", node.name)
        node_world.append(w)
        for o in node.output:
            world[o] = w
    for node, w in zip(model.graph.node, node_world):
        for x in node.input:
            if w == "normal" and world.get(x) == "secure":
                raise p.fail(
                    f"secure tensor '{x}' feeds normal node '{node.name}' (edge {x} -> {node.name})", node.name
                )
    names = [o.name for o in model.graph.output]
    if names != OUTPUTS:
        raise p.fail(f"graph outputs are {names}, expected {OUTPUTS}")
    for name in names:
        if world.get(name) == "secure" and name not in SECURE_OUTPUTS:
            raise p.fail(f"secure tensor '{name}' is a graph output")


def _check_initializer_sizes(model: onnx.ModelProto) -> None:
    p = VerifyPass()
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or not t.HasField("raw_data"):
            continue
        n = int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
        item = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        if len(t.raw_data) != n * item:
            raise p.fail(
                f"initializer '{t.name}' holds {len(t.raw_data)} bytes, its shape {list(t.dims)} needs {n * item}"
            )


def check_full(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(skeleton(model), full_check=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VerifyPass().fail(f"onnx checker: {first}") from None
    _check_initializer_sizes(model)


class VerifyPass(Pass):
    name = "verify"
    requires = ("annotated",)
    ensures = ("verified",)
    form = "proto"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto:
        check_partition(model)
        check_full(model)
        return model
