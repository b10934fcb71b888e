"""Performance Emulator (MirrorNet paper Sec. IV-E, V-C, V-D): predicted secure-world latency of a CPM.

Latency is a sum of linear models fitted on the target board, all in microseconds:
  context switch = per_kb * KB + base            (Eq. 2, once per world switch, KB = bytes sent)
  Conv2D         = per_workload * workload + base (Eq. 4, workload = K^2*IC*OC*FO^2)
  Dense          = per_workload * workload + base (Eq. 5, workload = IC*OC)
times the empirical scale factor of Sec. V-D on the terms the profile names. Other layers (ReLU,
pooling, Add) are left out, as in the paper, unless the profile has `other_us` (a measured profile,
`mirrorc profile`): then per op type (or "*" for the rest) per_float * output floats + base.
The coefficients are data: a device profile JSON in mirrorc/plan/devices/ (or any path), never code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mirrorc.errors import MirrorcError
from mirrorc.plan.layers import Layer

DEVICES_DIR = Path(__file__).parent / "devices"
DEFAULT_DEVICE = "rpi3b-optee"


@dataclasses.dataclass(frozen=True)
class Linear:
    slope: float  # us per unit (KB or workload)
    base: float  # us


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    switch: Linear
    kb_bytes: int
    conv: Linear
    dense: Linear
    scale: float
    scale_applies_to: tuple[str, ...]  # layer kinds ("conv", "dense") the scale multiplies
    tee_memory_bytes: int
    ta_overhead_bytes: int
    path: str
    other: tuple[tuple[str, Linear], ...] = ()  # op type ("*": any other) -> us per output float + base

    def other_fit(self, op_type: str) -> Linear | None:
        fits = dict(self.other)
        return fits.get(op_type, fits.get("*"))

    def switch_us(self, nbytes: int) -> float:
        """One world switch carrying `nbytes` to the secure world (Eq. 2)."""
        return self.switch.slope * (nbytes / self.kb_bytes) + self.switch.base

    def layer_us(self, layer: Layer) -> float:
        """Secure-world latency of one layer (Eq. 4 / Eq. 5, scaled); 0 for layers the paper ignores."""
        if layer.kind == "conv":
            fit = self.conv
        elif layer.kind in ("dense", "matmul"):
            fit = self.dense
        else:
            other = self.other_fit(layer.op_type)
            return other.slope * layer.out_floats + other.base if other else 0.0
        us = fit.slope * layer.workload + fit.base
        kind = "dense" if layer.kind == "matmul" else layer.kind
        return us * self.scale if kind in self.scale_applies_to else us


def device_names() -> list[str]:
    return sorted(p.stem for p in DEVICES_DIR.glob("*.json"))


def load_device(name_or_path: str | os.PathLike | None = None) -> Device:
    """A bundled profile by name (`rpi3b-optee`) or a profile JSON file by path."""
    spec = os.fspath(name_or_path) if name_or_path is not None else DEFAULT_DEVICE
    path = Path(spec) if spec.endswith(".json") or os.sep in spec else DEVICES_DIR / f"{spec}.json"
    if not path.is_file():
        raise MirrorcError(
            f"device '{spec}': no such profile (bundled: {', '.join(device_names())}; or give a .json path)"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MirrorcError(f"{path}: cannot read device profile: {e}") from None
    return device_from_json(raw, path)


def device_from_json(raw: Any, path: str | os.PathLike) -> Device:
    """The Device of a parsed profile JSON; `path` names it in errors."""
    if not isinstance(raw, dict):
        raise MirrorcError(f"{path}: a device profile is a JSON object")

    def num(*keys: str) -> int | float:  # the checked JSON number; callers convert it
        obj = raw
        for k in keys:
            if not isinstance(obj, dict) or k not in obj:
                raise MirrorcError(f"{path}: missing field '{'.'.join(keys)}'")
            obj = obj[k]
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or obj < 0:
            raise MirrorcError(f"{path}: field '{'.'.join(keys)}' must be a non-negative number, got {obj!r}")
        return obj

    other_raw = raw.get("other_us", {})
    if not isinstance(other_raw, dict):
        raise MirrorcError(f"{path}: field 'other_us' must be an object of op type -> per_float, base")
    other = tuple(
        (op, Linear(float(num("other_us", op, "per_float")), float(num("other_us", op, "base"))))
        for op in sorted(other_raw)
    )
    applies = raw.get("compute_scale", {}).get("applies_to", ["conv", "dense"])
    if not isinstance(applies, list) or not set(applies) <= {"conv", "dense"}:
        raise MirrorcError(f'{path}: field \'compute_scale.applies_to\' must be a list of "conv"/"dense"')
    return Device(
        name=str(raw.get("name", Path(path).stem)),
        switch=Linear(float(num("context_switch_us", "per_kb")), float(num("context_switch_us", "base"))),
        kb_bytes=int(num("context_switch_us", "kb_bytes")) if "kb_bytes" in raw.get("context_switch_us", {}) else 1024,
        conv=Linear(float(num("conv2d_us", "per_workload")), float(num("conv2d_us", "base"))),
        dense=Linear(float(num("dense_us", "per_workload")), float(num("dense_us", "base"))),
        scale=float(num("compute_scale", "factor")) if "compute_scale" in raw else 1.0,
        scale_applies_to=tuple(applies),
        tee_memory_bytes=int(num("tee_memory_bytes")),
        ta_overhead_bytes=int(num("ta_overhead_bytes")),
        path=str(path),
        other=other,
    )


def predict(device: Device, cpm_layers: Iterable[Layer], buffers: Sequence[int]) -> dict:
    """Predicted CPM latency for one inference.

    `cpm_layers`: the secure-world layers; `buffers`: bytes sent per streaming command, in order
    (one per tap, then the backbone logits). Streaming mode switches once per buffer; single-invoke
    mode sends them all in one switch."""
    per_layer: list[dict[str, Any]] = [
        {"name": x.name, "notation": x.notation, "workload": x.workload, "us": device.layer_us(x)}
        for x in cpm_layers
        if x.kind != "other" or device.other
    ]
    compute = sum(x["us"] for x in per_layer)
    streaming_switch = sum(device.switch_us(b) for b in buffers)
    single_switch = device.switch_us(sum(buffers)) if buffers else 0.0
    return {
        "device": device.name,
        "compute_us": compute,
        "layers": per_layer,
        "streaming": {
            "switches": len(buffers),
            "bytes": int(sum(buffers)),
            "switch_us": streaming_switch,
            "total_us": compute + streaming_switch,
        },
        "single": {
            "switches": 1 if buffers else 0,
            "bytes": int(sum(buffers)),
            "switch_us": single_switch,
            "total_us": compute + single_switch,
        },
    }
