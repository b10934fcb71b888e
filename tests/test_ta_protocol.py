"""The TA's protocol and state machine, run in the simulator through the Client API shim, on a
hand-written model with the generated-model interface (tests/test_ta_support.py)."""

from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np
import pytest

from mirrorc.backend import ta
from mirrorc.errors import MirrorcError
from mirrorc.tee import teec
from passes import contract
from test_ta_support import (
    FIXTURE_CLASSES,
    FIXTURE_TAP_FLOATS,
    fixture_label,
    fixture_logits,
    random_inputs,
    write_fixture_build,
)

T = teec
TAP, FINAL, SINGLE, DEBUG_FINAL = (
    contract.CMD_TAP_BASE,
    contract.CMD_FINAL,
    contract.CMD_SINGLE,
    contract.CMD_DEBUG_FINAL,
)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    build = tmp_path_factory.mktemp("fixture_build")
    uuid = write_fixture_build(build)
    return build, uuid


@pytest.fixture(scope="module")
def context(build):
    ctx = T.Context.simulator(build[0])
    yield ctx
    ctx.close()


@pytest.fixture()
def session(context, build):
    s = context.open_session(build[1])
    yield s
    s.close()


def tap_op(buf) -> T.Operation:
    return T.Operation(T.TEEC_MEMREF_TEMP_INPUT).temp(0, buf)


def final_op(buf) -> T.Operation:
    return T.Operation(T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_OUTPUT).temp(0, buf)


def stream(session, taps, logits) -> int:
    for k, t in enumerate(taps):
        session.invoke(TAP + k, tap_op(t))
    op = session.invoke(FINAL, final_op(logits))
    return op.value_out(1)[0]


def single(session, taps, logits) -> int:
    op = session.invoke(SINGLE, final_op(np.concatenate([*taps, logits])))
    return op.value_out(1)[0]


def test_stream_and_single_match_reference(session):
    rng = np.random.default_rng(1)
    for _ in range(200):
        taps, logits = random_inputs(rng)
        want = fixture_label(taps, logits)
        assert stream(session, taps, logits) == want
        assert single(session, taps, logits) == want


def test_generated_files_follow_optee_layout(build):
    ta_dir = build[0] / "ta"
    for rel in (
        "Makefile",
        "sub.mk",
        "user_ta_header_defines.h",
        "include/fixture_ta.h",
        "mirrorc_ta.c",
        "model/sub.mk",
        "model/mirrorc_model.c",
    ):
        assert (ta_dir / rel).is_file(), rel
    assert f"BINARY={build[1]}" in (ta_dir / "Makefile").read_text()
    assert "-include $(TA_DEV_KIT_DIR)/mk/ta_dev_kit.mk" in (ta_dir / "Makefile").read_text()
    assert "CFG_TA_OPTEE_CORE_API_COMPAT_1_1" not in (ta_dir / "Makefile").read_text()
    info = subprocess.run([ta.simulator(build[0]), "--info"], capture_output=True, text=True, check=True).stdout
    assert build[1] in info
    # the same model always gets the same UUID, another model another one
    assert ta.ta_uuid("0" * 64) == ta.ta_uuid("0" * 64) != ta.ta_uuid("1" * 64)


def refused(session, command, op, expected):
    res, origin = session.try_invoke(command, op)
    assert res == expected, f"command 0x{command:x}: got 0x{res:08x}, want 0x{expected:08x}"
    assert origin == T.TEEC_ORIGIN_TRUSTED_APP
    return res


def test_malformed_calls_are_refused_and_the_ta_survives(session):
    rng = np.random.default_rng(2)
    taps, logits = random_inputs(rng)
    want = fixture_label(taps, logits)
    t0, t1 = taps
    bad_cases = [
        # wrong parameter types
        (TAP, T.Operation(T.TEEC_VALUE_INPUT).value(0, 1, 2), T.TEEC_ERROR_BAD_PARAMETERS),
        (TAP, T.Operation(T.TEEC_MEMREF_TEMP_INOUT).temp(0, t0.copy()), T.TEEC_ERROR_BAD_PARAMETERS),
        (TAP, T.Operation(T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_OUTPUT).temp(0, t0), T.TEEC_ERROR_BAD_PARAMETERS),
        (FINAL, tap_op(logits), T.TEEC_ERROR_BAD_PARAMETERS),
        (
            SINGLE,
            T.Operation(T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_INOUT).temp(0, np.concatenate([*taps, logits])),
            T.TEEC_ERROR_BAD_PARAMETERS,
        ),
        # short and long buffers
        (TAP, tap_op(t0[:2]), T.TEEC_ERROR_BAD_PARAMETERS),
        (TAP, tap_op(np.concatenate([t0, t0])), T.TEEC_ERROR_BAD_PARAMETERS),
        (TAP, T.Operation(T.TEEC_MEMREF_TEMP_INPUT).temp(0, None, 12), T.TEEC_ERROR_BAD_PARAMETERS),
        (FINAL, final_op(logits[:3]), T.TEEC_ERROR_BAD_PARAMETERS),
        (SINGLE, final_op(np.concatenate([*taps, logits, logits])), T.TEEC_ERROR_BAD_PARAMETERS),
        # FINAL before the taps, a tap out of order
        (FINAL, final_op(logits), T.TEEC_ERROR_BAD_STATE),
        (TAP + 1, tap_op(t1), T.TEEC_ERROR_BAD_STATE),
        # unknown commands, including a tap index past the last tap
        (TAP + len(FIXTURE_TAP_FLOATS), tap_op(t1), T.TEEC_ERROR_NOT_SUPPORTED),
        (0x0, None, T.TEEC_ERROR_NOT_SUPPORTED),
        (DEBUG_FINAL, final_op(logits), T.TEEC_ERROR_NOT_SUPPORTED),  # absent from a non-debug TA
        (0xFFFFFFFF, None, T.TEEC_ERROR_NOT_SUPPORTED),
    ]
    for command, op, expected in bad_cases:
        refused(session, command, op, expected)
        assert stream(session, taps, logits) == want
        # a refusal in the middle of a stream resets it: the next FINAL is too early
        session.invoke(TAP, tap_op(t0))
        if command == TAP + 1 and expected == T.TEEC_ERROR_BAD_STATE:  # in order now: refuse a repeat
            command, op = TAP, tap_op(t0)
        refused(session, command, op, expected)
        refused(session, FINAL, final_op(logits), T.TEEC_ERROR_BAD_STATE)
        assert single(session, taps, logits) == want


def test_out_of_order_streams_reset(session):
    rng = np.random.default_rng(3)
    taps, logits = random_inputs(rng)
    want = fixture_label(taps, logits)
    session.invoke(TAP, tap_op(taps[0]))
    refused(session, TAP, tap_op(taps[0]), T.TEEC_ERROR_BAD_STATE)  # tap 0 twice
    refused(session, TAP + 1, tap_op(taps[1]), T.TEEC_ERROR_BAD_STATE)  # stream was reset
    session.invoke(TAP, tap_op(taps[0]))
    refused(session, SINGLE, final_op(np.concatenate([*taps, logits])), T.TEEC_ERROR_BAD_STATE)  # mid-stream
    session.invoke(TAP, tap_op(taps[0]))
    session.invoke(TAP + 1, tap_op(taps[1]))
    refused(session, TAP + 1, tap_op(taps[1]), T.TEEC_ERROR_BAD_STATE)
    assert stream(session, taps, logits) == want


def test_session_closed_mid_sequence_and_sessions_are_independent(context, build):
    rng = np.random.default_rng(4)
    a, b = context.open_session(build[1]), context.open_session(build[1])
    taps, logits = random_inputs(rng)
    taps2, logits2 = random_inputs(rng)
    a.invoke(TAP, tap_op(taps[0]))
    b.invoke(TAP, tap_op(taps2[0]))  # interleaved streams keep their own carry
    a.invoke(TAP + 1, tap_op(taps[1]))
    b.invoke(TAP + 1, tap_op(taps2[1]))
    assert b.invoke(FINAL, final_op(logits2)).value_out(1)[0] == fixture_label(taps2, logits2)
    assert a.invoke(FINAL, final_op(logits)).value_out(1)[0] == fixture_label(taps, logits)
    a.invoke(TAP, tap_op(taps[0]))
    a.close()  # mid-sequence
    c = context.open_session(build[1])
    refused(c, FINAL, final_op(logits), T.TEEC_ERROR_BAD_STATE)  # a new session starts with no stream
    assert stream(c, taps, logits) == fixture_label(taps, logits)
    c.close()
    b.close()


def test_shared_memory_memrefs(context, session):
    rng = np.random.default_rng(5)
    taps, logits = random_inputs(rng)
    flat = np.concatenate([*taps, logits])
    shm = context.allocate_shared_memory(flat.nbytes + 64, T.TEEC_MEM_INPUT)
    view = np.frombuffer(shm.view(), np.float32)
    view[4 : 4 + flat.size] = flat  # at a 16-byte offset
    op = T.Operation(T.TEEC_MEMREF_PARTIAL_INPUT, T.TEEC_VALUE_OUTPUT).memref(0, shm, 16, flat.nbytes)
    assert session.invoke(SINGLE, op).value_out(1)[0] == fixture_label(taps, logits)
    # the whole block is too long for the TA, and a partial reference may not leave its block
    refused(
        session,
        SINGLE,
        T.Operation(T.TEEC_MEMREF_WHOLE, T.TEEC_VALUE_OUTPUT).memref(0, shm),
        T.TEEC_ERROR_BAD_PARAMETERS,
    )
    res, origin = session.try_invoke(
        SINGLE, T.Operation(T.TEEC_MEMREF_PARTIAL_INPUT, T.TEEC_VALUE_OUTPUT).memref(0, shm, 64, flat.nbytes + 16)
    )
    assert (res, origin) == (T.TEEC_ERROR_BAD_PARAMETERS, T.TEEC_ORIGIN_API)
    # an input-only block cannot be passed for output
    res, origin = session.try_invoke(
        SINGLE, T.Operation(T.TEEC_MEMREF_PARTIAL_OUTPUT, T.TEEC_VALUE_OUTPUT).memref(0, shm, 0, flat.nbytes)
    )
    assert res == T.TEEC_ERROR_BAD_PARAMETERS
    shm.release()
    assert single(session, taps, logits) == fixture_label(taps, logits)


def test_wrong_uuid_and_missing_simulator(context, build, tmp_path):
    with pytest.raises(T.TeecError) as e:
        context.open_session("00000000-0000-0000-0000-000000000001")
    assert e.value.result == T.TEEC_ERROR_ITEM_NOT_FOUND
    with pytest.raises(T.TeecError) as e:
        T.Context(ta.client_library(), str(tmp_path / "no-such-simulator"))
    assert e.value.result == T.TEEC_ERROR_ITEM_NOT_FOUND


def test_heap_limit_is_ta_data_size(tmp_path):
    """The simulator's TEE_Malloc is bounded by TA_DATA_SIZE, as the TA heap is on a board."""
    uuid = write_fixture_build(tmp_path)
    defines = tmp_path / "ta" / "user_ta_header_defines.h"
    text = defines.read_text()
    defines.write_text(text.replace("#define TA_DATA_SIZE 8192", "#define TA_DATA_SIZE 16"))
    with T.Context.simulator(tmp_path) as ctx:
        with pytest.raises(T.TeecError) as e:
            ctx.open_session(uuid)
        assert e.value.result == T.TEEC_ERROR_OUT_OF_MEMORY


def test_dead_simulator_is_target_dead(build):
    """A TA that dies (the simulator process killed) answers TEEC_ERROR_TARGET_DEAD, not a hang."""
    before = _simulators()
    with T.Context.simulator(build[0]) as ctx:
        s = ctx.open_session(build[1])
        kids = sorted(_simulators() - before)  # the simulator this context started
        assert len(kids) == 1
        os.kill(kids[0], 9)
        rng = np.random.default_rng(6)
        taps, logits = random_inputs(rng)
        res, origin = s.try_invoke(SINGLE, final_op(np.concatenate([*taps, logits])))
        assert (res, origin) == (T.TEEC_ERROR_TARGET_DEAD, T.TEEC_ORIGIN_TEE)


def test_sleeping_transport(build, monkeypatch):
    """With polling off both sides sleep on the mailbox's futexes at once: the same labels, a killed
    simulator is still TARGET_DEAD, and closing the context ends the simulator."""
    monkeypatch.setenv("MIRRORC_SIM_SPIN_US", "0")
    rng = np.random.default_rng(7)
    before = _simulators()
    with T.Context.simulator(build[0]) as ctx:
        s = ctx.open_session(build[1])
        for _ in range(50):
            taps, logits = random_inputs(rng)
            assert single(s, taps, logits) == fixture_label(taps, logits)
            assert stream(s, taps, logits) == fixture_label(taps, logits)
        s.close()
        kid = sorted(_simulators() - before)
    assert len(kid) == 1 and kid[0] not in _simulators()  # gone, and reaped
    with T.Context.simulator(build[0]) as ctx:
        s = ctx.open_session(build[1])
        os.kill(sorted(_simulators() - before)[0], 9)
        taps, logits = random_inputs(rng)
        assert s.try_invoke(SINGLE, final_op(np.concatenate([*taps, logits])))[0] == T.TEEC_ERROR_TARGET_DEAD


def _simulators() -> set[int]:
    """This process's simulator children, found through /proc."""
    return {
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _ppid(int(p)) == os.getpid() and "ta_sim" in _cmdline(int(p))
    }


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def test_debug_build_returns_logits(build):
    """A test-only simulator build exposes the MirrorNet logits; the TA for a board does not."""
    exe = ta.build_simulator(build[0], debug=True)
    rng = np.random.default_rng(7)
    with T.Context(ta.client_library(), str(exe)) as ctx:
        s = ctx.open_session(build[1])
        worst = 0.0
        for _ in range(50):
            taps, logits = random_inputs(rng)
            for k, t in enumerate(taps):
                s.invoke(TAP + k, tap_op(t))
            out = np.zeros(FIXTURE_CLASSES, np.float32)
            op = T.Operation(T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_OUTPUT, T.TEEC_MEMREF_TEMP_OUTPUT)
            op.temp(0, logits).temp(2, out)
            s.invoke(DEBUG_FINAL, op)
            worst = max(worst, float(np.abs(out - fixture_logits(taps, logits)).max()))
            assert op.value_out(1)[0] == fixture_label(taps, logits)
        # registered memory, both ways: input taps/logits and the output logits in caller-owned arrays
        taps, logits = random_inputs(rng)
        inputs = np.concatenate([*taps, logits])
        out = np.zeros(FIXTURE_CLASSES, np.float32)
        shm_in = ctx.register_shared_memory(inputs, T.TEEC_MEM_INPUT)
        shm_out = ctx.register_shared_memory(out, T.TEEC_MEM_OUTPUT)
        for k, f in enumerate(FIXTURE_TAP_FLOATS):
            s.invoke(
                TAP + k,
                T.Operation(T.TEEC_MEMREF_PARTIAL_INPUT).memref(0, shm_in, 4 * sum(FIXTURE_TAP_FLOATS[:k]), 4 * f),
            )
        op = T.Operation(T.TEEC_MEMREF_PARTIAL_INPUT, T.TEEC_VALUE_OUTPUT, T.TEEC_MEMREF_WHOLE)
        op.memref(0, shm_in, 4 * sum(FIXTURE_TAP_FLOATS), 4 * FIXTURE_CLASSES).memref(2, shm_out)
        s.invoke(DEBUG_FINAL, op)
        assert op.value_out(1)[0] == fixture_label(taps, logits)
        worst = max(worst, float(np.abs(out - fixture_logits(taps, logits)).max()))
        shm_in.release()
        shm_out.release()
        print(f"fixture TA logits vs reference: max abs difference {worst:.3g}")
        assert worst < 1e-5


def test_host_example_links_against_the_shim(build, tmp_path):
    """build/host/main.c, unchanged, against the simulator's libteec: both modes, right labels."""
    exe = ta.build_host_example(build[0])
    rng = np.random.default_rng(8)
    images = [random_inputs(rng) for _ in range(20)]
    data = tmp_path / "inputs.f32"
    np.concatenate([np.concatenate([*t, logits]) for t, logits in images]).astype(np.float32).tofile(data)
    env = dict(os.environ, MIRRORC_TA_SIM=str(ta.simulator(build[0])))
    want = [fixture_label(t, logits) for t, logits in images]
    for mode in ([], ["--single"]):
        out = subprocess.run([exe, data, *mode], capture_output=True, text=True, env=env, check=True).stdout
        assert [int(v) for v in out.split()] == want
    # without a simulator the default TEE does not exist
    env.pop("MIRRORC_TA_SIM")
    proc = subprocess.run([exe, data], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "TEEC_InitializeContext failed: 0xffff0008" in proc.stderr


def test_host_makefile_uses_the_cross_compiler(tmp_path):
    """`make CROSS_COMPILE=...` in build/host compiles and links with the cross gcc (make's own
    default CC=cc must not win), and an explicit CC still does. Dry runs: no compiler needed."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    write_fixture_build(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "CC"}

    def commands(*args: str) -> list[str]:
        make = ["make", "-n", "-B", "-C", str(tmp_path / "host"), *args]
        out = subprocess.run(make, capture_output=True, text=True, env=env, check=True).stdout
        return [line for line in out.splitlines() if " -o " in line]

    cross = commands("CROSS_COMPILE=aarch64-linux-gnu-", "TEEC_EXPORT=/opt/teec")
    print(cross)
    assert len(cross) == 2 and all(line.startswith("aarch64-linux-gnu-gcc ") for line in cross)
    assert all(line.startswith("clang ") for line in commands("CC=clang"))
    assert all(line.startswith("gcc ") for line in commands("CROSS_COMPILE="))


def test_client_structures_match_the_c_header():
    """mirrorc.tee.teec's ctypes layouts equal tee_client_api.h's (checked by the C compiler)."""
    from mirrorc.backend import cbuild

    src = ta.SHIM / "tee_client_api.h"
    code = (
        f'#include "{src}"\n#include <stddef.h>\n'
        "size_t layout[] = { sizeof(TEEC_Context), sizeof(TEEC_UUID), sizeof(TEEC_SharedMemory),"
        " sizeof(TEEC_Parameter), sizeof(TEEC_Session), sizeof(TEEC_Operation),"
        " offsetof(TEEC_Operation, params), offsetof(TEEC_SharedMemory, imp) };\n"
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        c = Path(d) / "layout.c"
        c.write_text(code)
        lib = ctypes.CDLL(str(cbuild.build([c], name="teec_layout", out_dir=d)))
        got = list((ctypes.c_size_t * 8).in_dll(lib, "layout"))
    want = [
        ctypes.sizeof(T.TEEC_Context),
        ctypes.sizeof(T.TEEC_UUID),
        ctypes.sizeof(T.TEEC_SharedMemory),
        ctypes.sizeof(T.TEEC_Parameter),
        ctypes.sizeof(T.TEEC_Session),
        ctypes.sizeof(T.TEEC_Operation),
        T.TEEC_Operation.params.offset,
        T.TEEC_SharedMemory.imp.offset,
    ]
    assert got == want


def test_bad_build_dir_is_a_user_error(tmp_path):
    with pytest.raises(MirrorcError, match="not a mirrorc TA directory"):
        ta.build_simulator(tmp_path)
