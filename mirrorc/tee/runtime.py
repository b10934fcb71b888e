"""Protected inference: onnxruntime runs the backbone (normal.onnx) in this process, the TA gets the
taps and the backbone logits through the GP Client API and answers with the label alone.

    with ProtectedModel("build/", tee="sim", mode="stream") as model:
        labels = model.predict(x)          # x: [N, *input] or one [*input] sample

`mode="stream"` sends each tap in its own command, as the paper's deployment does (the TA could
start on tap k while the backbone computes stage k+1); `mode="single"` sends all taps and the
logits in one command (one world switch per image). This process never loads a CPM weight: it
reads normal.onnx and plan.json and loads a Client API library; the TA lives in the TEE, or in the
simulator's own process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mirrorc.errors import MirrorcError
from mirrorc.tee import teec
from passes import contract
from passes.contract import validate_plan

TEES = ("sim", "optee")
MODES = ("stream", "single")


def load_plan(build_dir: str | Path) -> dict:
    """The build's plan.json, checked against the contract's schema (passes/contract.py)."""
    path = Path(build_dir) / "plan.json"
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError:
        raise MirrorcError(f"{path}: not found (is {build_dir} a mirrorc build directory?)") from None
    except ValueError as e:
        raise MirrorcError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(plan, dict):
        raise MirrorcError(f"{path}: not a JSON object")
    validate_plan(plan, path)
    return plan


def error_reason(e: BaseException) -> str:
    """The first non-empty line of an exception from a library (onnxruntime's run to many lines,
    some empty), or its type when it says nothing."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def onnx_session(path: Path, opts: Any = None) -> Any:
    """An onnxruntime session on the ONNX file `path` of a build; a file onnxruntime cannot load
    (truncated, not ONNX, refused by its checks) is one line naming the file, with its reason."""
    import onnxruntime as ort

    if not path.is_file():  # also keeps devices and FIFOs (a symlink to /dev/zero) from being read
        raise MirrorcError(f"{path}: not found, or not a regular file")
    if opts is None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise MirrorcError(f"{path}: onnxruntime cannot load it ({error_reason(e)})") from None


def session_login(guard: dict | None) -> tuple[int, int | None]:
    """The login this client opens its session with under these defences: (TEEC login type,
    the gid a group login names, else None). Without an identity check: public."""
    spec = (guard or {}).get("allow_client") or ""
    if not spec:
        return contract.CLIENT_LOGINS["public"], None
    login, _ = contract.parse_client(spec)
    if login != contract.CLIENT_LOGINS["group"]:
        return login, None
    gid = int((guard or {}).get("allow_gid", -1))
    return login, gid if gid >= 0 else os.getegid()


class ProtectedModel(teec.ClosedOnCollect):
    """A mirrorc build run as deployed: backbone in onnxruntime, CPM in the TA."""

    def __init__(self, build_dir: str | Path, tee: str = "sim", mode: str = "stream", *, threads: int | None = None):
        import onnxruntime as ort

        if tee not in TEES:
            raise MirrorcError(f"tee must be one of {', '.join(TEES)}, not '{tee}'")
        if mode not in MODES:
            raise MirrorcError(f"mode must be one of {', '.join(MODES)}, not '{mode}'")
        self.build_dir, self.tee, self.mode = Path(build_dir), tee, mode
        self.plan = plan = load_plan(self.build_dir)
        normal = self.build_dir / "normal.onnx"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.backbone = onnx_session(normal, opts)
        inp = self.backbone.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = [d if isinstance(d, int) else None for d in inp.shape[1:]]

        self.taps = sorted(plan["taps"], key=lambda t: t["index"])
        self.tap_floats = [t["bytes"] // 4 for t in self.taps]
        self.num_classes = plan["logits"]["bytes"] // 4
        self.outputs = [t["selected"] for t in self.taps] + [plan["logits"]["name"]]
        have = {o.name for o in self.backbone.get_outputs()}
        for name in self.outputs:
            if name not in have:
                raise MirrorcError(f"{normal}: has no output '{name}' that plan.json sends to the TA")

        # One buffer holds an image's taps then logits; the operations point into it once and for
        # all, so per image the outputs are copied in and the same TEEC_Operations invoked again.
        self.row_floats = [*self.tap_floats, self.num_classes]
        self.buffer = np.zeros(sum(self.row_floats), np.float32)
        if self.buffer.nbytes != plan["single"]["bytes"]:
            raise MirrorcError(
                f"{self.build_dir / 'plan.json'}: single.bytes {plan['single']['bytes']} "
                f"!= taps + logits ({self.buffer.nbytes})"
            )
        bounds = np.cumsum([0, *self.row_floats])
        self.rows = [self.buffer[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        temp_in = (teec.TEEC_MEMREF_TEMP_INPUT,)
        with_label = (teec.TEEC_MEMREF_TEMP_INPUT, teec.TEEC_VALUE_OUTPUT)
        if mode == "stream":
            self._calls = [
                (t["command"], teec.Operation(*temp_in).temp(0, row)) for t, row in zip(self.taps, self.rows)
            ]
            self._calls.append((plan["logits"]["command"], teec.Operation(*with_label).temp(0, self.rows[-1])))
        else:
            self._calls = [(plan["single"]["command"], teec.Operation(*with_label).temp(0, self.buffer))]
        self._label = self._calls[-1][1].op.params[1].value  # a ctypes view made once (per-image path)
        self._dests: dict = {}
        self._io = self._bind_one_image() if all(self.input_shape) else None

        self.context: teec.Context | None = (
            teec.Context.simulator(self.build_dir) if tee == "sim" else teec.Context.optee()
        )
        guard = plan.get("guard")
        login, gid = session_login(guard)  # the identity the TA admits, if it checks one
        try:
            self.session = self.context.open_session(plan["uuid"], login, gid, guard)
        except BaseException:
            self.context.close()
            raise

    def _bind_one_image(self):
        """An I/O binding for batch 1: onnxruntime reads a fixed input buffer and writes the taps
        and logits straight into the buffer the TEEC_Operations point at (no copies, no output
        arrays made per image)."""
        self._one = np.zeros([1, *self.input_shape], np.float32)
        io = self.backbone.io_binding()
        io.bind_input(self.input_name, "cpu", 0, np.float32, list(self._one.shape), self._one.ctypes.data)
        shapes = [t["shape"] for t in self.taps] + [[self.num_classes]]
        for name, row, shape in zip(self.outputs, self.rows, shapes):
            io.bind_output(name, "cpu", 0, np.float32, [1, *shape], row.ctypes.data)
        return io

    def backbone_one(self, x: np.ndarray) -> None:
        """The normal world's half of one inference: normal.onnx on one input (shape [1, *input]),
        its taps and logits written straight into the buffer the TA calls read. No TA call."""
        if self._io is None:
            raise MirrorcError(
                f"{self.build_dir / 'normal.onnx'}: input '{self.input_name}' has a symbolic "
                f"dimension besides the batch; use predict()"
            )
        self._one[...] = x
        self.backbone.run_with_iobinding(self._io)

    def _predict_one(self, x: np.ndarray) -> np.ndarray:
        self.backbone_one(x)
        invoke = self.session.invoke
        for call in self._calls:  # stream: each tap, then the logits; single: one command
            invoke(*call)
        return np.array([self._label.a], np.int64)

    def _batch(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == len(self.input_shape):
            x = x[None]
        if x.ndim != len(self.input_shape) + 1 or any(
            w is not None and w != h for w, h in zip(self.input_shape, x.shape[1:])
        ):
            raise MirrorcError(
                f"input '{self.input_name}': shape {list(x.shape)} does not match "
                f"[N, {', '.join(str(d) for d in self.input_shape)}]"
            )
        return np.ascontiguousarray(x)

    def backbone_outputs(self, x: npt.ArrayLike) -> list[np.ndarray]:
        """What the normal world computes and sends: the selected taps and the backbone logits."""
        return self.backbone.run(self.outputs, {self.input_name: self._batch(x)})

    def secure_labels(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Send each image's taps and logits to the TA; its labels."""
        n = outputs[0].shape[0]
        shapes = tuple(o.shape[1:] for o in outputs)
        dests = self._dests.get(shapes)
        if dests is None:
            if [int(np.prod(s)) for s in shapes] != self.row_floats:
                raise MirrorcError(
                    f"{self.build_dir}: normal.onnx outputs {[int(np.prod(s)) for s in shapes]} floats "
                    f"per image, plan.json sends {self.row_floats}"
                )
            dests = self._dests[shapes] = [row.reshape(s) for row, s in zip(self.rows, shapes)]
        labels = np.empty(n, np.int64)
        invoke, calls, pairs = self.session.invoke, self._calls, list(zip(dests, outputs))
        for i in range(n):
            if len(calls) == 1:  # single: the whole image, one command
                for dest, out in pairs:
                    dest[...] = out[i]
                invoke(*calls[0])
            else:  # stream: each tap as it would arrive, then the logits
                for (dest, out), call in zip(pairs, calls):
                    dest[...] = out[i]
                    invoke(*call)
            labels[i] = self._label.a
        return labels

    def query(self, taps: list[np.ndarray], logits: np.ndarray) -> int:
        """One TA inference on taps and backbone logits the caller chose (any normal-world process can
        send such bytes; the attacks and the defences' tests do). A refusal raises teec.TeecError."""
        for row, value in zip(self.rows, [*taps, logits]):
            row[...] = np.asarray(value, np.float32).reshape(-1)
        for call in self._calls:
            self.session.invoke(*call)
        return int(self._label.a)

    def predict(self, x: npt.ArrayLike) -> np.ndarray:
        """Labels (int64 [N]) for a batch of inputs (or one input)."""
        if self._io is not None and type(x) is np.ndarray and x.dtype == np.float32 and x.shape == self._one.shape:
            return self._predict_one(x)  # one image as it comes from a camera loop: skip the checks
        x = self._batch(x)
        if self._io is not None and x.shape[0] == 1:
            return self._predict_one(x)
        return self.secure_labels(self.backbone.run(self.outputs, {self.input_name: x}))

    def close(self) -> None:
        context = getattr(self, "context", None)  # absent when __init__ failed before opening it
        if context is not None:
            context.close()
            self.context = None
