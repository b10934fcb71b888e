"""Interpret an ONNX graph with torch ops so it can be trained, then write the trained values back.

The ONNX graph stays the single source of truth: nothing is translated to a hand-written module.
At construction the graph is compiled once into a flat list of closures (one per node, in
topological order, pruned to what the requested outputs need); `forward` just runs them over a dict
of tensors. Float initializers that nodes use as weights become `nn.Parameter`s, BatchNormalization
running statistics become buffers (updated in `train()` mode), everything else is a constant.
Freezing means frozen weights and frozen BatchNorm: a BatchNormalization whose scale and bias are not
trainable normalises by its running statistics and leaves them untouched, even in `train()` mode.
Nodes whose inputs are all constants (ConstantOfShape, Shape arithmetic, ...) are folded at build
time.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from mirrorc.errors import MirrorcError
from passes.upstream import upstream_nodes

# Float inputs in these (op, input index) slots are configuration, not weights: keep them constant.
_CONFIG_SLOTS = {
    ("Clip", 1),
    ("Clip", 2),
    ("Pad", 2),
    ("Resize", 1),
    ("Resize", 2),
    ("Dropout", 1),
    ("ConstantOfShape", 0),
}
# (op, input index) slots holding BatchNormalization running statistics: buffers, not parameters.
_BN_STAT_SLOTS = {("BatchNormalization", 3), ("BatchNormalization", 4)}

_ONNX_TO_TORCH_DTYPE = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    arr = np.asarray(arr)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr).copy()
    return torch.from_numpy(arr)


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


# --- op builders: each takes (attrs, opset, node) and returns fn(*inputs) -> output(s) -------------


def _spatial_pads(attrs: dict, nd: int) -> list[int]:
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    return pads


def _same_pads(in_sizes, kernel, strides, dilations, upper: bool) -> list[int]:
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(total - small if not upper else small)
        ends.append(small if not upper else total - small)
    return begins + ends


def _torch_pad(pads: list[int], nd: int) -> list[int]:
    """ONNX pads [b1..bn, e1..en] -> F.pad order (last dim first)."""
    out = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[i + nd]]
    return out


def _resolve_pads(attrs: dict, x: torch.Tensor, kernel, strides, dilations) -> list[int]:
    nd = len(kernel)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(x.shape[2:], kernel, strides, dilations, auto_pad == "SAME_UPPER")
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    return _spatial_pads(attrs, nd)


def _op_conv(attrs, opset, node):
    group = attrs.get("group", 1)

    def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        nd = w.dim() - 2
        kernel = list(attrs.get("kernel_shape", w.shape[2:]))
        strides = list(attrs.get("strides", [1] * nd))
        dilations = list(attrs.get("dilations", [1] * nd))
        pads = _resolve_pads(attrs, x, kernel, strides, dilations)
        fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        if pads[:nd] == pads[nd:]:
            return fn(x, w, b, strides, pads[:nd], dilations, group)
        return fn(F.pad(x, _torch_pad(pads, nd)), w, b, strides, 0, dilations, group)

    return conv


def _op_gemm(attrs, opset, node):
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)

    def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if trans_a:
            a = a.t()
        if alpha == 1.0 and beta == 1.0 and (c is None or c.dim() <= 1):
            # the common dense layer: one fused kernel
            return F.linear(a, b if trans_b else b.t(), c)
        y = alpha * (a @ (b.t() if trans_b else b))
        return y if c is None else y + beta * c

    return gemm


class _BatchNorm:
    """BatchNormalization as a callable object: OnnxModule sets its flags once the weights are known."""

    needs_training = True

    def __init__(self, eps: float, torch_momentum: float):
        self.eps, self.torch_momentum = eps, torch_momentum
        self.stats_are_buffers = False
        self.frozen = False  # set by OnnxModule: scale and bias not trainable -> inference mode always

    def __call__(
        self,
        x: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
        *,
        training: bool,
    ) -> torch.Tensor:
        if training and not self.frozen:
            # running statistics are updated in place only when they are the module's buffers
            tracked = self.stats_are_buffers
            return F.batch_norm(
                x, mean if tracked else None, var if tracked else None, scale, bias, True, self.torch_momentum, self.eps
            )
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, self.eps)


def _op_batchnorm(attrs, opset, node):
    # ONNX's momentum weights the old value, torch's the new one
    return _BatchNorm(attrs.get("epsilon", 1e-5), 1.0 - attrs.get("momentum", 0.9))


def _op_clip(attrs, opset, node):
    if opset < 11:
        lo, hi = attrs.get("min", None), attrs.get("max", None)
        return lambda x: torch.clamp(x, lo, hi)

    def clip(x: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> torch.Tensor:
        return torch.clamp(x, None if lo is None else lo.item(), None if hi is None else hi.item())

    return clip


def _op_prelu(attrs, opset, node):
    def prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        if slope.dim() == 1 and x.dim() > 2 and slope.shape[0] == x.shape[1]:
            slope = slope.reshape(1, -1, *([1] * (x.dim() - 2)))
        return torch.where(x >= 0, x, x * slope)

    return prelu


def _softmax_like(fn):
    def build(attrs: dict, opset: int, node: onnx.NodeProto) -> Callable[[torch.Tensor], torch.Tensor]:
        if opset < 13:
            axis = attrs.get("axis", 1)

            def old(x: torch.Tensor) -> torch.Tensor:  # opset < 13: coerce to 2-D at `axis`
                ax = axis % x.dim()
                flat = x.reshape(int(np.prod(x.shape[:ax])), -1)
                return fn(flat, 1).reshape(x.shape)

            return old
        axis = attrs.get("axis", -1)
        return lambda x: fn(x, axis)

    return build


def _pool_params(attrs, nd):
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1] * nd))
    dilations = list(attrs.get("dilations", [1] * nd))
    return kernel, strides, dilations


def _op_maxpool(attrs, opset, node):
    ceil = bool(attrs.get("ceil_mode", 0))
    if len(node.output) > 1 and node.output[1]:
        raise MirrorcError(f"torchgraph: node '{node.name}': MaxPool with an Indices output is not supported")

    def maxpool(x: torch.Tensor) -> torch.Tensor:
        nd = x.dim() - 2
        kernel, strides, dilations = _pool_params(attrs, nd)
        pads = _resolve_pads(attrs, x, kernel, strides, dilations)
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
        if pads[:nd] == pads[nd:] and all(2 * p <= k for p, k in zip(pads[:nd], kernel)):
            return fn(x, kernel, strides, pads[:nd], dilations, ceil)
        x = F.pad(x, _torch_pad(pads, nd), value=float("-inf"))
        return fn(x, kernel, strides, 0, dilations, ceil)

    return maxpool


def _op_avgpool(attrs, opset, node):
    ceil = bool(attrs.get("ceil_mode", 0))
    include_pad = bool(attrs.get("count_include_pad", 0))

    def avgpool(x: torch.Tensor) -> torch.Tensor:
        nd = x.dim() - 2
        kernel, strides, _ = _pool_params(attrs, nd)
        pads = _resolve_pads(attrs, x, kernel, strides, [1] * nd)
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        if not any(pads):
            return fn(x, kernel, strides, 0, ceil, True)
        if pads[:nd] == pads[nd:] and all(2 * p <= k for p, k in zip(pads[:nd], kernel)) and not ceil:
            return fn(x, kernel, strides, pads[:nd], ceil, include_pad)
        # asymmetric padding: sum over the zero-padded input, divide by the count of real elements
        tp = _torch_pad(pads, nd)
        total = fn(F.pad(x, tp), kernel, strides, 0, ceil, True)
        if include_pad:
            return total
        ones = F.pad(torch.ones_like(x[:1, :1]), tp)
        return total / fn(ones, kernel, strides, 0, ceil, True)

    return avgpool


def _op_lrn(attrs, opset, node):
    size, alpha = attrs["size"], attrs.get("alpha", 1e-4)
    beta, bias = attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    before = (size - 1) // 2

    def lrn(x: torch.Tensor) -> torch.Tensor:
        sq = (x * x).unsqueeze(1)  # [N, 1, C, H, W]: pool over channels
        sq = F.pad(sq, (0, 0, 0, 0, before, size - 1 - before))
        square_sum = F.avg_pool3d(sq, (size, 1, 1), stride=1).squeeze(1) * size
        return x / (bias + alpha / size * square_sum) ** beta

    return lrn


def _op_flatten(attrs, opset, node):
    axis = attrs.get("axis", 1)

    def flatten(x: torch.Tensor) -> torch.Tensor:
        ax = axis % x.dim() if x.dim() else 0
        return x.reshape(int(np.prod(x.shape[:ax])), -1)

    return flatten


def _op_reshape(attrs, opset, node):
    allowzero = attrs.get("allowzero", 0)
    static = attrs.get("shape")  # opset < 5

    def reshape(x: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        target = list(static) if shape is None else [int(v) for v in shape.tolist()]
        if not allowzero:
            target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return x.reshape(target)

    return reshape


def _op_transpose(attrs, opset, node):
    perm = attrs.get("perm")
    return lambda x: x.permute(*(perm if perm is not None else reversed(range(x.dim()))))


def _op_gather(attrs, opset, node):
    axis = attrs.get("axis", 0)

    def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ax = axis % x.dim()
        idx = torch.where(idx < 0, idx + x.shape[ax], idx).long()
        out = x.index_select(ax, idx.reshape(-1))
        return out.reshape(*x.shape[:ax], *idx.shape, *x.shape[ax + 1 :])

    return gather


def _op_argmax(attrs, opset, node):
    axis, keepdims = attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    last = bool(attrs.get("select_last_index", 0))

    def argmax(x: torch.Tensor) -> torch.Tensor:
        if last:
            flipped = x.flip(axis)
            return x.shape[axis] - 1 - flipped.argmax(axis, keepdim=keepdims)
        return x.argmax(axis, keepdim=keepdims)

    return argmax


def _op_dropout(attrs, opset, node):
    ratio_attr = attrs.get("ratio", 0.5)
    want_mask = len(node.output) > 1 and node.output[1]

    def dropout(
        x: torch.Tensor, ratio: torch.Tensor | None = None, training_mode: torch.Tensor | None = None, *, training: bool
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        p = ratio_attr if ratio is None else float(ratio)
        y = F.dropout(x, p, training) if training and p > 0 else x
        if want_mask:
            return y, (y != 0) if training else torch.ones_like(x, dtype=torch.bool)
        return y

    dropout.needs_training = True
    return dropout


def _op_squeeze(attrs, opset, node):
    static = attrs.get("axes")

    def squeeze(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        ax = static if axes is None else axes.tolist()
        if ax is None:
            return x.squeeze()
        ax = sorted((a % x.dim() for a in ax), reverse=True)
        for a in ax:
            x = x.squeeze(a)
        return x

    return squeeze


def _op_unsqueeze(attrs, opset, node):
    static = attrs.get("axes")

    def unsqueeze(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        ax = list(static if axes is None else axes.tolist())
        rank = x.dim() + len(ax)
        for a in sorted(a % rank for a in ax):
            x = x.unsqueeze(a)
        return x

    return unsqueeze


def _op_concat(attrs, opset, node):
    axis = attrs["axis"]
    return lambda *xs: torch.cat(xs, axis)


def _op_sum(attrs, opset, node):
    def total(*xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    return total


def _op_constant(attrs, opset, node):
    if "value" in attrs:
        value = _to_tensor(numpy_helper.to_array(attrs["value"]))
    elif "value_float" in attrs:
        value = torch.tensor(attrs["value_float"], dtype=torch.float32)
    elif "value_floats" in attrs:
        value = torch.tensor(attrs["value_floats"], dtype=torch.float32)
    elif "value_int" in attrs:
        value = torch.tensor(attrs["value_int"], dtype=torch.int64)
    elif "value_ints" in attrs:
        value = torch.tensor(attrs["value_ints"], dtype=torch.int64)
    else:
        raise MirrorcError(f"torchgraph: node '{node.name}': Constant without a supported value attribute")
    return lambda: value


def _op_constant_of_shape(attrs, opset, node):
    value = attrs.get("value")
    fill = _to_tensor(numpy_helper.to_array(value)) if value is not None else torch.zeros(1)

    def constant_of_shape(shape: torch.Tensor) -> torch.Tensor:
        return torch.full([int(v) for v in shape.tolist()], fill.reshape(-1)[0].item(), dtype=fill.dtype)

    return constant_of_shape


def _op_cast(attrs, opset, node):
    to = attrs["to"]
    if to not in _ONNX_TO_TORCH_DTYPE:
        raise MirrorcError(f"torchgraph: node '{node.name}': Cast to data type {to} is not supported")
    dtype = _ONNX_TO_TORCH_DTYPE[to]
    return lambda x: x.to(dtype)


def _op_pad(attrs, opset, node):
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise MirrorcError(f"torchgraph: node '{node.name}': Pad mode '{mode}' is not supported")

    def pad(
        x: torch.Tensor,
        pads: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        axes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if axes is not None:
            raise MirrorcError(f"torchgraph: node '{node.name}': Pad with axes is not supported")
        p = list(attrs["pads"]) if pads is None else [int(v) for v in pads.tolist()]
        v = attrs.get("value", 0.0) if value is None else float(value)
        return F.pad(x, _torch_pad(p, x.dim()), value=v)

    return pad


def _op_reduce_mean(attrs, opset, node):
    keepdims = bool(attrs.get("keepdims", 1))
    static = attrs.get("axes")

    def reduce_mean(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        ax = static if axes is None else axes.tolist()
        return x.mean(dim=list(ax) if ax is not None else list(range(x.dim())), keepdim=keepdims)

    return reduce_mean


def _simple(fn):
    return lambda attrs, opset, node: fn


OPS: dict[str, Callable] = {
    "Conv": _op_conv,
    "Gemm": _op_gemm,
    "MatMul": _simple(torch.matmul),
    "BatchNormalization": _op_batchnorm,
    "Relu": _simple(F.relu),
    "LeakyRelu": lambda a, o, n: functools.partial(F.leaky_relu, negative_slope=a.get("alpha", 0.01)),
    "Clip": _op_clip,
    "Sigmoid": _simple(torch.sigmoid),
    "Tanh": _simple(torch.tanh),
    "PRelu": _op_prelu,
    "MaxPool": _op_maxpool,
    "AveragePool": _op_avgpool,
    "GlobalAveragePool": _simple(lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)),
    "GlobalMaxPool": _simple(lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)),
    "LRN": _op_lrn,
    "Add": _simple(torch.add),
    "Sub": _simple(torch.sub),
    "Mul": _simple(torch.mul),
    "Div": _simple(torch.div),
    "Neg": _simple(torch.neg),
    "Sqrt": _simple(torch.sqrt),
    "Exp": _simple(torch.exp),
    "Sum": _op_sum,
    "Concat": _op_concat,
    "Flatten": _op_flatten,
    "Reshape": _op_reshape,
    "Transpose": _op_transpose,
    "Gather": _op_gather,
    "ArgMax": _op_argmax,
    "Softmax": _softmax_like(lambda x, ax: torch.softmax(x, ax)),
    "LogSoftmax": _softmax_like(lambda x, ax: torch.log_softmax(x, ax)),
    "Dropout": _op_dropout,
    "Identity": _simple(lambda x: x),
    "Squeeze": _op_squeeze,
    "Unsqueeze": _op_unsqueeze,
    "Constant": _op_constant,
    "ConstantOfShape": _op_constant_of_shape,
    "Shape": _simple(lambda x: torch.tensor(list(x.shape), dtype=torch.int64)),
    "Cast": _op_cast,
    "Pad": _op_pad,
    "ReduceMean": _op_reduce_mean,
}


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
            if node.op_type == "BatchNormalization":
                fn.stats_are_buffers = all(i in self._buffer_names for i in node.input[3:5])
                fn.frozen = trainable is not None and not any(
                    learnable[i].requires_grad for i in node.input[1:3] if i in learnable
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
        for _name, ins, outs, fn, needs_training in self._steps:
            args = [env[i] if i else None for i in ins]
            result = fn(*args, training=training) if needs_training else fn(*args)
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
