"""A hostile normal world through the Client API: concurrent random calls on a build's TA (issue 13).

Each thread holds its own context (in the simulator: its own TA instance), the session of an honest
ProtectedModel and up to FUZZ_SESSIONS more, and issues random calls through mirrorc.tee.teec: any
command (the TA's, in and out of order, and random 32-bit IDs), any parameter types, temporary
memrefs of the right size, a few bytes off, empty, or of sizes up to 2^64-1 without a buffer (NULL
buffers), registered shared memory with any offset and size, float contents with NaN and Inf, and
session churn (opens, refused beyond the per-client cap, and closes). After every burst the honest
session makes a correct call on each reference input: its label must be mirrornet.onnx's.

A crash is the TA (the simulator) dying: TEEC_ERROR_TARGET_DEAD; the thread then starts a new context.
The caller's own process never passes a size larger than the buffer it gives (that would be its own
out-of-bounds read, not the TA's)."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mirrorc.tee import teec as T
from mirrorc.tee.runtime import ProtectedModel
from passes import contract

FUZZ_SESSIONS = 3  # sessions a thread churns besides the honest one (the default cap is 2 per client)
BURST = 40  # random calls between two checks
SIZES_WITHOUT_BUFFER = (2**64 - 1, 2**64 - 7, 2**63 + 1, 2**32, 2**31 - 1, 1 << 40)
MEMREF_TYPES = (T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_MEMREF_TEMP_OUTPUT, T.TEEC_MEMREF_TEMP_INOUT)
SHM_TYPES = (
    T.TEEC_MEMREF_WHOLE,
    T.TEEC_MEMREF_PARTIAL_INPUT,
    T.TEEC_MEMREF_PARTIAL_OUTPUT,
    T.TEEC_MEMREF_PARTIAL_INOUT,
)
VALUE_TYPES = (T.TEEC_VALUE_INPUT, T.TEEC_VALUE_OUTPUT, T.TEEC_VALUE_INOUT)


@dataclass
class FuzzCounts:
    """What a fuzzing run saw (summed over threads)."""

    calls: int = 0  # invokes, opens and closes issued
    answered: int = 0  # invokes the TA accepted
    refusals: collections.Counter = field(default_factory=collections.Counter)  # by error name
    crashes: int = 0  # the TA died (TEEC_ERROR_TARGET_DEAD)
    checks: int = 0  # correct calls made after a burst
    wrong_labels: int = 0  # correct calls whose label was not mirrornet.onnx's, or that were refused
    errors: list = field(default_factory=list)  # a Python exception in a thread (a fuzzer bug)

    def add(self, other: FuzzCounts) -> None:
        self.calls += other.calls
        self.answered += other.answered
        self.refusals.update(other.refusals)
        self.crashes += other.crashes
        self.checks += other.checks
        self.wrong_labels += other.wrong_labels
        self.errors += other.errors

    def summary(self) -> dict:
        return {
            "calls": self.calls,
            "answered": self.answered,
            "refusals": dict(sorted(self.refusals.items())),
            "crashes": self.crashes,
            "checks": self.checks,
            "wrong_labels": self.wrong_labels,
            "errors": self.errors,
        }


def refusal_name(result: int) -> str:
    """A short name for a refusal code: the defence's, or the GP name."""
    if result in contract.TA_ERROR_NAMES:
        return contract.TA_ERROR_NAMES[result].split(" (")[0]
    return T.ERROR_NAMES.get(result, f"0x{result:08x}")


class _Worker:
    """One thread's context, honest model and fuzzed sessions."""

    def __init__(self, build: Path, seed: int, inputs: list[list[np.ndarray]], want: np.ndarray, mode: str):
        self.build, self.inputs, self.want, self.mode = build, inputs, want, mode
        self.rng = np.random.default_rng(seed)
        self.counts = FuzzCounts()
        self.model: ProtectedModel | None = None
        self.sessions: list[T.Session] = []
        self.shm: T.SharedMemory | None = None
        self.commands: list[int] = []

    def start(self) -> None:
        """A fresh context (a new TA instance in the simulator) with the honest session."""
        self.model = ProtectedModel(self.build, tee="sim", mode=self.mode)
        plan = self.model.plan
        self.uuid = plan["uuid"]
        self.commands = [t["command"] for t in self.model.taps] + [contract.CMD_FINAL, contract.CMD_SINGLE]
        self.sizes = {t["command"]: t["bytes"] for t in self.model.taps}
        self.sizes.update({contract.CMD_FINAL: plan["logits"]["bytes"], contract.CMD_SINGLE: plan["single"]["bytes"]})
        assert self.model.context is not None
        self.shm = self.model.context.allocate_shared_memory(4096)
        self.sessions = []

    def crashed(self) -> None:
        self.counts.crashes += 1
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None

    def _floats(self, n: int) -> np.ndarray:
        x = self.rng.normal(size=n).astype(np.float32) * np.float32(10.0 ** self.rng.integers(-3, 4))
        if n and self.rng.random() < 0.3:
            x[self.rng.integers(0, n, size=max(1, n // 8))] = self.rng.choice([np.nan, np.inf, -np.inf])
        return x

    def _param(self, op: T.Operation, i: int, t: int, want: int) -> None:
        rng = self.rng
        if t in MEMREF_TYPES:
            kind = rng.integers(0, 6)
            if kind == 5:  # a NULL buffer declaring any size
                op.temp(i, None, int(rng.choice(SIZES_WITHOUT_BUFFER + (0, want))))
                return
            size = [want, want, max(0, want + int(rng.integers(-8, 9))), 0, int(rng.integers(0, 4096))][kind]
            op.temp(i, self._floats((size + 3) // 4).view(np.uint8)[:size].copy())
        elif t in SHM_TYPES:
            assert self.shm is not None
            off = int(rng.choice([0, 4, int(rng.integers(0, 5000))]))
            size = int(rng.choice([want, 4096 - off, int(rng.integers(0, 2**63))]))
            op.memref(i, self.shm, off, max(size, 0))
        elif t in VALUE_TYPES:
            op.value(i, int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32)))

    def random_call(self) -> None:
        rng = self.rng
        self.counts.calls += 1
        roll = rng.random()
        assert self.model is not None and self.model.context is not None
        if roll < 0.04:  # churn: open one more session (the cap may refuse it) or close one
            if self.sessions and rng.random() < 0.5:
                self.sessions.pop(int(rng.integers(0, len(self.sessions)))).close()
                return
            if len(self.sessions) < FUZZ_SESSIONS:
                try:
                    self.sessions.append(self.model.context.open_session(self.uuid))
                except T.TeecError as e:
                    if e.result == T.TEEC_ERROR_TARGET_DEAD:
                        return self.crashed()
                    self.counts.refusals[refusal_name(e.result)] += 1
            return
        session = self.model.session
        if self.sessions and rng.random() < 0.5:
            session = self.sessions[int(rng.integers(0, len(self.sessions)))]
        pick = rng.random()
        command = int(rng.choice(self.commands)) if pick < 0.85 else int(rng.integers(0, 2**32))
        want = self.sizes.get(command, 16)
        if rng.random() < 0.6:  # the command's own parameter types
            types = [T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_OUTPUT if command in self.commands[-2:] else T.TEEC_NONE]
            types += [T.TEEC_NONE, T.TEEC_NONE]
        else:
            pool = (T.TEEC_NONE, *VALUE_TYPES, *MEMREF_TYPES, *SHM_TYPES, 0x4, 0x8, 0xB)
            types = [int(rng.choice(pool)) for _ in range(4)]
        op = T.Operation(*types)
        for i, t in enumerate(types):
            self._param(op, i, t, want)
        res, _ = session.try_invoke(command, op)
        if res == T.TEEC_SUCCESS:
            self.counts.answered += 1
        elif res == T.TEEC_ERROR_TARGET_DEAD:
            self.crashed()
        else:
            self.counts.refusals[refusal_name(res)] += 1

    def check(self) -> None:
        """Correct calls on the honest session after garbage: each reference input's label."""
        assert self.model is not None
        # an unknown command ends any stream the garbage left open (every refusal does)
        res, _ = self.model.session.try_invoke(0xFFFFFFFF)
        if res == T.TEEC_ERROR_TARGET_DEAD:
            return self.crashed()
        for outputs, want in zip(self.inputs, self.want):
            self.counts.checks += 1
            try:
                got = self.model.secure_labels(outputs)
            except T.TeecError as e:
                if e.result == T.TEEC_ERROR_TARGET_DEAD:
                    return self.crashed()
                got = None
            if got is None or int(got[0]) != int(want):
                self.counts.wrong_labels += 1

    def run(self, deadline: float, max_calls: int) -> None:
        try:
            self.start()
            while time.monotonic() < deadline and self.counts.calls < max_calls:
                for _ in range(BURST):
                    self.random_call()
                self.check()
        except Exception as e:  # a bug in the fuzzer itself: reported, never a silent pass
            self.counts.errors.append(f"{type(e).__name__}: {e}")
        finally:
            self.stop()


def reference(build: Path, x: np.ndarray) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Per input of `x`: the normal world's outputs (taps and backbone logits from normal.onnx) and
    mirrornet.onnx's label, by onnxruntime. Inputs whose top two MirrorNet logits lie closer than
    1e-3 are left out: float32 in another order may break such a tie either way."""
    from mirrorc.tee.runtime import load_plan, onnx_session

    sess = onnx_session(build / "mirrornet.onnx")
    labels, logits = sess.run([contract.LABEL, contract.MIRRORNET_LOGITS], {sess.get_inputs()[0].name: x})
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3
    normal = onnx_session(build / "normal.onnx")
    plan = load_plan(build)
    names = [t["selected"] for t in sorted(plan["taps"], key=lambda t: t["index"])] + [plan["logits"]["name"]]
    outs = normal.run(names, {normal.get_inputs()[0].name: x})
    inputs = [[o[i : i + 1] for o in outs] for i in np.flatnonzero(clear)]
    return inputs, labels[clear]


def fuzz_calls(
    build: str | Path, x: np.ndarray, *, threads: int = 4, seconds: float = 20.0, max_calls: int = 10**9, seed: int = 0
) -> FuzzCounts:
    """Fuzz the TA of `build` (with mirrornet.onnx) from `threads` threads for `seconds` or `max_calls`
    calls per thread; `x` are the reference inputs of the checks. Returns the summed counts."""
    build = Path(build)
    from mirrorc.backend import ta

    inputs, want = reference(build, x)
    ta.simulator(build)  # compiled once, before the clock starts
    deadline = time.monotonic() + seconds
    workers = [_Worker(build, seed + k, inputs, want, ("stream", "single")[k % 2]) for k in range(threads)]
    pool = [threading.Thread(target=w.run, args=(deadline, max_calls)) for w in workers]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    total = FuzzCounts()
    for w in workers:
        total.add(w.counts)
    return total
