"""The generated model + kernels as the board gets them: compiled for aarch64 with the TA dev kit's
flags followed by the generated sub.mk's (mirrorc.backend.ta.DEV_KIT_CFLAGS, then ta.ta_cflags read
from the sub.mk), disassembled (the conv and dense loops use NEON vector FMAs) and run under qemu-user
against mirrornet.onnx in onnxruntime. Each test is skipped, with the reason, where the cross tools or
qemu are missing (scripts/setup.sh installs both where it can)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import ZOO, ort_session
from mirrorc.backend import cbuild, ta
from mirrorc.pipeline import build_mirrornet
from passes import lower_c
from passes.split import split

CROSS, OBJDUMP, QEMU = "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-objdump", "qemu-aarch64"
MAIN = Path(__file__).with_name("run_model_main.c")
# A NEON vector FMA on four floats: fmla v0.4s, v1.4s, v2.4s (or by element, v2.s[1]).
VECTOR_FMA = re.compile(r"\bfmla\s+v\d+\.4s,\s*v\d+\.4s,\s*v\d+\.(4s|s\[\d\])")
# A call: bl to a function of the same object, or a call/tail-call relocation to another one.
CALL = re.compile(r"\bbl\s+[0-9a-f]+\s+<([\w.]+)>|R_AARCH64_(?:CALL|JUMP)26\s+([\w.]+)")
# The kernels that hold the conv and dense inner loops (or call the static functions that do).
LOOP_KERNELS = ("mc_conv2d", "mc_conv2d_s1", "mc_gemm")
# Logits tolerance against onnxruntime, relative to the largest |logit| (at least 1): the board's C
# contracts multiply-adds into fmadd/fmla (gnu11), which rounds once where x86's C and onnxruntime
# round twice, and sums in another order than onnxruntime; measured differences are ~1e-7 of that.
LOGIT_TOLERANCE = 1e-5


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (scripts/setup.sh installs them where it can)")
        pytest.skip(f"{', '.join(missing)} not installed")


def write_generated_ta(model_path: Path, name: str, out: Path) -> tuple[Path, onnx.ModelProto, onnx.ModelProto]:
    """mirrornet (random CPM weights) -> split -> lower_c -> the TA sources in out/ta; returns the
    TA directory, mirrornet and normal."""
    mirrornet, _ = build_mirrornet(model_path, channels=2)
    normal, secure = split(mirrornet)
    lowered = lower_c.lower(secure, name)
    uuid = ta.ta_uuid(hashlib.sha256(lowered.files["model/mirrorc_model.c"].encode()).hexdigest())
    ta.write_ta(out / "ta", out / "host", name=name, uuid=uuid, lowered=lowered)
    return out / "ta", mirrornet, normal


def cross_objects(ta_dir: Path, out: Path, *, ta_flags: bool = True, extra: tuple[str, ...] = ()) -> list[Path]:
    """Every model/ and kernels/ source compiled for aarch64 with the dev kit's flags, then (with
    `ta_flags`) the flags its directory's sub.mk adds, as OP-TEE's mk/compile.mk orders them."""
    includes = [f"-I{d}" for d in ta.ta_include_dirs(ta_dir)]
    objects = []
    for subdir in ("model", "kernels"):
        # the dev kit's warnings, then the sub.mk's flags (which quiet -Wfloat-equal): as a TA build orders them
        sub_mk = [*ta.DEV_KIT_WARNINGS, *ta.ta_cflags(ta_dir, subdir)] if ta_flags else ["-Wall"]
        flags = [*ta.DEV_KIT_CFLAGS, *sub_mk, *extra]
        for src in sorted((ta_dir / subdir).glob("*.c")):
            obj = out / f"{subdir}_{src.stem}.o"
            proc = subprocess.run(
                [CROSS, *flags, "-ffreestanding", "-Werror", *includes, "-c", str(src), "-o", str(obj)],
                capture_output=True,
                text=True,
                cwd=out,
            )
            assert proc.returncode == 0, f"{src.name}: {proc.stderr}"
            objects.append(obj)
    return objects


def disassembly(objects: list[Path]) -> dict[str, str]:
    """Function symbol -> its disassembled instructions, over all objects."""
    functions: dict[str, str] = {}
    for obj in objects:
        text = subprocess.run([OBJDUMP, "-dr", str(obj)], capture_output=True, text=True, check=True).stdout
        for block in re.split(r"\n(?=[0-9a-f]+ <)", text):
            head = re.match(r"[0-9a-f]+ <([\w.]+)>:", block)
            if head:
                functions[head.group(1)] = block
    return functions


def callees(functions: dict[str, str], name: str) -> set[str]:
    return {a or b for a, b in CALL.findall(functions[name])} - {name}


def reachable_fmas(functions: dict[str, str], root: str) -> int:
    """Vector FMAs in `root` and in every function it calls, directly or not (the inner loops live
    in static helpers unless GCC inlines them)."""
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        todo += callees(functions, name)
    return sum(len(VECTOR_FMA.findall(functions[name])) for name in seen)


def deepest_stack(functions: dict[str, str], frames: dict[str, int], root: str, path: tuple[str, ...] = ()) -> int:
    """Bytes of stack of the deepest call chain from `root`: -fstack-usage frames summed along the
    call graph of the disassembly (a chain through a function without a frame adds nothing)."""
    assert root not in path, f"recursion: {' -> '.join((*path, root))}"
    below = [deepest_stack(functions, frames, c, (*path, root)) for c in callees(functions, root) if c in functions]
    return frames.get(root, 0) + max(below, default=0)


def test_conv_and_dense_loops_use_neon_fma_at_ta_flags(example_models, tmp_path):
    """At the dev kit's -Os alone GCC leaves most loops scalar; the sub.mk's flags must give the conv
    and gemm kernels NEON vector FMAs. The stated stack must still cover the deepest chain."""
    need(CROSS, OBJDUMP)
    ta_dir, _, _ = write_generated_ta(example_models["lenet5"], "lenet5", tmp_path)
    print(f"  sub.mk flags: model {ta.ta_cflags(ta_dir, 'model')}, kernels {ta.ta_cflags(ta_dir, 'kernels')}")
    (tmp_path / "devkit").mkdir()
    at_os = disassembly(cross_objects(ta_dir, tmp_path / "devkit", ta_flags=False))
    at_ta = disassembly(cross_objects(ta_dir, tmp_path, extra=("-fstack-usage",)))
    counts = {k: (reachable_fmas(at_os, k), reachable_fmas(at_ta, k)) for k in LOOP_KERNELS}
    print("  vector FMAs reachable (dev kit -Os alone, with the sub.mk flags):", counts)
    for kernel, (_, fmas) in counts.items():
        assert kernel in at_ta, f"{kernel} not in the aarch64 objects"
        assert fmas > 0, f"{kernel}: no NEON vector fmla at the TA's flags"
    # inlining makes frames larger than test_c_lower's -O2 build (whose bound, the six largest frames
    # summed, -O3 exceeds); the deepest real chain must still fit the stack the header states
    usage = [line.split("\t") for su in tmp_path.glob("*.su") for line in su.read_text().splitlines()]
    assert all(u[2] == "static" for u in usage), "a kernel with a dynamic stack frame"
    frames = {u[0].rsplit(":", 1)[1]: int(u[1]) for u in usage}
    chains = {r: deepest_stack(at_ta, frames, r) for r in ("mirrorc_run_tap", "mirrorc_run_final")}
    print(f"  aarch64 stack at the TA's flags: deepest chains {chains} bytes, bound {lower_c.STACK_BYTES}")
    assert max(chains.values()) <= lower_c.STACK_BYTES


def build_aarch64_program(ta_dir: Path, out: Path, extra: tuple[str, ...] = ()) -> Path:
    """The TA's model + kernels (its flags, then `extra`, MIRRORC_DEBUG for the logits) and
    run_model_main.c as a static aarch64 executable."""
    objects = cross_objects(ta_dir, out, extra=("-DMIRRORC_DEBUG", *extra))
    exe = out / "run_model"
    includes = [f"-I{d}" for d in ta.ta_include_dirs(ta_dir)]
    subprocess.run(
        [CROSS, "-O2", "-Wall", "-Werror", "-DMIRRORC_DEBUG", "-static", *includes, str(MAIN), *map(str, objects)]
        + ["-o", str(exe)],
        check=True,
    )
    return exe


def zoo_or_example(example_models: dict[str, Path], name: str) -> Path:
    return example_models[name] if name in example_models else ZOO / f"light_{name}.onnx"


@pytest.mark.parametrize(
    "name,n_inputs,contract",
    [
        ("lenet5", 200, True),
        pytest.param("lenet5", 200, False, marks=pytest.mark.slow),
        pytest.param("vgg7", 100, True, marks=pytest.mark.slow),
        pytest.param("resnet50", 20, True, marks=pytest.mark.slow),
    ],
)
def test_aarch64_logits_match_mirrornet(example_models, tmp_path, name, n_inputs, contract):
    """The generated C, built as the board builds it, run on an emulated aarch64 core: every label
    equal to mirrornet.onnx's in onnxruntime, logits within LOGIT_TOLERANCE. Without FMA contraction
    (-ffp-contract=off after the TA's flags) it is bit-identical to the C99 build for this host: the
    only difference between the tested host build and the board is the contraction the TA allows."""
    need(CROSS, QEMU)
    ta_dir, mirrornet, normal = write_generated_ta(zoo_or_example(example_models, name), name, tmp_path)
    vi = mirrornet.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(0).standard_normal([n_inputs, *shape]).astype(np.float32)
    backbone_logits, *taps = ort_session(normal, threads=1).run(None, {vi.name: x})
    labels, _, logits = ort_session(mirrornet, threads=1).run(None, {vi.name: x})
    samples = np.concatenate([t.reshape(n_inputs, -1) for t in taps] + [backbone_logits], axis=1)
    samples.astype(np.float32).tofile(tmp_path / "samples.f32")

    exe = build_aarch64_program(ta_dir, tmp_path, () if contract else ("-ffp-contract=off",))
    proc = subprocess.run([QEMU, str(exe), str(tmp_path / "samples.f32")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert len(rows) == n_inputs
    board_labels = np.array([int(r[0]) for r in rows])
    board_logits = np.array([[float(v) for v in r[1:]] for r in rows], np.float32)

    host = cbuild.SecureModel.from_lowered(lower_c.lower(split(mirrornet)[1], name), name=f"board_{name}")
    host_logits = np.stack([host.run([t[i] for t in taps], backbone_logits[i])[1] for i in range(n_inputs)])
    scale = max(1.0, float(np.abs(logits).max()))
    vs_ort = float(np.abs(board_logits - logits).max())
    vs_host = float(np.abs(board_logits - host_logits).max())
    agree = int((board_labels == labels).sum())
    print(
        f"  {name} on qemu-aarch64 (FMA contraction {'on' if contract else 'off'}): {agree}/{n_inputs} labels "
        f"agree with onnxruntime; max logit diff "
        f"{vs_ort:.3g} vs onnxruntime, {vs_host:.3g} vs the x86 build (|logits| up to {np.abs(logits).max():.3g}, "
        f"tolerance {LOGIT_TOLERANCE * scale:.3g})"
    )
    assert agree == n_inputs
    assert vs_ort <= LOGIT_TOLERANCE * scale
    if not contract:
        assert vs_host == 0.0
