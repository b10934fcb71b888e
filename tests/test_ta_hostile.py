"""A hostile normal world against the simulator: Client API calls whose sizes would wrap the
library's arithmetic, and raw mailbox requests forged without the library (shared memory that
declares more than its memfd holds). Each must be refused, leave the context and the TA working,
and finish: the calls run in a child process under a timeout, so a crash or a hang (the
bounce-buffer growth loop held the context lock) is a failure, not a dead test run."""

from __future__ import annotations

import ctypes
import fcntl
import json
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

import numpy as np
import pytest

from mirrorc.backend import cbuild, ta
from mirrorc.tee import teec as T
from passes import contract
from test_ta_support import fixture_label, random_inputs, write_fixture_build

CHILD_TIMEOUT_S = 120
U64 = 2**64


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    build = tmp_path_factory.mktemp("hostile_build")
    uuid = write_fixture_build(build)
    return build, uuid


def _run_child(case: str, build_dir: Path, uuid: str) -> dict:
    """Run `case` of this module in a child process; its last stdout line is a JSON result."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, __file__, case, str(build_dir), uuid],
        capture_output=True,
        text=True,
        env=env,
        timeout=CHILD_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"{case}: exit {proc.returncode} (a negative code is a signal)\n{proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the Client API library -----------------------------------------------------------------------


def _wrapping_sizes_case(build_dir: str, uuid: str) -> dict:
    """Temporary memrefs whose sizes wrap ALIGN8 or the bounce-buffer sum or growth; after each,
    a valid call on the same session and context still answers the right label."""
    rng = np.random.default_rng(11)
    taps, logits = random_inputs(rng)
    flat = np.concatenate([*taps, logits])
    want = fixture_label(taps, logits)
    small = np.zeros(16, np.uint8)
    cases = {
        "size 2^64-1": [U64 - 1],
        "size 2^64-7": [U64 - 7],
        "size 2^64-8": [U64 - 8],
        "size 2^63+1": [2**63 + 1],
        "size 2^63": [2**63],
        "sizes summing to 2^64": [16, U64 - 16],
        "sizes summing past 2^64": [2**63, 2**63 + 8],
    }
    results = {}
    with T.Context.simulator(build_dir) as ctx:
        s = ctx.open_session(uuid)
        for name, sizes in cases.items():
            types = [T.TEEC_MEMREF_TEMP_INPUT] * len(sizes) + [T.TEEC_VALUE_OUTPUT]
            op = T.Operation(*types)
            for i, size in enumerate(sizes):
                op.temp(i, small, size)
            res, origin = s.try_invoke(contract.CMD_SINGLE, op)
            ok = T.Operation(T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_OUTPUT).temp(0, flat)
            after = s.invoke(contract.CMD_SINGLE, ok)
            assert after is not None
            results[name] = [res, origin, after.value_out(1)[0] == want]
        # a registered block whose size grew after registration may not reach past the shared copy
        arr = np.zeros(64, np.float32)
        shm = ctx.register_shared_memory(arr, T.TEEC_MEM_INPUT)
        shm.shm.size = 1 << 20
        op = T.Operation(T.TEEC_MEMREF_WHOLE, T.TEEC_VALUE_OUTPUT).memref(0, shm)
        res, origin = s.try_invoke(contract.CMD_SINGLE, op)
        results["registered size grown"] = [res, origin, single_label(s, flat) == want]
    return results


def single_label(session: T.Session, flat: np.ndarray) -> int:
    op = session.invoke(contract.CMD_SINGLE, T.Operation(T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_OUTPUT).temp(0, flat))
    assert op is not None
    return op.value_out(1)[0]


def test_wrapping_temp_memref_sizes_are_refused(build):
    results = _run_child("sizes", *build)
    for name, (res, origin, still_right) in results.items():
        print(f"{name}: {T.ERROR_NAMES.get(res, hex(res))}, origin {T.ORIGIN_NAMES.get(origin)}")
        assert res in (T.TEEC_ERROR_OUT_OF_MEMORY, T.TEEC_ERROR_BAD_PARAMETERS), name
        assert origin == T.TEEC_ORIGIN_API, name  # refused before anything reached the TA
        assert still_right, f"{name}: the next valid call gave a wrong label"


# --- raw mailbox requests, forged without the library ---------------------------------------------


class MsimParam(ctypes.Structure):
    _fields_ = [
        ("shm_id", ctypes.c_uint32),
        ("a", ctypes.c_uint32),
        ("b", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    ]


class MsimRequest(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_uint32),
        ("op", ctypes.c_uint32),
        ("session", ctypes.c_uint32),
        ("command", ctypes.c_uint32),
        ("param_types", ctypes.c_uint32),
        ("login", ctypes.c_uint32),
        ("uuid_time_low", ctypes.c_uint32),
        ("uuid_time_mid", ctypes.c_uint16),
        ("uuid_time_hi_and_version", ctypes.c_uint16),
        ("uuid_clock_seq_and_node", ctypes.c_uint8 * 8),
        ("shm_id", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("shm_size", ctypes.c_uint64),
        ("params", MsimParam * 4),
    ]


class MsimResponse(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_uint32),
        ("result", ctypes.c_uint32),
        ("origin", ctypes.c_uint32),
        ("session", ctypes.c_uint32),
        ("params", MsimParam * 4),
    ]


class MsimMailbox(ctypes.Structure):
    _fields_ = [
        ("req_seq", ctypes.c_uint32),
        ("server_sleeping", ctypes.c_uint32),
        ("closing", ctypes.c_uint32),
        ("pad0", ctypes.c_uint32 * 13),
        ("rsp_seq", ctypes.c_uint32),
        ("client_sleeping", ctypes.c_uint32),
        ("pad1", ctypes.c_uint32 * 14),
        ("req", MsimRequest),
        ("rsp", MsimResponse),
    ]


MSIM_MAGIC = 0x4D53494D
MSIM_OPEN_SESSION, MSIM_INVOKE, MSIM_SHM_REGISTER = 1, 2, 4
TA_MEMREF_INPUT, TA_VALUE_OUTPUT = 5, 2
MAILBOX_BYTES = (ctypes.sizeof(MsimMailbox) + 4095) // 4096 * 4096


class RawClient:
    """The simulator spawned and driven by hand, as a hostile process could: fd 3 its socket, fd 4
    the mailbox; requests are written into the page, the simulator notices within one nap."""

    def __init__(self, simulator: Path):
        self.mbfd = os.memfd_create("raw-mailbox", os.MFD_ALLOW_SEALING)
        os.ftruncate(self.mbfd, MAILBOX_BYTES)
        self.page = mmap.mmap(self.mbfd, MAILBOX_BYTES)
        self.mb = MsimMailbox.from_buffer(self.page)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # sources above the targets, so one dup2 cannot overwrite the other's source
        sock_fd, mb_fd = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (theirs.fileno(), self.mbfd))
        self.pid = os.posix_spawn(
            str(simulator),
            [str(simulator), "--serve"],
            dict(os.environ, MIRRORC_SIM_SPIN_US="0"),
            file_actions=[(os.POSIX_SPAWN_DUP2, sock_fd, 3), (os.POSIX_SPAWN_DUP2, mb_fd, 4)],
        )
        for fd in (sock_fd, mb_fd):
            os.close(fd)
        theirs.close()
        self.status: int | None = None
        self.seq = 0

    def exited(self) -> int | None:
        """The simulator's wait status once it has exited, else None."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            self.status = status if pid else None
        return self.status

    def request(self, req: MsimRequest, fd: int | None = None) -> MsimResponse:
        if fd is not None:
            socket.send_fds(self.sock, [b"\0"], [fd])
        req.magic = MSIM_MAGIC
        ctypes.memmove(ctypes.addressof(self.mb.req), ctypes.addressof(req), ctypes.sizeof(req))
        self.seq += 1
        self.mb.req_seq = self.seq
        deadline = time.monotonic() + 30
        while self.mb.rsp_seq != self.seq:
            if self.exited() is not None:
                raise RuntimeError(f"the simulator died (wait status {self.status})")
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not answer")
            time.sleep(0.001)
        return MsimResponse.from_buffer_copy(self.mb.rsp)

    def register(self, shm_id: int, memfd: int, declared: int) -> int:
        req = MsimRequest(op=MSIM_SHM_REGISTER, shm_id=shm_id, shm_size=declared)
        return self.request(req, memfd).result

    def open_session(self, uuid: str) -> int:
        u = T.TEEC_UUID.from_uuid(uuidlib.UUID(uuid))
        req = MsimRequest(op=MSIM_OPEN_SESSION, uuid_time_low=u.timeLow, uuid_time_mid=u.timeMid)
        req.uuid_time_hi_and_version = u.timeHiAndVersion
        req.uuid_clock_seq_and_node[:] = list(u.clockSeqAndNode)
        rsp = self.request(req)
        assert rsp.result == T.TEEC_SUCCESS, hex(rsp.result)
        return rsp.session

    def single(self, session: int, shm_id: int, offset: int, size: int) -> tuple[int, int]:
        """CMD_SINGLE on a memref into registered memory: (result, label)."""
        req = MsimRequest(op=MSIM_INVOKE, session=session, command=contract.CMD_SINGLE)
        req.param_types = TA_MEMREF_INPUT | TA_VALUE_OUTPUT << 4
        req.params[0].shm_id, req.params[0].offset, req.params[0].size = shm_id, offset, size
        rsp = self.request(req)
        return rsp.result, rsp.params[1].a

    def close(self) -> None:
        self.mb.closing = 1
        self.mb.req_seq = self.seq + 1
        self.sock.close()
        deadline = time.monotonic() + 30
        while self.exited() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        del self.mb
        self.page.close()
        os.close(self.mbfd)


def _forged_mailbox_case(build_dir: str, uuid: str) -> dict:
    rng = np.random.default_rng(12)
    taps, logits = random_inputs(rng)
    flat = np.concatenate([*taps, logits]).astype(np.float32)
    want = fixture_label(taps, logits)
    client = RawClient(ta.simulator(build_dir))
    results: dict = {}
    try:
        session = client.open_session(uuid)
        # 1 MiB declared on a 4 KiB memfd, then a memref at 512 KiB (was SIGBUS in the simulator)
        small = os.memfd_create("forged", os.MFD_ALLOW_SEALING)
        os.ftruncate(small, 4096)
        results["declared 1 MiB on 4 KiB"] = client.register(1, small, 1 << 20)
        results["memref at 512 KiB"] = client.single(session, 1, 512 * 1024, flat.nbytes)[0]
        # a memfd that cannot be sealed could be shrunk under the mapping later
        unsealable = os.memfd_create("unsealable")
        os.ftruncate(unsealable, 4096)
        results["unsealable memfd"] = client.register(2, unsealable, 4096)
        # an honest registration works, and then cannot be shrunk under the simulator
        results["honest 4 KiB"] = client.register(3, small, 4096)
        view = mmap.mmap(small, 4096)
        view[: flat.nbytes] = flat.tobytes()
        res, label = client.single(session, 3, 0, flat.nbytes)
        results["honest call"] = [res, label == want]
        try:
            os.ftruncate(small, 0)
            results["shrink after registration"] = "allowed"
        except PermissionError:
            results["shrink after registration"] = "refused"
        results["past the end of an honest block"] = client.single(session, 3, 4096 - 8, flat.nbytes)[0]
        res, label = client.single(session, 3, 0, flat.nbytes)
        results["honest call after"] = [res, label == want]
        results["alive"] = client.exited() is None
        view.close()
        for fd in (small, unsealable):
            os.close(fd)
    finally:
        client.close()
    return results


def test_forged_mailbox_shared_memory_is_refused(build):
    r = _run_child("forged", *build)
    print(r)
    assert r["declared 1 MiB on 4 KiB"] == T.TEEC_ERROR_BAD_PARAMETERS
    assert r["memref at 512 KiB"] == T.TEEC_ERROR_BAD_PARAMETERS  # never registered
    assert r["unsealable memfd"] == T.TEEC_ERROR_BAD_PARAMETERS
    assert r["honest 4 KiB"] == T.TEEC_SUCCESS
    assert r["honest call"] == [T.TEEC_SUCCESS, True]
    assert r["shrink after registration"] == "refused"
    assert r["past the end of an honest block"] == T.TEEC_ERROR_BAD_PARAMETERS
    assert r["honest call after"] == [T.TEEC_SUCCESS, True]
    assert r["alive"]


def test_mailbox_layout_matches_the_c_header():
    """The forged requests above use sim_protocol.h's layout (checked by the C compiler)."""
    src = ta.SHIM / "sim_protocol.h"
    code = (
        f'#include "{src}"\n'
        "size_t layout[] = { sizeof(struct msim_mailbox), offsetof(struct msim_mailbox, rsp_seq),"
        " offsetof(struct msim_mailbox, req), offsetof(struct msim_mailbox, rsp),"
        " offsetof(struct msim_request, shm_size), offsetof(struct msim_request, params),"
        " sizeof(struct msim_request), sizeof(struct msim_response) };\n"
    )
    with tempfile.TemporaryDirectory() as d:
        c = Path(d) / "layout.c"
        c.write_text(code)
        lib = ctypes.CDLL(str(cbuild.build([c], name="msim_layout", out_dir=d)))
        got = list((ctypes.c_size_t * 8).in_dll(lib, "layout"))
    want = [
        ctypes.sizeof(MsimMailbox),
        MsimMailbox.rsp_seq.offset,
        MsimMailbox.req.offset,
        MsimMailbox.rsp.offset,
        MsimRequest.shm_size.offset,
        MsimRequest.params.offset,
        ctypes.sizeof(MsimRequest),
        ctypes.sizeof(MsimResponse),
    ]
    assert got == want


CASES = {"sizes": _wrapping_sizes_case, "forged": _forged_mailbox_case}

if __name__ == "__main__":  # the child process of _run_child
    print(json.dumps(CASES[sys.argv[1]](sys.argv[2], sys.argv[3])))
