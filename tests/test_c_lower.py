"""passes/lower_c.py + passes/memplan.py: the generated C model against mirrornet.onnx in onnxruntime.

The taps and backbone logits come from onnxruntime running normal.onnx; the C model (compiled with
MIRRORC_DEBUG to expose the MirrorNet logits) is driven through its real interface, one sample at a
time, exactly as the TA calls it."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from helpers import ZOO, ort_session, trained_like
from mirrorc.backend import cbuild
from mirrorc.errors import MirrorcError
from mirrorc.pipeline import build_mirrornet
from passes import contract, lower_c, memplan
from passes.split import split


def _session(model):
    return ort_session(model, threads=2)


def check_against_mirrornet(mn: onnx.ModelProto, n_inputs: int, name: str, seed: int = 0, fast_conv: bool = True):
    normal, secure = split(mn)
    lowered = lower_c.lower(secure, name, fast_conv=fast_conv)
    model = cbuild.SecureModel.from_lowered(lowered, name=f"test_{name}")
    vi = mn.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(seed).standard_normal([n_inputs, *shape]).astype(np.float32)
    nout = _session(normal).run(None, {vi.name: x})
    labels, _, logits = _session(mn).run(None, {vi.name: x})
    agree, worst = 0, 0.0
    for i in range(n_inputs):
        label, c_logits = model.run([t[i] for t in nout[1:]], nout[0][i])
        agree += int(label == labels[i])
        worst = max(worst, float(np.abs(c_logits - logits[i]).max()))
    print(
        f"  {name}: {agree}/{n_inputs} labels agree, max logit diff {worst:.3g} "
        f"(|logits| up to {np.abs(logits).max():.3g}); sizes {lowered.sizes}; memory {lowered.memory}"
    )
    assert np.isfinite(logits).all()
    assert agree == n_inputs
    assert worst <= 1e-5 * max(1.0, float(np.abs(logits).max()))
    return lowered


@pytest.mark.parametrize(
    "name,fast_conv",
    [
        ("lenet5", True),
        pytest.param("vgg7", True, marks=pytest.mark.slow),
        pytest.param("vgg7", False, marks=pytest.mark.slow),
    ],
)
def test_c_model_matches_mirrornet(example_models, name, fast_conv):
    mn, _ = build_mirrornet(example_models[name], channels=2)
    check_against_mirrornet(trained_like(mn, seed=7), 300, name, fast_conv=fast_conv)


@pytest.mark.parametrize(
    "name,n_inputs", [("tiny_shufflenet_v2", 8), ("tiny_slice_resize", 1), ("tiny_convnext", 8), ("tiny_cnblock", 8)]
)
def test_c_model_matches_mirrornet_data_movement(tmp_path, name, n_inputs):
    """Split, Slice, Pad, Resize, LayerNorm over the channels, dilated/grouped convs and MatMuls on
    channels-last tensors (ConvNeXt's Linears) on the CPM's path, lowered to C
    (tests/test_core_fixtures.py; tiny_slice_resize has a fixed batch of 1)."""
    import test_core_fixtures as F

    mn, _ = build_mirrornet(F.write(tmp_path, name), channels=2)
    used = {n.op_type for n in split(mn)[1].graph.node}
    lowered = check_against_mirrornet(trained_like(mn, seed=5), n_inputs, name)
    assert used & {"Split", "Slice", "Pad", "Resize", "LayerNormalization"}
    assert {"mc_split_part", "mc_slice", "mc_pad", "mc_resize2d", "mc_layernorm"} & set(
        re.findall(r"\b(mc_\w+)\(", lowered.files["model/mirrorc_model.c"])
    )


def test_c_model_matches_mirrornet_ghost_modules(tmp_path):
    """The ghost bottleneck's CPM (a 1-channel 1x1 conv, its depthwise copy, their Concat added to
    the shortcut) lowered to C."""
    import test_core_fixtures as F

    mn, _ = build_mirrornet(F.write(tmp_path, "tiny_ghostnet"), channels=2)
    check_against_mirrornet(trained_like(mn, seed=5), 8, "tiny_ghostnet")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,n_inputs", [("squeezenet", 24), ("resnet50", 6), ("inception_v1", 3), ("densenet121", 3)]
)
def test_c_model_matches_mirrornet_zoo(name, n_inputs):
    path = ZOO / f"light_{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} not shipped with this onnx")
    mn, _ = build_mirrornet(path, channels=2)
    lowered = check_against_mirrornet(mn, n_inputs, name)
    ops = {
        line.split("(")[0].strip()
        for line in lowered.files["model/mirrorc_model.c"].splitlines()
        if line.strip().startswith("mc_")
    }
    print(f"  {name} kernels used: {sorted(ops)}")


def _lenet_secure(example_models):
    mn, _ = build_mirrornet(example_models["lenet5"], channels=2)
    return split(trained_like(mn, seed=2))[1]


def test_generation_is_deterministic(example_models):
    a = lower_c.lower(_lenet_secure(example_models), "lenet5")
    b = lower_c.lower(_lenet_secure(example_models), "lenet5")
    assert a.files.keys() == b.files.keys() and all(a.files[k] == b.files[k] for k in a.files)
    src = a.files["model/mirrorc_model.c"] + a.files["model/mirrorc_weights.h"]
    for banned in ("malloc", "printf", "stdio", "math.h", "expf(", "free("):
        assert banned not in src


@pytest.mark.slow
def test_generation_is_deterministic_across_processes(example_models, tmp_path):
    """Byte-identical sources whatever the string-hash seed of the process."""
    onnx.save(_lenet_secure(example_models), tmp_path / "secure.onnx")
    script = (
        "import hashlib, sys, onnx; from passes.lower_c import lower; "
        "f = lower(onnx.load(sys.argv[1]), 'lenet5').files; "
        "print(hashlib.sha256(repr(sorted(f.items())).encode()).hexdigest())"
    )
    digests = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "secure.onnx")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_tee_memory_limit(example_models):
    secure = _lenet_secure(example_models)
    fast = lower_c.lower(secure, "lenet5")
    compact = lower_c.lower(secure, "lenet5", fast_conv=False)
    fast_total, compact_total = sum(fast.sizes.values()), sum(compact.sizes.values())
    assert compact_total < fast_total and fast.memory["fast_conv"] and not compact.memory["fast_conv"]
    assert lower_c.lower(secure, "lenet5", tee_memory=fast_total).sizes == fast.sizes
    # one byte short: the conv scratch is given up, and the compact model fits
    squeezed = lower_c.lower(secure, "lenet5", tee_memory=fast_total - 1)
    assert squeezed.sizes == compact.sizes and "mc_conv2d_s1" not in squeezed.files["model/mirrorc_model.c"]
    with pytest.raises(MirrorcError, match=rf"lenet5.*needs {compact_total} bytes.*limit of {compact_total - 1} bytes"):
        lower_c.lower(secure, "lenet5", tee_memory=compact_total - 1)


def test_header_states_exact_sizes(example_models, tmp_path):
    lowered = lower_c.lower(_lenet_secure(example_models), "lenet5")
    header = lowered.files["model/mirrorc_model.h"]
    defines = dict(re.findall(r"#define (MIRRORC_\w+)\s+(.+?)\s*(?:/\*.*)?$", header, re.M))
    assert int(defines["MIRRORC_NUM_TAPS"]) == len(lowered.tap_floats) == 4
    assert int(defines["MIRRORC_NUM_CLASSES"]) == lowered.num_classes == 10
    assert defines["MIRRORC_TAP_FLOATS"] == "{ " + ", ".join(map(str, lowered.tap_floats)) + " }"
    for key in ("weights", "arena", "state", "stack"):
        name = {"weights": "WEIGHT"}.get(key, key.upper())
        assert int(defines[f"MIRRORC_{name}_BYTES"]) == lowered.sizes[key]
    # the compiled objects agree with the header: sizeof(state), the arena and the weights
    probe = tmp_path / "probe.c"
    probe.write_text(
        '#include "mirrorc_model.h"\nunsigned long state_size(void) { return sizeof(mirrorc_state_t); }\n'
        "unsigned long single_floats(void) { return MIRRORC_SINGLE_FLOATS; }\n"
    )
    files = dict(lowered.files, **{"model/probe.c": probe.read_text()})
    lib = cbuild.load(cbuild.build_lowered(files, name="probe"))
    assert lib.state_size() == lowered.sizes["state"]
    assert lib.single_floats() == sum(lowered.tap_floats) + 10
    objdir = tmp_path / "src"
    for rel, text in lowered.files.items():
        (objdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (objdir / rel).write_text(text)
    obj = cbuild.build(
        [objdir / "model/mirrorc_model.c"],
        kind="object",
        name="model",
        include_dirs=[objdir / "model", objdir / "kernels"],
        out_dir=tmp_path,
    )
    syms = subprocess.run(["nm", "-S", "--size-sort", str(obj)], capture_output=True, text=True, check=True).stdout
    sizes = {line.split()[3]: int(line.split()[1], 16) for line in syms.splitlines() if len(line.split()) == 4}
    assert sizes["mirrorc_arena"] == lowered.sizes["arena"]
    assert sum(v for k, v in sizes.items() if re.fullmatch(r"W\d+", k)) == lowered.sizes["weights"]


def test_schedule_runs_each_node_at_its_earliest_command(example_models):
    secure = _lenet_secure(example_models)
    order = lower_c.schedule(secure)
    ready = {contract.tap_name(k + 1): k for k in range(4)} | {contract.BACKBONE_LOGITS: 4}
    for cmd, node in order:
        avail = [ready[t] for t in node.input if t in ready]
        assert cmd == (4 if contract.LABEL in node.output else max(avail, default=0)), node.name
        ready.update({o: cmd for o in node.output})
    assert [c for c, _ in order] == sorted(c for c, _ in order)
    lowered = lower_c.lower(secure, "lenet5")
    assert lowered.commands[0] == ["cpm/conv4", "cpm/relu5", "cpm/maxpool6"]
    assert lowered.commands[-1] == ["cpm/final_add", "cpm/argmax"]


def test_memplan_carry_and_reuse():
    # command 0: a -> b -> c (c carried); command 1: tap1 + c -> d; d -> e (final read)
    steps = [
        memplan.Step(0, ["t0"], ["a"]),
        memplan.Step(0, ["a"], ["b"]),
        memplan.Step(0, ["b"], ["c"]),
        memplan.Step(1, ["t1", "c"], ["d"]),
        memplan.Step(1, ["d", "t0"], ["e"]),
        memplan.Step(1, ["e"], []),
    ]
    floats = {"t0": 8, "t1": 8, "a": 100, "b": 100, "c": 10, "d": 10, "e": 10}
    p = memplan.plan(steps, floats, {"t0": 0, "t1": 1})
    carried = {n for n, b in p.buffers.items() if b.carry}
    assert carried == {"c", "t0"}  # t0 is read again at command 1: copied into the state
    assert "t1" not in p.buffers  # read only during its own command: the caller's buffer
    offsets = {n: (b.offset, b.first, b.last) for n, b in p.buffers.items()}
    # a and b are live together (step 1); d and e reuse a's space; offsets are 16-byte aligned
    assert offsets == {
        "a": (0, 0, 1),
        "b": (100, 1, 2),
        "d": (0, 3, 4),
        "e": (12, 4, 5),
        "c": (0, 2, 3),
        "t0": (12, 0, 4),
    }
    assert (p.arena_floats, p.carry_floats, p.naive_floats) == (200, 20, 244)
    print(f"  memplan: {p.summary()}")


def test_unsupported_op_is_named(example_models):
    secure = _lenet_secure(example_models)
    node = next(n for n in secure.graph.node if n.op_type == "Relu")
    node.op_type = "Softplus"
    with pytest.raises(MirrorcError, match=rf"lower_c: node '{node.name}' \(Softplus\): op Softplus is not supported"):
        lower_c.lower(secure, "lenet5")


@pytest.mark.slow
def test_generated_model_freestanding_aarch64_and_stack(example_models, tmp_path):
    """The model and kernels build freestanding for aarch64 and call nothing but each other (and at
    most memset/memcpy, which OP-TEE's libutils provides); the stated stack covers the deepest
    call chain measured with -fstack-usage."""
    cc = "aarch64-linux-gnu-gcc"
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    lowered = lower_c.lower(_lenet_secure(example_models), "lenet5")
    src = tmp_path / "src"
    for rel, text in lowered.files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    flags = [
        "-std=c99",
        "-ffreestanding",
        "-nostdlib",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-fstack-usage",
        f"-I{src / 'model'}",
        f"-I{src / 'kernels'}",
    ]
    defined, undefined, frames = set(), set(), []
    for c in sorted(src.rglob("*.c")):
        obj = tmp_path / (c.stem + ".o")
        subprocess.run([cc, *flags, "-c", str(c), "-o", str(obj)], check=True, cwd=tmp_path)
        nm = subprocess.run(["aarch64-linux-gnu-nm", str(obj)], capture_output=True, text=True, check=True).stdout
        for line in nm.splitlines():
            parts = line.split()
            (undefined if parts[0] == "U" else defined).add(parts[-1])
        su = (tmp_path / (c.stem + ".su")).read_text()
        frames += [int(line.split("\t")[1]) for line in su.splitlines()]
        assert "dynamic" not in su
    outside = undefined - defined - {"memset", "memcpy"}
    assert not outside, f"external symbols: {sorted(outside)}"
    # no recursion; the deepest chain is entry -> run_final -> kernel -> powf -> expf/logf -> ldexpf
    chain = sum(sorted(frames)[-6:])
    print(f"  aarch64 stack: largest frames {sorted(frames)[-6:]}, chain bound {chain} <= {lower_c.STACK_BYTES}")
    assert chain <= lower_c.STACK_BYTES


def test_memplan_in_place_steps():
    # conv -> relu -> flatten on a wide map: relu and flatten overwrite their inputs
    steps = [
        memplan.Step(0, ["t0"], ["conv"]),
        memplan.Step(0, ["conv"], ["relu"]),
        memplan.Step(0, ["relu"], ["flat"]),
        memplan.Step(0, ["flat", "t0"], ["add"]),
        memplan.Step(0, ["add"], []),
    ]
    floats = {"t0": 64, "conv": 64, "relu": 64, "flat": 64, "add": 64}
    plain = memplan.plan(steps, floats, {"t0": 0})
    fused = memplan.plan(steps, floats, {"t0": 0}, inplace={1, 2, 3})
    assert fused.buffers["relu"].alias_of == "conv" and fused.buffers["flat"].alias_of == "conv"
    assert fused.buffers["add"].alias_of == "conv"  # flat dies at the add: same buffer again
    assert fused.arena_floats == 64 and plain.arena_floats == 128
    # an input that is still read later is never overwritten
    steps[4] = memplan.Step(0, ["add", "relu"], [])
    kept = memplan.plan(steps, floats, {"t0": 0}, inplace={1, 2, 3})
    assert kept.buffers["flat"].alias_of is None


def test_weights_are_bit_exact(example_models):
    """Every weight array in the generated C holds exactly the secure graph's float32 bits (a Gemm's
    constant B with transB, key "<name>^T", transposed)."""
    secure = split(trained_like(build_mirrornet(example_models["vgg7"], channels=2)[0], seed=5))[1]
    lowered = lower_c.lower(secure, "vgg7")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in secure.graph.initializer}
    source = {k: k.removesuffix("^T") for k in lowered.weights}
    assert set(source.values()) == {k for k in inits if any(k in n.input for n in secure.graph.node)}
    assert any(k.endswith("^T") for k in source)  # VGG-7's CPM classifier is a Gemm with transB
    accessor = '#include "mirrorc_weights.h"\nconst float *weight(int i) {\n  switch (i) {\n'
    keys = sorted(lowered.weights)
    accessor += "".join(f"  case {i}: return {lowered.weights[k]};\n" for i, k in enumerate(keys))
    accessor += "  default: return 0;\n  }\n}\n"
    lib = cbuild.load(cbuild.build_lowered(dict(lowered.files, **{"model/accessor.c": accessor}), name="weights"))
    lib.weight.restype = ctypes.POINTER(ctypes.c_uint32)
    for i, k in enumerate(keys):
        data = inits[source[k]].T if k.endswith("^T") else inits[k]
        want = np.ascontiguousarray(data, np.float32).ravel().view(np.uint32)
        got = np.ctypeslib.as_array(lib.weight(i), shape=(want.size,))
        assert np.array_equal(got, want), k
    assert any("folded" in k for k in keys)  # VGG-7's BatchNorms were folded by split


def test_tap_read_after_its_command_is_carried():
    """A hand-built secure graph where tap 1 is read again at command 1 and at the final command:
    run_tap(0) must keep a copy in the session state (the caller's buffer is gone by then)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    w = numpy_helper.from_array(rng.normal(size=(6, 6)).astype(np.float32), "cpm/w")
    nodes = [
        helper.make_node("Relu", ["mirrorc_tap1"], ["cpm/r1"], name="cpm/relu1"),
        helper.make_node("Gemm", ["mirrorc_tap2", "cpm/w"], ["cpm/g2"], name="cpm/gemm2"),
        helper.make_node("Add", ["cpm/g2", "mirrorc_tap1"], ["cpm/a2"], name="cpm/add2"),
        helper.make_node("Mul", ["cpm/a2", "cpm/r1"], ["cpm_logits"], name="cpm/mul"),
        # reads tap 1 at the final command (it needs backbone_logits)
        helper.make_node("Sub", ["backbone_logits", "mirrorc_tap1"], ["cpm/s0"], name="cpm/sub_final"),
        helper.make_node("Add", ["cpm/s0", "cpm_logits"], ["mirrornet_logits"], name="cpm/final_add"),
        helper.make_node("ArgMax", ["mirrornet_logits"], ["label"], name="cpm/argmax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "carry",
        [
            helper.make_tensor_value_info("mirrorc_tap1", TensorProto.FLOAT, [1, 6]),
            helper.make_tensor_value_info("mirrorc_tap2", TensorProto.FLOAT, [1, 6]),
            helper.make_tensor_value_info("backbone_logits", TensorProto.FLOAT, [1, 6]),
        ],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [1])],
        [w],
    )
    secure = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    secure.ir_version = 8
    lowered = lower_c.lower(secure, "carry")
    assert "mirrorc_tap1" in lowered.memory["carried"]
    assert "mc_copy(tap," in lowered.files["model/mirrorc_model.c"]
    model = cbuild.SecureModel.from_lowered(lowered, name="carry")
    probe = onnx.ModelProto()
    probe.CopyFrom(secure)
    probe.graph.output.append(helper.make_tensor_value_info("mirrornet_logits", TensorProto.FLOAT, [1, 6]))
    sess = _session(probe)
    for _ in range(20):
        t1, t2, bl = (rng.normal(size=(1, 6)).astype(np.float32) for _ in range(3))
        label, logits = sess.run(None, {"mirrorc_tap1": t1, "mirrorc_tap2": t2, "backbone_logits": bl})
        # hand the C model fresh buffers and wipe tap 1 after its command, as the TA's copy would be
        t1_buf = t1.copy()
        model.lib.mirrorc_reset(model.state)
        model.lib.mirrorc_run_tap(model.state, ctypes.c_uint(0), ctypes.c_void_p(t1_buf.ctypes.data))
        t1_buf[:] = np.nan
        model.lib.mirrorc_run_tap(model.state, ctypes.c_uint(1), ctypes.c_void_p(t2.ctypes.data))
        c_logits = np.zeros(6, np.float32)
        c_label = model.lib.mirrorc_debug_run_final(
            model.state, ctypes.c_void_p(bl.ctypes.data), ctypes.c_void_p(c_logits.ctypes.data)
        )
        assert c_label == label[0]
        np.testing.assert_allclose(c_logits, logits[0], rtol=1e-5, atol=1e-6)


def part_a_cnn(seed: int = 0, opset: int = 20) -> onnx.ModelProto:
    """A small CNN on the ops of registry part A: HardSwish, Clip with tensor bounds, a Sigmoid-gated
    squeeze-excite block (ReduceMean over [2, 3] with axes as input, a Mul by a [N, C, 1, 1] gate),
    Gelu, and global average pooling as ReduceMean keepdims 0 before the dense head."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def conv(x: str, y: str, cin: int, cout: int, k: int) -> onnx.NodeProto:
        w = init(f"{y}_w", (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32))
        b = init(f"{y}_b", (0.1 * rng.standard_normal(cout)).astype(np.float32))
        return helper.make_node("Conv", [x, w, b], [y], name=y, kernel_shape=[k, k], pads=[k // 2] * 4)

    f32 = np.float32
    nodes = [
        conv("input", "c1", 3, 8, 3),
        helper.make_node("Relu", ["c1"], ["a1"], name="relu"),  # the first conv stays in the backbone
        conv("a1", "c2", 8, 8, 3),
        helper.make_node("HardSwish", ["c2"], ["a2"], name="hswish"),
        helper.make_node("ReduceMean", ["a2", init("hw", np.array([2, 3]))], ["se0"], name="se_pool", keepdims=1),
        conv("se0", "se1", 8, 4, 1),
        helper.make_node("Relu", ["se1"], ["se2"], name="se_relu"),
        conv("se2", "se3", 4, 8, 1),
        helper.make_node("Sigmoid", ["se3"], ["gate"], name="se_gate"),
        helper.make_node("Mul", ["a2", "gate"], ["gated"], name="se_scale"),
        helper.make_node("Clip", ["gated", init("lo", np.array(-1, f32)), init("hi", np.array(3, f32))], ["se"]),
        conv("se", "c3", 8, 8, 3),
        helper.make_node("Gelu", ["c3"], ["a3"], name="gelu"),
        helper.make_node("ReduceMean", ["a3", "hw"], ["pooled"], name="gap", keepdims=0),
        helper.make_node(
            "Gemm",
            ["pooled", init("fc_w", (rng.standard_normal((10, 8)) / 3).astype(f32)), init("fc_b", np.zeros(10, f32))],
            ["logits"],
            name="fc",
            transB=1,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "part_a_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def test_part_a_cnn_lowers_and_matches_mirrornet(tmp_path):
    """HardSwish, Clip bounds, squeeze-excite, Gelu and ReduceMean on the CPM's path: narrowed,
    lowered to C, and the split execution agrees with mirrornet.onnx."""
    path = tmp_path / "part_a_cnn.onnx"
    onnx.save(part_a_cnn(), str(path))
    mn, _ = build_mirrornet(path, channels=2)
    cpm_ops = {n.op_type for n in mn.graph.node if n.name.startswith("cpm/")}
    assert {"HardSwish", "Clip", "ReduceMean", "Mul", "Sigmoid", "Gelu"} <= cpm_ops, cpm_ops
    lowered = check_against_mirrornet(trained_like(mn, seed=3), 40, "part_a_cnn")
    src = lowered.files["model/mirrorc_model.c"]
    assert "mc_hardswish(" in src and "mc_gelu(" in src and "mc_reduce_axis(" in src and "mc_binary_bcast(" in src


def test_first_touch_floats_counts_each_arena_line_once(example_models):
    """The emulator's first-touch feature on VGG-7's secure plan: every line of every buffer a step
    writes is counted at the first step that writes it and never again (a bytearray of the arena and
    carry lines, marked independently), whole lines only; the in-place ReLU after a conv writes no new
    line."""
    _, secure = split(build_mirrornet(example_models["vgg7"], channels=2)[0])
    sp = lower_c.plan_secure(secure)
    fresh = lower_c.first_touch_floats(sp)
    assert len(fresh) == len(sp.body) and all(f % lower_c.LINE_FLOATS == 0 for f in fresh)
    line = lower_c.LINE_FLOATS
    marked = {False: bytearray(sp.memory.arena_floats // line + 1), True: bytearray(sp.memory.carry_floats // line + 1)}
    for t in sp.taps:  # carried taps are copied in before any step
        if t in sp.memory.buffers:
            b = sp.memory.buffers[t]
            marked[True][b.offset // line : -(-(b.offset + b.floats) // line)] = b"\1" * (
                -(-(b.offset + b.floats) // line) - b.offset // line
            )
    steps, _ = lower_c.plan_steps(sp.body, sp.shapes, sp.consts, sp.fast_conv, sp.fused)
    for step, got in zip(steps, fresh, strict=True):
        new = 0
        for t in step.outputs:
            b = sp.memory.buffers.get(t)
            if b is None:
                continue
            for k in range(b.offset // line, -(-(b.offset + b.floats) // line)):
                new += not marked[b.carry][k]
                marked[b.carry][k] = 1
        assert got == line * new
    assert 0 < sum(fresh) <= line * (len(marked[False]) + len(marked[True]))
    aliased = [
        i
        for i, (_, nd) in enumerate(sp.body)
        if sp.memory.buffers.get(nd.output[0]) and sp.memory.buffers[nd.output[0]].alias_of
    ]
    print(f"first-touch floats per step: {fresh}; in-place steps {aliased}")
    assert aliased and all(fresh[i] == 0 for i in aliased)
