"""Shape inference that does not copy the weights.

onnx's shape inference serializes the whole model; for the model zoo's VGG-19 (574 MB of weights)
that alone takes seconds. Shapes only depend on the initializers' dims, and data propagation only
on small integer constants, so we infer on a skeleton: large initializers become graph inputs of
the same type and shape (legal since IR 4), small ones are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

from passes.errors import MirrorcError

if TYPE_CHECKING:  # for the annotations only; infer_graph imports it where it runs
    import onnx_graphsurgeon as gs

_KEEP_BYTES = 4096  # initializers up to this size keep their data (shape constants, indices)

Shape = list  # of int, or str for a symbolic dim, or None for unknown


def _nbytes(t: onnx.TensorProto) -> int:
    n = int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
    return n * 4


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose large initializers are replaced by inputs of the same type and shape."""
    g = model.graph
    inputs = list(g.input)
    have = {i.name for i in inputs}
    small = []
    for t in g.initializer:
        if _nbytes(t) <= _KEEP_BYTES:
            small.append(t)
        elif t.name not in have:
            inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    graph = helper.make_graph(list(g.node), g.name, inputs, list(g.output), small, value_info=list(g.value_info))
    skel = helper.make_model(graph, opset_imports=list(model.opset_import))
    skel.ir_version = max(model.ir_version, 4)
    return skel


def dims_of(vi: onnx.ValueInfoProto) -> Shape | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def infer(model: onnx.ModelProto, *, where: str) -> onnx.ModelProto:
    """`model` with graph.value_info filled by onnx shape inference (strict: inconsistencies are
    errors naming `where`). The initializers are not copied."""
    skel = skeleton(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises InferenceError / ValidationError with multi-line text
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MirrorcError(f"{where}: shape inference failed: {first}") from None
    del model.graph.value_info[:]
    outputs = {o.name for o in model.graph.output}
    model.graph.value_info.extend(vi for vi in inferred.graph.value_info if vi.name not in outputs)
    # Outputs may have gained shapes too.
    by_name = {vi.name: vi for vi in inferred.graph.output}
    for o in model.graph.output:
        if o.name in by_name:
            o.CopyFrom(by_name[o.name])
    return model


def node_output_shapes(
    node: onnx.NodeProto, inputs: dict[str, tuple[int, Shape]], consts: list[onnx.TensorProto], opset: int
) -> list[tuple[int, Shape | None]]:
    """(elem_type, shape) of each output of one node, given (elem_type, shape) of its variable
    inputs and its constant inputs; shape None when inference left it unknown. Used to build the CPM
    one node at a time."""
    vis = [helper.make_tensor_value_info(n, et, s) for n, (et, s) in inputs.items()]
    outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = helper.make_graph([node], "one", vis, outs, consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = max(helper.find_min_ir_version_for([helper.make_opsetid("", opset)]), 8)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MirrorcError(f"node '{node.name}': shape inference failed: {first}") from None
    result = []
    for o in inferred.graph.output:
        result.append((o.type.tensor_type.elem_type, dims_of(o)))
    return result


def infer_graph(graph: gs.Graph, *, where: str, edit: Callable[[gs.Graph], object] | None = None) -> None:
    """Shape-infer an onnx-graphsurgeon graph in place without exporting its weights: a copy whose
    large constants are turned into graph inputs is exported and inferred, and the shapes are copied
    back by tensor name. `edit(copy)`, if given, changes the copy first (the same edit must then be
    applied to `graph` by the caller if the result is kept)."""
    import onnx_graphsurgeon as gs

    trial = graph.copy()  # copies nodes and tensors, not weights
    if edit is not None:
        edit(trial)
    for t in list(trial.tensors().values()):
        if isinstance(t, gs.Variable) and t not in trial.inputs:
            t.shape = None  # recompute every shape; stale ones would fight an edited batch
    standins: dict[int, gs.Variable] = {}
    for node in trial.nodes:
        for i, t in enumerate(node.inputs):
            if isinstance(t, gs.Constant) and int(np.prod(t.shape, dtype=np.int64)) * 4 > _KEEP_BYTES:
                if id(t) not in standins:
                    standins[id(t)] = gs.Variable(t.name, dtype=t.dtype, shape=list(t.shape))
                    trial.inputs.append(standins[id(t)])
                node.inputs[i] = standins[id(t)]
    proto = gs.export_onnx(trial, do_type_check=False)
    proto.ir_version = max(helper.find_min_ir_version_for(list(proto.opset_import)), 8)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MirrorcError(f"{where}: shape inference failed: {first}") from None
    infos = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t not in graph.inputs:
            vi = infos.get(t.name)
            t.shape = dims_of(vi) if vi is not None else None
            if vi is not None and vi.type.tensor_type.elem_type:
                t.dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
