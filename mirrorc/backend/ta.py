"""The OP-TEE Trusted Application around a generated CPM, and its host simulator.

`write_ta` renders `runtime_c/ta/*.in` into `build/ta/` (Makefile, sub.mk, user_ta_header_defines.h,
include/<name>_ta.h, the entry points, the generated model and kernels) and `build/host/` (a C client
using the GP Client API). The same TA sources build with OP-TEE's TA dev kit on a board and, here,
for the host against `runtime_c/shim/`: `simulator(build_dir)` gives the TA simulator executable,
`client_library()` the libteec-compatible library that talks to it.

The simulator is compiled on first use into `build/ta/sim/`. Building it reads the TA sources, which
hold the CPM weights, so a normal-world process never builds it itself: it calls `simulator()`, which
only stats the sources and, when the binary is missing or stale, compiles in a child process
(`python -m mirrorc.backend.ta sim BUILD_DIR`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING

import runtime_c
from mirrorc.backend import cbuild, guard
from mirrorc.errors import MirrorcError
from mirrorc.outdir import atomic_file
from passes import contract

if TYPE_CHECKING:
    from passes.lower_c import Lowered

TEMPLATES = runtime_c.TEMPLATE_DIR
SHIM = runtime_c.SHIM_DIR

# Namespace of mirrorc TA UUIDs: uuid5(NAMESPACE_URL, this URL); a TA's UUID is uuid5(namespace,
# sha256 of its model), so the same model always gets the same TA and a changed one a new TA.
UUID_NAMESPACE = uuidlib.uuid5(uuidlib.NAMESPACE_URL, "https://github.com/mirrorc/mirrorc/ta")
# Stack beyond the kernels' worst case: the entry points and libutee's entry code.
ENTRY_STACK_BYTES = 2048
# Sessions TA_DATA_SIZE provides for, and the heap allocator's overhead per session.
MAX_SESSIONS = 4
MALLOC_OVERHEAD = 64
# Heap libutee itself may take (property and parameter handling).
LIBUTEE_HEAP_BYTES = 4096

# Simulator C flags, the kernels' own C99 warnings-clean set; sim_cflags() adds the host CPU's -march.
SIM_CFLAGS = ("-std=c99", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-D_GNU_SOURCE", "-pthread")
# Test-only builds add a command returning the MirrorNet logits; never in a TA for a board.
DEBUG_DEFINES = {"MIRRORC_DEBUG": None, "MIRRORC_TA_DEBUG_LOGITS": None}

# What OP-TEE's TA dev kit (optee_os 4.x, arm64) puts on every TA source's command line before the
# TA's own sub.mk flags: mk/compile.mk's -std=gnu11 and the exported conf.mk's
# ta_arm64-platform-cflags (less -g). For cross-compiling tests and benchmarks; the TA never sets them.
# The language mode and optimisation level are the part that means the same on the host (benchmarks
# and the profile time the TA's code there with them); the rest is arm64's.
DEV_KIT_HOST_CFLAGS = ("-std=gnu11", "-Os")
DEV_KIT_CFLAGS = (*DEV_KIT_HOST_CFLAGS, "-fpic", "-mstrict-align", "-mno-outline-atomics")
# The warnings the dev kit turns on for every TA source (seen in a `make V=1` of a generated TA with
# OP-TEE 4.x's export-ta_arm64); the tests build the generated C with them and -Werror.
DEV_KIT_WARNINGS = (
    "-Wall", "-Wcast-align", "-Werror-implicit-function-declaration", "-Wextra", "-Wfloat-equal",
    "-Wformat-nonliteral", "-Wformat-security", "-Wformat=2", "-Winit-self", "-Wmissing-declarations",
    "-Wmissing-format-attribute", "-Wmissing-include-dirs", "-Wmissing-noreturn", "-Wmissing-prototypes",
    "-Wnested-externs", "-Wpointer-arith", "-Wshadow", "-Wstrict-prototypes", "-Wswitch-default",
    "-Wwrite-strings", "-Wno-missing-field-initializers", "-Wno-format-zero-length", "-Wpacked-not-aligned",
    "-Waddress-of-packed-member", "-Wredundant-decls", "-Wold-style-definition", "-Wstrict-aliasing=2", "-Wundef",
)  # fmt: skip
# What the generated sub.mk adds for the model and kernels (cflags-y of model/ and kernels/; mk/compile.mk
# puts it after the dev kit's flags, so -O3 overrides -Os; the entry points keep -Os). At -Os GCC
# vectorises none of the conv/gemm loops: 3.3-3.6x slower on this host (benchmarks/ta_flags.py), and
# slower than onnxruntime on ResNet-50/SqueezeNet. -O3 vectorises them with the dynamic cost model;
# its larger frames still fit the stated stack (tests/test_ta_board.py). Nothing else: the dev kit
# picks the CPU (-mcpu), and -ffast-math would let results depend on the vector width. FMA
# contraction stays on, as gnu11 has it: the kernels' loops become NEON fmla, at the price of
# logits ~1e-7 off the x86 C99 build (with -ffp-contract=off the aarch64 C is bit-identical to it).
# -falign-loops=64 starts every loop on a cache line: without it a kernel's speed depends on where the
# linker happens to put it (ZFNet's CPM, the same mc_gemm 32 bytes apart: 337 vs 223 us), so neither
# the release C nor the Performance Emulator's per-layer costs would be stable (benchmarks/ta_flags.py).
TA_CODE_CFLAGS = ("-O3", "-falign-loops=64")
# The dev kit warns with -Wfloat-equal; the kernels test floats against exact constants on purpose
# (alpha != 1.0f skips a scaling pass), so the generated sub.mk quiets that one warning for them.
TA_CODE_WARNINGS = ("-Wno-float-equal",)


def sim_cflags() -> tuple[str, ...]:
    """SIM_CFLAGS for this host's CPU: the simulator stands in for the secure world's core, which
    the TA dev kit compiles for."""
    return SIM_CFLAGS + cbuild.host_march()


def ta_uuid(model_sha256: str) -> uuidlib.UUID:
    """The TA's name-based UUID, from the sha256 (hex) of the model it carries."""
    if not re.fullmatch(r"[0-9a-f]{64}", model_sha256):
        raise MirrorcError(f"ta: model hash must be 64 lowercase hex digits, got {model_sha256!r}")
    return uuidlib.uuid5(UUID_NAMESPACE, model_sha256)


def ta_name(model_name: str) -> str:
    """A C identifier (lowercase) from a model's name: file names and macros derive from it."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", Path(model_name).stem).strip("_").lower()
    if not name:
        name = "model"
    return name if name[0].isalpha() else f"m_{name}"


def _uuid_initializer(u: uuidlib.UUID) -> str:
    """TEE_UUID/TEEC_UUID initializer: timeLow, timeMid, timeHiAndVersion, { clockSeqAndNode[8] }."""
    f = u.fields
    node = u.bytes[8:]
    return f"0x{f[0]:08x}, 0x{f[1]:04x}, 0x{f[2]:04x}, \\\n\t\t{{ " + ", ".join(f"0x{b:02x}" for b in node) + " }"


def render(template: str, values: dict[str, object]) -> str:
    """Replace every @KEY@ of a template; a placeholder without a value is an error."""
    text = (TEMPLATES / template).read_text()
    out = re.sub(r"@([A-Z_]+)@", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)
    left = sorted(set(re.findall(r"@([A-Z_]+)@", out)))
    if left:
        raise MirrorcError(f"ta: template {template}: no value for {', '.join(left)}")
    return out


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def memory_plan(sizes: dict, tap_floats: list[int], num_classes: int) -> dict:
    """TA memory from the generated model's sizes: what TA_STACK_SIZE and TA_DATA_SIZE must hold."""
    single_floats = sum(tap_floats) + num_classes
    # struct session: carry state, stream position (padded), private input copy
    session = sizes["state"] + 8 + 4 * single_floats
    stack = _round_up(sizes["stack"] + ENTRY_STACK_BYTES, 1024)
    data = _round_up(MAX_SESSIONS * (session + MALLOC_OVERHEAD) + LIBUTEE_HEAP_BYTES, 4096)
    return {
        "weights": sizes["weights"],
        "arena": sizes["arena"],
        "state": sizes["state"],
        "stack": sizes["stack"],
        "session": session,
        "ta_stack_size": stack,
        "ta_data_size": data,
        "total": sizes["weights"] + sizes["arena"] + stack + data,
    }


def write_ta(
    ta_dir: Path,
    host_dir: Path,
    *,
    name: str,
    uuid: uuidlib.UUID,
    lowered: Lowered,
    version: str = "1.0",
    defences: dict | None = None,
    profile_steps: int | None = None,
) -> dict:
    """Write the TA sources into `ta_dir` and the host example into `host_dir` (both inside a
    build being written atomically). `defences` is plan.json's "guard" (mirrorc.backend.guard; None:
    none). With `profile_steps` (the calibration build of `mirrorc profile --tee optee`; `lowered` then
    comes from `lower(..., profile=True)` and has that many scheduled nodes) the TA also gets
    mirrorc_profile_ta.c, the per-node timers on TEE_GetSystemTime, and its sub.mk defines
    MIRRORC_TA_PROFILE. Returns the memory plan."""
    ta_dir, host_dir = Path(ta_dir), Path(host_dir)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise MirrorcError(f"ta: TA name {name!r} is not a lowercase C identifier")
    for rel in lowered.files:
        if rel.startswith("/") or ".." in Path(rel).parts or not re.fullmatch(r"(model|kernels)/[\w.]+", rel):
            raise MirrorcError(f"ta: generated file {rel!r} is not under model/ or kernels/")
    mem = memory_plan(lowered.sizes, lowered.tap_floats, lowered.num_classes)
    header = f"{name}_ta.h"
    k = lowered.num_classes
    values = {
        "NAME": name,
        "NAME_UPPER": name.upper(),
        "TA_HEADER": header,
        "UUID": str(uuid),
        "UUID_INIT": _uuid_initializer(uuid),
        "NUM_TAPS": len(lowered.tap_floats),
        "TAP_BYTES": ", ".join(str(4 * f) for f in lowered.tap_floats),
        "NUM_CLASSES": k,
        "LOGITS_BYTES": 4 * k,
        "SINGLE_BYTES": 4 * (sum(lowered.tap_floats) + k),
        "WEIGHT_BYTES": mem["weights"],
        "ARENA_BYTES": mem["arena"],
        "SESSION_BYTES": mem["session"],
        "STACK_BYTES": mem["stack"],
        "TA_STACK_SIZE": mem["ta_stack_size"],
        "TA_DATA_SIZE": mem["ta_data_size"],
        "MAX_SESSIONS": MAX_SESSIONS,
        "VERSION": version,
        "HOST_BINARY": f"{name}_host",
        **contract.ta_command_macros(),
        **guard.template_values(defences or guard.no_guard(lowered.num_classes)),
        "PROFILE_STEPS": profile_steps or 0,
    }
    files = {
        "Makefile": render("Makefile.in", values),
        "user_ta_header_defines.h": render("user_ta_header_defines.h.in", values),
        f"include/{header}": render("ta_header.h.in", values),
        "mirrorc_ta.c": render("mirrorc_ta.c.in", values),
        **lowered.files,
    }
    ta_srcs = ["mirrorc_ta.c"]
    profiling = profile_steps is not None
    if profiling != (PROFILE_HOOK in lowered.files.get("model/mirrorc_model.c", "")):
        raise MirrorcError("ta: a profiling TA needs the profiling lowering (lower(profile=True)), and only it")
    if profiling:
        files[PROFILE_SOURCE] = render(f"{PROFILE_SOURCE}.in", values)
        ta_srcs.append(PROFILE_SOURCE)
    # sub.mk per directory, OP-TEE style: the TA's own sources, then subdirs-y for the generated code
    subdirs = sorted({Path(rel).parts[0] for rel in lowered.files})
    profile_flags = ["# a calibration build (mirrorc profile): never ship it\n", f"cflags-y += -D{PROFILE_DEFINE}\n"]
    files["sub.mk"] = "".join(
        ["# Generated by mirrorc\n", "global-incdirs-y += include\n"]
        + [f"global-incdirs-y += {d}\n" for d in subdirs]
        + (profile_flags if profiling else [])
        + [f"srcs-y += {src}\n" for src in ta_srcs]
        + [f"subdirs-y += {d}\n" for d in subdirs]
    )
    code_flags = " ".join(TA_CODE_CFLAGS)
    for d in subdirs:
        srcs = sorted(Path(rel).name for rel in lowered.files if rel.startswith(d + "/") and rel.endswith(".c"))
        files[f"{d}/sub.mk"] = (
            "# Generated by mirrorc\n"
            + f"# the dev kit compiles at -Os, which leaves the kernels' loops scalar; {code_flags} vectorises them\n"
            + f"cflags-y += {code_flags}\n"
            + f"cflags-y += {' '.join(TA_CODE_WARNINGS)}\n"
            + "".join(f"srcs-y += {s}\n" for s in srcs)
        )
    for rel, text in files.items():
        path = ta_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    host_dir.mkdir(parents=True, exist_ok=True)
    (host_dir / "main.c").write_text(render("host_main.c.in", values))
    (host_dir / "Makefile").write_text(render("host_Makefile.in", values))
    return mem


# --- host builds -------------------------------------------------------------------------------------


# The calibration build (`write_ta(profile_steps=...)`): its extra source, the macro its sub.mk defines
# for mirrorc_ta.c, and the hook that the profiling lowering calls (passes.lower_c.PROFILE_HOOKS).
PROFILE_SOURCE = "mirrorc_profile_ta.c"
PROFILE_DEFINE = "MIRRORC_TA_PROFILE"
PROFILE_HOOK = "mirrorc_profile_begin();"


def ta_defines(ta_dir: Path) -> dict[str, str | None]:
    """The macros the TA root's sub.mk defines (`cflags-y += -DNAME[=VALUE]`), for host builds of the TA
    that do not run OP-TEE's make."""
    defines: dict[str, str | None] = {}
    for flag in ta_cflags(ta_dir, "."):
        if flag.startswith("-D"):
            name, _, value = flag[2:].partition("=")
            defines[name] = value or None
    return defines


def ta_sources(ta_dir: Path) -> list[Path]:
    """Every C source of a TA directory (entry points, model, kernels)."""
    return sorted(p for p in Path(ta_dir).rglob("*.c") if "sim" not in p.relative_to(ta_dir).parts)


def ta_include_dirs(ta_dir: Path) -> list[Path]:
    """The TA's include path as its sub.mk states it (global-incdirs-y), plus the TA root."""
    ta_dir = Path(ta_dir)
    dirs = [ta_dir]
    for line in (ta_dir / "sub.mk").read_text().splitlines():
        m = re.match(r"\s*global-incdirs-y\s*\+=\s*(\S+)", line)
        if m:
            dirs.append(ta_dir / m.group(1))
    return dirs


def ta_cflags(ta_dir: Path, subdir: str) -> list[str]:
    """The C flags a TA directory's sub.mk (`subdir` "." for the TA root) adds for its sources, as
    OP-TEE reads `cflags-y += ...` (per-file cflags-<file>-y are not used by mirrorc)."""
    flags: list[str] = []
    for line in (Path(ta_dir) / subdir / "sub.mk").read_text().splitlines():
        m = re.match(r"\s*cflags-y\s*\+=\s*([^#]*)", line)
        if m:
            flags += m.group(1).split()
    return flags


def build_simulator(build_dir: str | os.PathLike, *, debug: bool = False) -> Path:
    """Compile the TA of `build_dir` with the Internal API shim and the simulator's main; returns
    the executable (cached in build/ta/sim/ by the sources' contents). Reads the TA sources:
    call it from the build or a test, not from a normal-world process (use `simulator`)."""
    ta_dir = Path(build_dir) / "ta"
    if not (ta_dir / "sub.mk").is_file():
        raise MirrorcError(f"{ta_dir}: not a mirrorc TA directory (no sub.mk)")
    sources = ta_sources(ta_dir) + [SHIM / "tee_internal_sim.c", SHIM / "ta_sim_main.c"]
    return cbuild.build(
        sources,
        kind="exe",
        name="ta_sim" + ("_debug" if debug else ""),
        include_dirs=[SHIM, *ta_include_dirs(ta_dir)],
        cflags=sim_cflags(),
        defines={**ta_defines(ta_dir), **(DEBUG_DEFINES if debug else {})} or None,
        ldflags=["-pthread"],
        out_dir=ta_dir / "sim",
    )


# libFuzzer with the address and undefined-behaviour sanitizers; any UB report is a finding.
FUZZ_CFLAGS = (
    "-std=c99",
    "-O1",
    "-g",
    "-fsanitize=fuzzer,address,undefined",
    "-fno-sanitize-recover=undefined",
    "-D_GNU_SOURCE",
)


# The fuzzed TA's defences (every one on, small enough that inputs reach them): the allowed client is
# user uid 1000; the range is arbitrary, as the fuzzer's logits are.
FUZZ_QUERY_BUDGET = 1000
FUZZ_RATE = (5, 1)  # labels/s, burst: a second answer within 200 ms is refused


def fuzz_defences(num_classes: int) -> dict:
    """The plan "guard" of the TA the libFuzzer harness fuzzes (benchmarks/ta_fuzz.py, tests): range
    check, query budget, session cap, an allow-client rule and a rate limit."""
    return {
        "range_check": True,
        "logit_min": [-4.0 - 0.5 * k for k in range(num_classes)],
        "logit_max": [4.0 + 0.25 * k for k in range(num_classes)],
        "margin": guard.RANGE_MARGIN,
        "query_budget": FUZZ_QUERY_BUDGET,
        **guard.access(allow_client="user:1000", rate_limit=FUZZ_RATE[0], rate_burst=FUZZ_RATE[1]),
    }


def fuzz_args(seconds: int, own_rss_mb: int = 2048) -> list[str]:
    """libFuzzer's options for a bounded run. Its RSS limit reads getrusage's peak, which Linux carries
    over fork and exec from the parent: a fuzzer started by a pytest that has grown to 3.4 GB would
    report out-of-memory on its first input. So the limit is the fuzzer's own `own_rss_mb` above the
    peak it inherits."""
    import resource

    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
    return [
        f"-max_total_time={seconds}",
        f"-rss_limit_mb={inherited_mb + own_rss_mb}",
        f"-malloc_limit_mb={own_rss_mb}",
        "-timeout=10",
        "-print_final_stats=1",
    ]


def fuzz_storage() -> tempfile.TemporaryDirectory:
    """A directory for the fuzzed TA's query counter ($MIRRORC_TA_STORAGE of the harness): in memory
    (/dev/shm) where there is one, as every answer commits it (an fdatasync: 5 ms on this disk)."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(prefix="mirrorc-fuzz-", dir=shm if shm.is_dir() else None)


def build_fuzzer(build_dir: str | os.PathLike, compiler: str = "clang") -> Path:
    """The libFuzzer harness runtime_c/fuzz/ta_fuzz.c linked with the build's TA (entry points,
    generated model, kernels) and the Internal API shim, under ASan and UBSan (tests and
    benchmarks; reads the TA sources, like build_simulator)."""
    ta_dir = Path(build_dir) / "ta"
    headers = sorted((ta_dir / "include").glob("*_ta.h"))
    if not (ta_dir / "sub.mk").is_file() or len(headers) != 1:
        raise MirrorcError(f"{ta_dir}: not a mirrorc TA directory (no sub.mk or no single include/*_ta.h)")
    return cbuild.build(
        ta_sources(ta_dir) + [SHIM / "tee_internal_sim.c", runtime_c.FUZZ_DIR / "ta_fuzz.c"],
        kind="exe",
        name="ta_fuzz",
        include_dirs=[SHIM, *ta_include_dirs(ta_dir)],
        cflags=FUZZ_CFLAGS,
        defines={"MIRRORC_FUZZ_TA_HEADER": f'"{headers[0].name}"', "MIRRORC_FUZZ_MAX_SESSIONS": MAX_SESSIONS},
        ldflags=["-fsanitize=fuzzer,address,undefined"],
        compiler=compiler,
        out_dir=ta_dir / "sim",  # beside the simulator: host builds of the TA, holding its weights
    )


def _source_stamp(ta_dir: Path) -> list:
    """What the TA sources look like from outside (name, size, mtime), read without opening them."""
    stamp = []
    for p in sorted(ta_dir.rglob("*")):
        rel = p.relative_to(ta_dir)
        if p.is_file() and rel.parts[0] != "sim":
            st = p.stat()
            stamp.append([str(rel), st.st_size, st.st_mtime_ns])
    for p in sorted(SHIM.glob("*")):
        st = p.stat()
        stamp.append([f"shim/{p.name}", st.st_size, st.st_mtime_ns])
    stamp.append(["cflags", *sim_cflags()])
    return stamp


def simulator(build_dir: str | os.PathLike) -> Path:
    """The TA simulator executable of a build, compiled in a child process if missing or stale."""
    ta_dir = Path(build_dir) / "ta"
    record = ta_dir / "sim" / "sim.json"
    stamp = _source_stamp(ta_dir)
    try:
        known = json.loads(record.read_text())
        exe = ta_dir / "sim" / known["binary"]
        if known["stamp"] == stamp and exe.is_file():
            return exe
    except (OSError, ValueError, KeyError):
        pass
    proc = subprocess.run(
        [sys.executable, "-m", "mirrorc.backend.ta", "sim", str(build_dir)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise MirrorcError(f"{ta_dir}: building the TA simulator: {msg}")
    return Path(proc.stdout.strip())


def _build_and_record(build_dir: Path) -> Path:
    ta_dir = Path(build_dir) / "ta"
    stamp = _source_stamp(ta_dir)
    exe = build_simulator(build_dir)
    with atomic_file(ta_dir / "sim" / "sim.json") as tmp:
        tmp.write_text(json.dumps({"binary": exe.name, "stamp": stamp}))
    return exe


def client_library() -> Path:
    """The libteec-compatible Client API library that drives the simulator (holds no model)."""
    return cbuild.build(
        [SHIM / "teec_sim.c"],
        kind="shared",
        name="libteec_sim",
        include_dirs=[SHIM],
        cflags=sim_cflags(),
        ldflags=["-pthread"],
    )


def build_host_example(build_dir: str | os.PathLike) -> Path:
    """Compile build/host/main.c unchanged against the simulator's libteec (for tests)."""
    lib = client_library()
    host = Path(build_dir) / "host"
    return cbuild.build(
        [host / "main.c"],
        kind="exe",
        name="host_example",
        include_dirs=[SHIM, Path(build_dir) / "ta" / "include"],
        cflags=SIM_CFLAGS,
        ldflags=[str(lib), f"-Wl,-rpath,{lib.parent}"],
        out_dir=host / "sim",
    )


if __name__ == "__main__":  # python -m mirrorc.backend.ta sim BUILD_DIR: compile the simulator, print its path
    if len(sys.argv) != 3 or sys.argv[1] != "sim":
        sys.exit("usage: python -m mirrorc.backend.ta sim BUILD_DIR")
    try:
        print(_build_and_record(Path(sys.argv[2])))
    except MirrorcError as e:
        sys.exit(f"mirrorc: error: {e}")
