"""Interpret an ONNX graph with torch ops so it can be trained, then write the trained values back.

The ONNX graph stays the single source of truth: nothing is translated to a hand-written module.
At construction the graph is compiled once into a flat list of closures (one per node, in
topological order, pruned to what the requested outputs need); `forward` just runs them over a dict
of tensors. Float initializers that nodes use as weights become `nn.Parameter`s, BatchNormalization
running statistics become buffers (updated in `train()` mode), everything else is a constant.
Freezing means frozen weights and frozen BatchNorm: a BatchNormalization whose scale and bias are not
trainable normalises by its running statistics and leaves them untouched, even in `train()` mode.
Nodes whose inputs are all constants (ConstantOfShape, Shape arithmetic, ...) are folded at build
time. How each op runs is its `torch` part in the op registry (`passes/ops`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from mirrorc.errors import MirrorcError
from passes import ops
from passes.ops._torch import to_tensor as _to_tensor
from passes.upstream import upstream_nodes


def _slots(part: str) -> set[tuple[str, int]]:
    """(op, input index) pairs an op of the registry declares in `part` ("config_slots", "stat_slots")."""
    return {(op.name, i) for op in ops.all_ops() for i in getattr(op, part)}


# Float inputs in these slots are configuration, not weights: kept constant.
_CONFIG_SLOTS = _slots("config_slots")
# Slots holding running statistics (BatchNormalization's mean and var): buffers, not parameters.
_BN_STAT_SLOTS = _slots("stat_slots")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


# op -> builder (attrs, opset, node) -> fn(*inputs): the `torch` part of every op in the registry
OPS: dict[str, Callable] = {op.name: op.torch for op in ops.all_ops() if op.torch is not None}


class OnnxModule(torch.nn.Module):
    """An ONNX classifier as a trainable torch module (see the module docstring)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        *,
        outputs: list[str] | None = None,
        trainable: Callable[[str], bool] | None = None,
    ):
        super().__init__()
        self._model = model
        graph = model.graph
        opset = _opset(model)
        produced = {o for n in graph.node for o in n.output if o}
        inits = {t.name: t for t in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in inits and i.name not in produced]
        self.output_names = list(outputs) if outputs else [o.name for o in graph.output]

        known = set(self.input_names) | set(inits) | produced
        for name in self.output_names:
            if name not in known:
                raise MirrorcError(f"torchgraph: requested output '{name}' is not a tensor of graph '{graph.name}'")

        # What each initializer is, decided by how nodes use it.
        slots: dict[str, set] = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in inits:
                    slots.setdefault(name, set()).add((node.op_type, i))

        self.weights = torch.nn.ParameterList()
        self._param_names: list[str] = []
        self._buffer_names: list[str] = []  # initializer name per registered buffer stat{i}
        env0: dict[str, torch.Tensor] = {}
        for name, init in inits.items():
            arr = numpy_helper.to_array(init)
            used = slots.get(name, set())
            is_float = init.data_type == onnx.TensorProto.FLOAT
            if is_float and used and used <= _BN_STAT_SLOTS:
                self.register_buffer(f"stat{len(self._buffer_names)}", _to_tensor(arr.copy()))
                self._buffer_names.append(name)
            elif is_float and used and not (used & (_CONFIG_SLOTS | _BN_STAT_SLOTS)):
                p = torch.nn.Parameter(_to_tensor(arr.copy()))
                p.requires_grad_(trainable(name) if trainable else True)
                self.weights.append(p)
                self._param_names.append(name)
            else:
                env0[name] = _to_tensor(arr.copy())

        # Prune to the nodes the requested outputs need.
        nodes = upstream_nodes(graph, self.output_names)
        needed = set(self.output_names) | {i for n in nodes for i in n.input if i}

        # Compile: fold nodes with constant inputs now, keep a closure for the rest.
        learnable = dict(zip(self._param_names, self.weights))
        static = dict(env0)
        variable = set(self.input_names) | set(self._param_names) | set(self._buffer_names)
        self._steps: list[tuple] = []
        for node in nodes:
            builder = OPS.get(node.op_type)
            if builder is None or node.domain not in ("", "ai.onnx"):
                raise MirrorcError(
                    f"torchgraph: node '{node.name or node.output[0]}': op '{node.op_type}' "
                    "is not supported for training"
                )
            fn = builder(_attrs(node), opset, node)
            stat_slots = ops.get(node.op_type).stat_slots  # type: ignore[union-attr]
            if stat_slots:  # running statistics: tracked when they are buffers, frozen with the affine
                fn.stats_are_buffers = all(
                    node.input[i] in self._buffer_names for i in stat_slots if i < len(node.input)
                )
                fn.frozen = trainable is not None and not any(
                    learnable[i].requires_grad for i in node.input if i in learnable
                )
            needs_training = getattr(fn, "needs_training", False)
            ins = list(node.input)
            while ins and not ins[-1]:
                ins.pop()
            outs = [o for o in node.output]
            if not any(i in variable for i in ins if i) and not needs_training:
                with torch.no_grad():
                    result = fn(*[static[i] if i else None for i in ins])
                for o, r in zip(outs, result if isinstance(result, tuple) else (result,)):
                    if o:
                        static[o] = r
                continue
            variable.update(o for o in outs if o)
            self._steps.append((node.name or outs[0], ins, outs, fn, needs_training))
        self._constants = {k: v for k, v in static.items() if k in needed or any(k in s[1] for s in self._steps)}

    def _initial_env(self) -> dict[str, torch.Tensor]:
        env = dict(self._constants)
        env.update(zip(self._param_names, self.weights))
        env.update((name, getattr(self, f"stat{i}")) for i, name in enumerate(self._buffer_names))
        return env

    def forward(self, x: torch.Tensor, *more: torch.Tensor) -> dict[str, torch.Tensor]:
        env = self._initial_env()
        feeds = (x, *more)
        if len(feeds) != len(self.input_names):
            raise MirrorcError(
                f"torchgraph: graph takes {len(self.input_names)} input(s) {self.input_names}, got {len(feeds)}"
            )
        env.update(zip(self.input_names, feeds))
        training = self.training
        for name, ins, outs, fn, needs_training in self._steps:
            args = [env[i] if i else None for i in ins]
            try:
                result = fn(*args, training=training) if needs_training else fn(*args)
            except Exception as e:  # torch's message does not say which node (mirrorc check reports it)
                e.add_note(f"torchgraph: node '{name}':")
                raise
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                for o, r in zip(outs, result if isinstance(result, tuple) else (result,)):
                    if o:
                        env[o] = r
        return {name: env[name] for name in self.output_names}

    def write_back(self) -> onnx.ModelProto:
        """A copy of the model with the trained parameters and BatchNorm statistics in its initializers."""
        model = copy.deepcopy(self._model)
        values = {name: p.detach() for name, p in zip(self._param_names, self.weights)}
        values.update({name: getattr(self, f"stat{i}").detach() for i, name in enumerate(self._buffer_names)})
        for init in model.graph.initializer:
            if init.name in values:
                arr = values[init.name].to(torch.float32).cpu().numpy()
                init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), init.name))
        return model

    def named_onnx_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """(initializer name, parameter) pairs, for optimisers that treat some weights differently."""
        return list(zip(self._param_names, self.weights))
