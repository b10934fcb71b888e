"""What an output depends on: the reverse walk from some tensors to the nodes that compute them."""

from __future__ import annotations

import onnx


def upstream_nodes(graph: onnx.GraphProto, outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes of `graph` that `outputs` depend on, in graph order."""
    producer = {o: n for n in graph.node for o in n.output if o}
    needed, stack = set(), list(outputs)
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        if t in producer:
            stack.extend(i for i in producer[t].input if i)
    return [n for n in graph.node if any(o in needed for o in n.output)]
