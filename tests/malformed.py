"""A seeded corpus of malformed ONNX classifiers (issue 13), written at test time, never committed.

`write_corpus(folder, seed)` mutates one small valid classifier (Conv/Relu/MaxPool x2, Flatten, Gemm,
Softmax) in the ways the issue lists and returns one `Case` per file. A case `must_fail` when no
reading of the file is a classifier mirrorc could take; its `reason` is a regular expression the
one-line error must match (the real cause: the checker's, shape inference's or onnxruntime's own
words, or the field named). Cases that may go either way (a bit flip in weight bytes, an opset that
converts) only have to end cleanly: exit 0, or exit 2 with one line.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 10
SIDE = 12  # input side; the second conv's map is SIDE/2 square


@dataclass
class Case:
    category: str
    name: str
    path: Path
    must_fail: bool
    reason: str  # regex the error line must match (case-insensitive); "" when the file may be accepted


def base_model(batch: int | str = "N", opset: int = 17) -> onnx.ModelProto:
    """The valid classifier every case starts from."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.3, shape).astype(np.float32)

    half = SIDE // 2
    inits = [
        numpy_helper.from_array(w(4, 1, 3, 3), "conv1.w"),
        numpy_helper.from_array(w(4), "conv1.b"),
        numpy_helper.from_array(w(4, 4, 3, 3), "conv2.w"),
        numpy_helper.from_array(w(4), "conv2.b"),
        numpy_helper.from_array(w(CLASSES, 4 * half * half), "fc.w"),
        numpy_helper.from_array(w(CLASSES), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "malformed-base",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [batch, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _set_attr(node: onnx.NodeProto, attr: onnx.AttributeProto) -> None:
    kept = [a for a in node.attribute if a.name != attr.name]
    del node.attribute[:]
    node.attribute.extend([*kept, attr])


def _edit(fn: Callable[[onnx.ModelProto], None], batch: int | str = "N") -> bytes:
    model = base_model(batch)
    fn(model)
    return model.SerializeToString()


# Each builder returns (name, bytes, must_fail, reason) tuples.
Built = list[tuple[str, bytes, bool, str]]


def _truncations(rng: random.Random) -> Built:
    data = base_model().SerializeToString()
    cuts = sorted({rng.randrange(1, len(data) - 1) for _ in range(80)} | {1, 8, len(data) - 1})
    return [(f"cut{c}", data[:c], True, r"not a readable ONNX model|no graph nodes|opset|invalid") for c in cuts]


def _bit_flips(rng: random.Random) -> Built:
    data = base_model().SerializeToString()
    out = []
    for i in range(80):
        flipped = bytearray(data)
        for _ in range(1 + i % 3):
            pos = rng.randrange(len(flipped))
            flipped[pos] ^= 1 << rng.randrange(8)
        out.append((f"flip{i}", bytes(flipped), False, ""))
    return out


def _bad_dtypes(rng: random.Random) -> Built:
    out: Built = []
    for code in (999, 77, 0, 17, 1 << 20):
        for init in ("conv1.w", "fc.b"):

            def set_dtype(m: onnx.ModelProto, init: str = init, code: int = code) -> None:
                _init(m, init).data_type = code

            out.append((f"init-{init}-dtype{code}", _edit(set_dtype), True, rf"{init}|data.?type|type|{code}"))

        def input_dtype(m: onnx.ModelProto, code: int = code) -> None:
            m.graph.input[0].type.tensor_type.elem_type = code

        out.append((f"input-dtype{code}", _edit(input_dtype), True, rf"input 'x'|elem.?type|type|{code}"))
    for code in (TensorProto.INT8, TensorProto.DOUBLE, TensorProto.FLOAT16):

        def int8(m: onnx.ModelProto, code: int = code) -> None:  # weights whose dtype the graph cannot take
            t = _init(m, "conv2.w")
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(arr.astype(helper.tensor_dtype_to_np_dtype(code)), "conv2.w"))

        out.append((f"conv2-weights-{TensorProto.DataType.Name(code)}", _edit(int8), True, r"conv2|type"))
    return out


def _bad_shapes(rng: random.Random) -> Built:
    out: Built = []

    def rank3(m: onnx.ModelProto) -> None:
        del m.graph.input[0].type.tensor_type.shape.dim[1]

    out.append(("input-rank3", _edit(rank3), True, r"input 'x'.*rank|rank"))

    def dims_data_mismatch(m: onnx.ModelProto) -> None:
        t = _init(m, "conv1.w")
        t.dims[0] = 5  # 5x1x3x3 declared, 4x1x3x3 stored

    out.append(("init-dims-vs-data", _edit(dims_data_mismatch), True, r"conv1\.w"))

    def negative_dim(m: onnx.ModelProto) -> None:
        _init(m, "fc.b").dims[0] = -10

    out.append(("init-negative-dim", _edit(negative_dim), True, r"fc\.b"))

    def transposed_gemm(m: onnx.ModelProto) -> None:  # transB dropped: [144] x [10, 144] does not multiply
        _set_attr(_node(m, "fc"), helper.make_attribute("transB", 0))

    out.append(("gemm-transposed-weight", _edit(transposed_gemm), True, r"fc|Gemm|shape|dimension"))
    for side in (SIDE + 2, SIDE * 2):

        def fc_mismatch(m: onnx.ModelProto, side: int = side) -> None:  # wrong input side for the dense layer
            m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = side
            m.graph.input[0].type.tensor_type.shape.dim[3].dim_value = side

        for batch in ("N", 1):
            out.append((f"input-side{side}-batch{batch}", _edit(fc_mismatch, batch), True, r"fc|Gemm|dimension|shape"))

    def bias_len(m: onnx.ModelProto) -> None:
        _init(m, "conv2.b").CopyFrom(numpy_helper.from_array(np.zeros(7, np.float32), "conv2.b"))

    out.append(("conv-bias-length", _edit(bias_len), True, r"conv2|bias|shape|dimension"))

    def in_channels(m: onnx.ModelProto) -> None:
        _init(m, "conv2.w").CopyFrom(numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "conv2.w"))

    for batch in ("N", 1):
        out.append((f"conv-in-channels-b{batch}", _edit(in_channels, batch), True, r"conv2|channel|shape|dimension"))

    def rank1_logits(m: onnx.ModelProto) -> None:  # logits flattened to [K] (batch folded away)
        shape = numpy_helper.from_array(np.array([-1], np.int64), "flat1")
        m.graph.initializer.append(shape)
        softmax = _node(m, "softmax")
        softmax.input[0] = "logits1d"
        _set_attr(softmax, helper.make_attribute("axis", 0))
        m.graph.node.insert(
            len(m.graph.node) - 1, helper.make_node("Reshape", ["logits", "flat1"], ["logits1d"], name="to1d")
        )
        m.graph.output[0].CopyFrom(helper.make_tensor_value_info("prob", TensorProto.FLOAT, [CLASSES]))

    out.append(("logits-rank1", _edit(rank1_logits, 1), True, r"logits|rank|\[N, K\]"))
    return out


def _cycles(rng: random.Random) -> Built:
    out: Built = []

    def relu_loop(m: onnx.ModelProto) -> None:
        _node(m, "conv2").input[0] = "r2"  # conv2 reads relu2, which reads conv2

    out.append(
        ("cycle-conv2-relu2", _edit(relu_loop), True, r"cycle|topolog|sort|not output of any previous|relu2|conv2")
    )

    def self_loop(m: onnx.ModelProto) -> None:
        _node(m, "relu1").input[0] = "r1"

    out.append(("cycle-self", _edit(self_loop), True, r"cycle|topolog|sort|not output of any previous|relu1"))

    def long_loop(m: onnx.ModelProto) -> None:
        _node(m, "conv1").input[0] = "f"  # the whole backbone in a ring

    out.append(("cycle-long", _edit(long_loop), True, r"cycle|topolog|sort|not output of any previous|conv1|input"))
    return out


def _dangling(rng: random.Random) -> Built:
    out: Built = []
    for node, slot in (("relu1", 0), ("conv2", 1), ("fc", 2), ("softmax", 0)):

        def dangle(m: onnx.ModelProto, node: str = node, slot: int = slot) -> None:
            _node(m, node).input[slot] = f"nowhere_{node}"

        out.append((f"dangling-{node}-in{slot}", _edit(dangle), True, rf"nowhere_{node}|{node}"))

    def output_nowhere(m: onnx.ModelProto) -> None:
        m.graph.output[0].name = "no_such_output"

    out.append(("dangling-output", _edit(output_nowhere), True, r"no_such_output"))

    def duplicate_output(m: onnx.ModelProto) -> None:
        _node(m, "relu2").output[0] = "r1"  # two producers of r1

    out.append(("duplicate-producer", _edit(duplicate_output), True, r"r1|relu|duplicate|SSA|unique"))
    return out


def _huge(rng: random.Random) -> Built:
    out: Built = []
    for dims in ([1 << 31, 1 << 31], [1 << 62], [1 << 20, 1 << 20, 1 << 10]):

        def no_data(m: onnx.ModelProto, dims: list[int] = dims) -> None:  # declared, stored nowhere
            t = TensorProto(name="fc.b", data_type=TensorProto.FLOAT, dims=dims)
            _init(m, "fc.b").CopyFrom(t)

        tag = "x".join(str(d) for d in dims)
        out.append((f"init-nodata-{tag}", _edit(no_data), True, r"fc\.b"))

    def big_weight(m: onnx.ModelProto) -> None:  # the dense layer's weight declared 2^62 elements
        t = TensorProto(name="fc.w", data_type=TensorProto.FLOAT, dims=[1 << 31, 1 << 31])
        _init(m, "fc.w").CopyFrom(t)

    out.append(("init-nodata-fc.w", _edit(big_weight), True, r"fc\.w"))
    for side in (1 << 20, 1 << 31, 1 << 40):

        def huge_input(m: onnx.ModelProto, side: int = side) -> None:
            for d in (2, 3):
                m.graph.input[0].type.tensor_type.shape.dim[d].dim_value = side

        out.append((f"input-side-{side}", _edit(huge_input), True, r"input 'x'|fc|Gemm|dimension|shape|size"))
    return out


def _versions(rng: random.Random) -> Built:
    out: Built = []
    for ir in (0, 1, 2, -1, 99, 1 << 40):

        def set_ir(m: onnx.ModelProto, ir: int = ir) -> None:
            m.ir_version = ir

        out.append((f"ir{ir}", _edit(set_ir), True, r"ir_version"))
    for opset in (1, 6, 99, 10000, -3):

        def set_opset(m: onnx.ModelProto, opset: int = opset) -> None:
            m.opset_import[0].version = opset

        out.append((f"opset{opset}", _edit(set_opset), True, r"opset"))
    for opset in (9, 11, 13, 21):  # supported, converted: accepted or refused in one line
        model = base_model(opset=opset)
        out.append((f"opset{opset}-ok", model.SerializeToString(), False, ""))

    def no_default_domain(m: onnx.ModelProto) -> None:
        m.opset_import[0].domain = "com.example"

    out.append(("opset-custom-only", _edit(no_default_domain), True, r"opset"))
    return out


def _attributes(rng: random.Random) -> Built:
    out: Built = []
    cases: list[tuple[str, str, onnx.AttributeProto, str]] = [
        ("stride0", "conv1", helper.make_attribute("strides", [0, 0]), r"conv1|stride"),
        ("stride-neg", "conv2", helper.make_attribute("strides", [-1, 1]), r"conv2|stride"),
        ("pool-stride0", "pool1", helper.make_attribute("strides", [0, 2]), r"pool1|stride"),
        ("group0", "conv2", helper.make_attribute("group", 0), r"conv2|group"),
        ("group3", "conv2", helper.make_attribute("group", 3), r"conv2|group|channel"),
        ("autopad-garbage", "conv1", helper.make_attribute("auto_pad", "GARBAGE"), r"conv1|auto_pad|GARBAGE"),
        ("softmax-axis5", "softmax", helper.make_attribute("axis", 5), r"softmax|axis"),
        ("softmax-axis-neg9", "softmax", helper.make_attribute("axis", -9), r"softmax|axis"),
        ("flatten-axis7", "flatten", helper.make_attribute("axis", 7), r"flatten|axis"),
        ("pads-wrong-length", "conv1", helper.make_attribute("pads", [1, 1, 1]), r"conv1|pads"),
        ("pads-negative", "conv2", helper.make_attribute("pads", [-5, -5, -5, -5]), r"conv2|pad|shape|dimension"),
        ("dilations0", "conv1", helper.make_attribute("dilations", [0, 0]), r"conv1|dilation"),
        ("kernel-shape-mismatch", "conv1", helper.make_attribute("kernel_shape", [5, 5]), r"conv1|kernel"),
        (
            "pool-kernel-too-big",
            "pool1",
            helper.make_attribute("kernel_shape", [SIDE * 4, SIDE * 4]),
            r"pool1|kernel|shape|dimension",
        ),
        ("attr-wrong-type", "conv1", helper.make_attribute("strides", 1.5), r"conv1|stride|attribute"),
        ("unknown-attr", "relu1", helper.make_attribute("bogus", 3), r"relu1|bogus|attribute"),
    ]
    for tag, node, attr, reason in cases:

        def set_it(m: onnx.ModelProto, node: str = node, attr: onnx.AttributeProto = attr) -> None:
            _set_attr(_node(m, node), attr)

        for batch in ("N", 1):
            out.append((f"{tag}-b{batch}", _edit(set_it, batch), True, reason))

    def kernel_larger(m: onnx.ModelProto) -> None:  # a 15x15 kernel on the 6x6 map, no padding
        _init(m, "conv2.w").CopyFrom(numpy_helper.from_array(np.zeros((4, 4, 15, 15), np.float32), "conv2.w"))
        conv = _node(m, "conv2")
        _set_attr(conv, helper.make_attribute("kernel_shape", [15, 15]))
        _set_attr(conv, helper.make_attribute("pads", [0, 0, 0, 0]))

    for batch in ("N", 1):
        out.append(
            (f"kernel-larger-than-input-b{batch}", _edit(kernel_larger, batch), True, r"conv2|kernel|shape|dimension")
        )

    def unknown_op(m: onnx.ModelProto) -> None:
        _node(m, "relu1").op_type = "NoSuchOp"

    out.append(("unknown-op", _edit(unknown_op), True, r"NoSuchOp"))
    return out


def _names(rng: random.Random) -> Built:
    """Names that are not valid UTF-8, written into the serialized bytes (protobuf refuses to set them)."""
    out: Built = []
    data = base_model().SerializeToString()
    for target, junk in ((b"conv1.w", b"\xff\xfe\xfdconv"), (b"r1", b"\xc3\x28"), (b"fc", b"\xed\xa0\x80")):
        # same length keeps every enclosing length prefix right
        out.append(
            (
                f"non-utf8-{target.decode()}",
                data.replace(target, junk[: len(target)].ljust(len(target), b"\x80")),
                True,
                r"UTF-8|utf|decode|name|readable",
            )
        )
    xname = data.replace(b"\n\x01x", b"\n\x01\xff")  # the input's name field "x" (also the Conv's input)
    out.append(("non-utf8-input-name", xname, True, r"UTF-8|utf|decode|name|readable"))
    return out


def _external(rng: random.Random, folder: Path) -> list[tuple[str, Callable[[Path], None], bool, str]]:
    """External data: the file has to be written with its data beside it, so these are writers."""
    out: list[tuple[str, Callable[[Path], None], bool, str]] = []
    outside = folder.parent / f"{folder.name}-outside.bin"

    def pointing(location: str, offset: int = 0, length: int | None = None) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            m = base_model()
            t = _init(m, "fc.w")
            raw = t.raw_data or numpy_helper.to_array(t).tobytes()
            t.ClearField("float_data")
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            entries = {
                "location": location,
                "offset": str(offset),
                "length": str(length if length is not None else len(raw)),
            }
            for k, v in entries.items():
                t.external_data.add(key=k, value=v)
            if not location.startswith("/") and ".." not in location and "missing" not in location:
                (path.parent / location).write_bytes(
                    raw[: max(0, len(raw) - 8)] if location.endswith("short.bin") else raw
                )
            path.write_bytes(m.SerializeToString())

        return write

    outside.write_bytes(b"\0" * 8000)
    out.append(("ext-dotdot", pointing(f"../{outside.name}"), True, r"external data|fc\.w|outside|\.\."))
    out.append(("ext-absolute", pointing(str(outside)), True, r"external data|fc\.w|outside|absolute"))
    out.append(("ext-etc-passwd", pointing("/etc/passwd", length=64), True, r"external data|fc\.w|outside|absolute"))
    out.append(("ext-missing", pointing("missing-weights.bin"), True, r"external data|missing|fc\.w"))
    out.append(("ext-short", pointing("ext-short.bin"), True, r"external data|fc\.w|length|size|short"))
    out.append(
        (
            "ext-offset-past-end",
            pointing("ext-offset.bin", offset=1 << 40),
            True,
            r"external data|fc\.w|offset|length|size",
        )
    )
    out.append(("ext-ok", pointing("ext-ok.bin"), False, ""))
    return out


def _special_files(folder: Path) -> list[tuple[str, Callable[[Path], None], bool, str]]:
    def symlink_zero(path: Path) -> None:
        path.symlink_to("/dev/zero")

    def directory(path: Path) -> None:
        path.mkdir()

    def fifo(path: Path) -> None:
        os.mkfifo(path)

    def empty(path: Path) -> None:
        path.write_bytes(b"")

    return [
        ("symlink-dev-zero", symlink_zero, True, r"regular file|not a file"),
        ("directory", directory, True, r"regular file|not a file|directory|no such file|is a directory"),
        ("fifo", fifo, True, r"regular file|not a file"),
        ("empty", empty, True, r"no graph nodes|empty|not a readable"),
    ]


def write_corpus(folder: Path, seed: int = 0) -> list[Case]:
    """Write every case's file under `folder` (created) and return the cases, seeded."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    builders: dict[str, Callable[[random.Random], Built]] = {
        "truncation": _truncations,
        "bit flip": _bit_flips,
        "dtype": _bad_dtypes,
        "shape": _bad_shapes,
        "cycle": _cycles,
        "dangling name": _dangling,
        "huge dims": _huge,
        "opset/IR": _versions,
        "attribute": _attributes,
        "non-UTF-8": _names,
    }
    for category, build in builders.items():
        for name, data, must_fail, reason in build(rng):
            path = folder / f"{category.replace(' ', '_').replace('/', '_')}-{name}.onnx"
            path.write_bytes(data)
            cases.append(Case(category, name, path, must_fail, reason))
    for category, writers in (("external data", _external(rng, folder)), ("special file", _special_files(folder))):
        for name, write, must_fail, reason in writers:
            path = folder / f"{category.replace(' ', '_')}-{name}.onnx"
            write(path)
            cases.append(Case(category, name, path, must_fail, reason))
    return cases
