"""Load an ONNX classifier from a file (external data included) and check it is one mirrorc takes:
a well-formed model, default-domain opset 7 or newer, exactly one image input (float32, rank 2 or
4; initializers listed as inputs, as old IR-3 files do, are not counted) and one output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx

from passes.base import Pass, PassContext
from passes.errors import MirrorcError
from passes.shapes import skeleton

MIN_OPSET = 7


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


class LoadPass(Pass):
    name = "load"
    ensures = ("loaded",)
    form = "proto"

    def run(self, ir: object, ctx: PassContext) -> onnx.ModelProto:  # `ir` unused: the first pass reads a file
        if ctx.source is None:
            raise MirrorcError("load: no model file given (PassContext.source is None)")
        path = Path(ctx.source)
        if not path.is_file():
            raise MirrorcError(f"load: file '{path}': no such file")
        try:
            model = onnx.load(str(path))  # also reads external data from beside the file
        except FileNotFoundError as e:
            raise MirrorcError(f"load: file '{path}': external data missing: {e.filename or e}") from None
        except Exception as e:  # protobuf DecodeError on a non-ONNX or truncated file, etc.
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "should be stored in" in reason:  # onnx's wording for a missing external-data file
                raise MirrorcError(f"load: file '{path}': external data missing: {reason}") from None
            raise MirrorcError(f"load: file '{path}': not a readable ONNX model ({reason})") from None
        if not model.graph.node:
            raise MirrorcError(f"load: file '{path}': not an ONNX model (no graph nodes)")
        opset = default_opset(model)
        if opset is None or opset < MIN_OPSET:
            raise MirrorcError(f"load: file '{path}': default-domain opset {opset} is older than {MIN_OPSET}")
        others = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
        if others:
            raise MirrorcError(
                f"load: file '{path}': operators from custom domain(s) {', '.join(others)} are not supported"
            )
        try:
            onnx.checker.check_model(skeleton(model))  # weights' dims are checked, not their bytes
        except Exception as e:
            reason = str(e).strip().splitlines()[0]
            raise MirrorcError(f"load: file '{path}': invalid ONNX model: {reason}") from None
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
