"""Load an ONNX classifier from a file (external data included) and check it is one mirrorc takes:
a well-formed model, default-domain opset 7 or newer, exactly one image input (float32, rank 2 or
4; initializers listed as inputs, as old IR-3 files do, are not counted) and one output.

A hostile or broken file must end in one MirrorcError, never a traceback, a hang or an allocation
the file does not back: the read is bounded (a regular file under MAX_MODEL_BYTES), every name must
be UTF-8, every dtype known, every initializer must store what its dims declare (external data
inside the model's folder and inside its file), and onnxruntime must build and run the model on
zeros (its kernels check channels, groups and bias lengths that shape inference lets through)."""

from __future__ import annotations

import hashlib
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from passes.base import Pass, PassContext
from passes.errors import MirrorcError
from passes.shapes import skeleton

MIN_OPSET = 7
MIN_IR_VERSION = 3  # the first with opset_import; onnx.checker takes older files, onnxruntime does not
MAX_MODEL_BYTES = 2 << 30  # protobuf's own limit for one message; bigger weights go in external data
MAX_INPUT_ELEMENTS = 1 << 28  # a validation run's input (1 GiB of float32): no classifier needs more
_KNOWN_DTYPES = frozenset(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}
_PACKED_4BIT = frozenset(
    getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2") if hasattr(TensorProto, n)
)
_TENSOR_DATA = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return None


def image_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (IR-3 files list every weight as an input too)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def first_line(e: BaseException) -> str:
    """An exception's first non-empty line (onnx and onnxruntime raise multi-line or empty texts)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def read_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """The model in `path` with its external data, checked as the module docstring says, or a
    MirrorcError naming the file and the field, node or tensor at fault."""
    path = Path(path)
    where = f"load: file '{path}'"
    try:
        st = os.stat(path)  # follows a symlink: its target is what would be read
    except FileNotFoundError:
        raise MirrorcError(f"{where}: no such file") from None
    except OSError as e:
        raise MirrorcError(f"{where}: cannot open: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
        raise MirrorcError(f"{where}: not a regular file ({kind})")
    if st.st_size > MAX_MODEL_BYTES:
        raise MirrorcError(f"{where}: {st.st_size} bytes, over the {MAX_MODEL_BYTES} a model file may have")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MODEL_BYTES + 1)  # bounded even if the file grows meanwhile
    except OSError as e:
        raise MirrorcError(f"{where}: cannot read: {e.strerror}") from None
    if len(data) > MAX_MODEL_BYTES:
        raise MirrorcError(f"{where}: over the {MAX_MODEL_BYTES} bytes a model file may have")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf DecodeError on a non-ONNX or truncated file
        raise MirrorcError(f"{where}: not a readable ONNX model ({first_line(e)})") from None
    del data
    if not model.graph.node:
        raise MirrorcError(f"{where}: not an ONNX model (no graph nodes)")
    _check_utf8(model, where)
    if not MIN_IR_VERSION <= model.ir_version <= onnx.IR_VERSION:
        raise MirrorcError(
            f"{where}: ir_version {model.ir_version} is outside the IR versions onnx {onnx.__version__} "
            f"reads ({MIN_IR_VERSION}..{onnx.IR_VERSION})"
        )
    opset = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset is None or not MIN_OPSET <= opset <= newest:
        raise MirrorcError(f"{where}: default-domain opset {opset} is outside {MIN_OPSET}..{newest}")
    others = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if others:
        raise MirrorcError(f"{where}: operators from custom domain(s) {', '.join(others)} are not supported")
    _check_dtypes(model, where)
    _load_tensor_data(model, path, where)
    try:
        onnx.checker.check_model(skeleton(model))  # weights' dims are checked, not their bytes
    except Exception as e:
        raise MirrorcError(f"{where}: invalid ONNX model: {first_line(e)}") from None
    validate_in_onnxruntime(model, where)
    return model


def _check_utf8(message: Any, where: str) -> None:  # Any: onnx's protobuf messages share no typed base
    """Every string field must decode: protobuf hands an invalid UTF-8 string over as bytes."""
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            if isinstance(message, TensorProto):
                continue  # a tensor's only message fields are segment and external_data: strings
            for sub in value if field.is_repeated else [value]:
                _check_utf8(sub, where)
        elif field.type == field.TYPE_STRING:
            for s in value if field.is_repeated else [value]:
                if not isinstance(s, str):
                    owner = getattr(message, "name", "") if isinstance(getattr(message, "name", ""), str) else ""
                    at = f" of {type(message).__name__} '{owner}'" if owner else f" of a {type(message).__name__}"
                    raise MirrorcError(f"{where}: field '{field.name}'{at} is not valid UTF-8: {s!r}")
    if isinstance(message, TensorProto):
        for entry in message.external_data:
            _check_utf8(entry, where)


def _check_dtypes(model: onnx.ModelProto, where: str) -> None:
    g = model.graph
    for t in g.initializer:
        if t.data_type not in _KNOWN_DTYPES:
            raise MirrorcError(f"{where}: initializer '{t.name}': unknown data_type {t.data_type}")
    for vi in (*g.input, *g.output, *g.value_info):
        et = vi.type.tensor_type.elem_type
        if vi.type.HasField("tensor_type") and et and et not in _KNOWN_DTYPES:
            raise MirrorcError(f"{where}: tensor '{vi.name}': unknown elem_type {et}")
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type not in _KNOWN_DTYPES:
                raise MirrorcError(
                    f"{where}: node '{node.name}' attribute '{a.name}': unknown data_type {a.t.data_type}"
                )
            if a.name == "to" and node.op_type in ("Cast", "CastLike") and a.i not in _KNOWN_DTYPES:
                raise MirrorcError(f"{where}: node '{node.name}': Cast to unknown data type {a.i}")


def _declared(t: TensorProto, where: str) -> tuple[int, int]:
    """(elements, bytes) the tensor's dims and dtype declare; Python ints, so 2^62 does not wrap."""
    if any(d < 0 for d in t.dims):
        raise MirrorcError(f"{where}: initializer '{t.name}': negative dimension in dims {list(t.dims)}")
    n = math.prod(int(d) for d in t.dims)
    if t.data_type in _PACKED_4BIT:
        return n, (n + 1) // 2
    if t.data_type == TensorProto.STRING:
        return n, 0
    return n, n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def _stored_elements(t: TensorProto) -> int | None:
    """Elements the tensor's typed data field holds; None when no field is set."""
    for name in _TENSOR_DATA[1:]:
        values = getattr(t, name)
        if len(values):
            if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
                return len(values) // 2
            if t.data_type in _PACKED_4BIT:
                return 2 * len(values)  # two per int32 slot (the last may hold one: checked as >=)
            return len(values)
    return None


def _load_tensor_data(model: onnx.ModelProto, path: Path, where: str) -> None:
    """Check that each initializer stores what its dims declare before anything allocates it, then
    read the external data (from files inside the model's folder only)."""
    folder = path.resolve().parent
    external = False
    for t in model.graph.initializer:
        elements, nbytes = _declared(t, where)
        what = f"{where}: initializer '{t.name}' (dims {list(t.dims)}, {elements} elements)"
        if t.data_location == TensorProto.EXTERNAL:
            _check_external(t, folder, nbytes, where)
            external = True
        elif t.HasField("raw_data") or t.raw_data:
            if len(t.raw_data) != nbytes:
                raise MirrorcError(f"{what}: raw_data holds {len(t.raw_data)} bytes, the dims declare {nbytes}")
        else:
            stored = _stored_elements(t)
            if stored is None or (stored != elements and not (t.data_type in _PACKED_4BIT and stored == elements + 1)):
                raise MirrorcError(f"{what}: {stored or 0} elements are stored")
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(folder))
        except Exception as e:
            raise MirrorcError(f"{where}: external data: {first_line(e)}") from None


def _check_external(t: TensorProto, folder: Path, nbytes: int, where: str) -> None:
    what = f"{where}: initializer '{t.name}'"
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if not location or os.path.isabs(location):
        raise MirrorcError(f"{what}: external data location '{location}' is not a path relative to the model")
    target = (folder / location).resolve()
    if not target.is_relative_to(folder):
        raise MirrorcError(f"{what}: external data '{location}' points outside the model's folder")
    try:
        st = os.stat(target)
    except OSError:
        raise MirrorcError(f"{where}: external data missing: '{location}' (initializer '{t.name}')") from None
    if not stat.S_ISREG(st.st_mode):
        raise MirrorcError(f"{what}: external data '{location}' is not a regular file")
    try:
        offset, length = int(info.get("offset", "0")), int(info.get("length", str(nbytes)))
    except ValueError:
        raise MirrorcError(f"{what}: external data offset/length are not integers") from None
    if length != nbytes:
        raise MirrorcError(f"{what}: external data length {length}, the dims declare {nbytes} bytes")
    if offset < 0 or offset + length > st.st_size:
        raise MirrorcError(
            f"{what}: external data offset {offset} + length {length} is past the end of "
            f"'{location}' ({st.st_size} bytes)"
        )


def validate_in_onnxruntime(model: onnx.ModelProto, where: str) -> None:
    """onnxruntime must create a session on the model and run it once on zeros at batch 1 (its
    kernels refuse what shape inference lets through: wrong in-channels, group 0, bias length).
    Runs on the weight-free skeleton with all-zero weights, unoptimized so errors name our nodes;
    np.zeros maps untouched zero pages, so big weights cost no memory."""
    import onnxruntime as ort

    skel = skeleton(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(skel.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise MirrorcError(f"{where}: onnxruntime refuses the model: {_ort_reason(e)}") from None
    feeds: dict[str, np.ndarray] = {}
    inits = {t.name for t in model.graph.initializer}
    kept = {t.name for t in skel.graph.initializer}  # (IR 3 lists them as inputs too: they keep their values)
    for vi in skel.graph.input:
        if vi.name in kept:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            return  # not a tensor of known rank: session creation was all that can be checked
        given = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if vi.name not in inits and given and given[0] is None:
            given[0] = 1  # the batch
        dims = [d for d in given if d is not None]
        if len(dims) != len(given):
            return  # a symbolic non-batch dim: canonicalize names it
        size = math.prod(dims)  # Python ints: a declared 2^40 x 2^40 does not wrap
        if vi.name not in inits and size > MAX_INPUT_ELEMENTS:
            raise MirrorcError(
                f"{where}: input '{vi.name}' has shape {dims}: {size} elements, over {MAX_INPUT_ELEMENTS}"
            )
        feeds[vi.name] = np.zeros(dims, dtype=helper.tensor_dtype_to_np_dtype(tt.elem_type))
    try:
        session.run(None, feeds)
    except Exception as e:
        raise MirrorcError(f"{where}: onnxruntime cannot run the model: {_ort_reason(e)}") from None


def _ort_reason(e: Exception) -> str:
    """onnxruntime's message without its '[ONNXRuntimeError] : 1 : FAIL :' prefix and source paths."""
    text = first_line(e)
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    return text


class LoadPass(Pass):
    name = "load"
    ensures = ("loaded",)
    form = "proto"

    def run(self, ir: object, ctx: PassContext) -> onnx.ModelProto:  # `ir` unused: the first pass reads a file
        if ctx.source is None:
            raise MirrorcError("load: no model file given (PassContext.source is None)")
        path = Path(ctx.source)
        model = read_model(path)
        self._check_io(model, path)
        ctx.info["source"] = {"file": str(path), "sha256": sha256_file(path)}
        return model

    def _check_io(self, model: onnx.ModelProto, path: Path) -> None:
        ins = image_inputs(model)
        if len(ins) != 1:
            names = ", ".join(i.name for i in ins) or "none"
            raise MirrorcError(f"load: file '{path}': expected one image input, found {len(ins)} ({names})")
        t = ins[0].type.tensor_type
        if not ins[0].type.HasField("tensor_type") or t.elem_type != onnx.TensorProto.FLOAT:
            raise MirrorcError(
                f"load: file '{path}': input '{ins[0].name}' is not float32 "
                f"(type {onnx.TensorProto.DataType.Name(t.elem_type) if t.elem_type else 'unknown'})"
            )
        rank = len(t.shape.dim) if t.HasField("shape") else None
        if rank not in (2, 4):
            raise MirrorcError(
                f"load: file '{path}': input '{ins[0].name}' has rank {rank}; expected [N, C, H, W] or [N, D]"
            )
        if len(model.graph.output) != 1:
            raise MirrorcError(
                f"load: file '{path}': expected one output (the class scores), found {len(model.graph.output)}"
            )
        out = model.graph.output[0].type.tensor_type
        if out.elem_type not in (0, onnx.TensorProto.FLOAT):  # 0: type left to inference
            raise MirrorcError(
                f"load: file '{path}': output '{model.graph.output[0].name}' is not float32 class "
                f"scores (type {onnx.TensorProto.DataType.Name(out.elem_type)})"
            )
