"""Performance Emulator (MirrorNet paper Sec. IV-E, V-C, V-D): predicted secure-world latency of a CPM.

Latency is a sum of linear models fitted on the target board, all in microseconds:
  context switch = per_kb * KB + base            (Eq. 2, once per world switch, KB = bytes sent)
  Conv2D         = per_workload * workload + base (Eq. 4, workload = K^2*IC*OC*FO^2)
  Dense          = per_workload * workload + base (Eq. 5, workload = IC*OC)
times the empirical scale factor of Sec. V-D on the terms the profile names. Other layers (ReLU,
pooling, Add) are left out, as in the paper. That is the whole model of a profile with only those
fields (the bundled rpi3b-optee). A measured profile (`mirrorc profile`) adds, each optional:
  kernels_us       per kernel of the C (`kernel_of`: conv_pointwise, conv_spatial3/5, conv_spatial,
                   conv_gap, conv_grouped, conv_strided, dense) per_mac * MACs + per_out_float * output floats
                   + per_out_channel * output channels (a conv's loop over output planes)
                   + per_weight * weights (a conv's inner loops start once per weight: a narrow
                   conv on a small map, e.g. DenseNet's 1x1 head, is all loop starts)
                   + per_in_float * input features (a dense layer's)
                   + per_unaligned_float * unaligned output floats (`unaligned_floats`) + base, in
                   place of Eq. 4 / 5: each kernel runs its own loops, and a narrow CPM's cost is not
                   one line per MAC;
  other_us         per op type (or "*" for the rest) per_float * output floats
                   + per_window_float * window * output floats (`Layer.window`: a pooling's kernel
                   area, an LRN's size) + per_out_channel * output planes (per-channel loops: an
                   unfolded BatchNormalization's) + per_unaligned_float * unaligned output floats
                   + base;
                   + per_first_of_kind if it is the first node of its kernel or op type in the CPM
                   (`first_of_kind`: a cold inference fetches that loop's code there)
                   + per_first_touch_float * floats of arena lines it writes first in the inference
                   (`Layer.first_touch_floats`: a cold line is read from memory before it is written);
  cold_read_us     per input the normal world wrote that a layer is first to read (`cold_arrays`)
                   per_tap + per_head_float * its first head_floats floats + per_float * all its
                   floats, one price for every kernel and op: on a device the normal world runs
                   between two CPM inferences, so a tap comes from memory, its first lines at its
                   latency, the rest as fast as the prefetchers stream (0.5 ns a float for a 50-float
                   tap on this host, 0.26 for a 170 k one). A layer's weights are cold too, but its own
                   loop streams them (a dense layer row by row, a conv a few floats many times over):
                   their price is its kernel's per-MAC (dense) or per-weight (conv) term;
  call_us.base     a fixed cost per inference (reset, the calls into the model).
The coefficients are data: a device profile JSON in mirrorc/plan/devices/ (or any path), never code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirrorc.errors import MirrorcError
from mirrorc.plan.layers import Layer

if TYPE_CHECKING:
    from passes.lower_c import Fused

DEVICES_DIR = Path(__file__).parent / "devices"
DEFAULT_DEVICE = "rpi3b-optee"


@dataclasses.dataclass(frozen=True)
class Linear:
    slope: float  # us per unit (KB or workload)
    base: float  # us


@dataclasses.dataclass(frozen=True)
class Terms:
    """A measured layer cost in us: per_mac * MACs + per_float * output floats
    + per_window * window * output floats + per_out_channel * output channels (planes)
    + per_in_float * input features + per_weight * a conv's weights
    + per_unaligned * unaligned output floats + base."""

    per_mac: float = 0.0
    per_float: float = 0.0
    per_window: float = 0.0
    per_out_channel: float = 0.0
    per_in_float: float = 0.0
    per_weight: float = 0.0
    per_unaligned: float = 0.0
    per_first: float = 0.0
    per_first_touch: float = 0.0
    base: float = 0.0

    def us(self, layer: Layer) -> float:
        floats = layer.out_floats
        return (
            self.per_mac * layer.macs
            + self.per_float * floats
            + self.per_window * layer.window * floats
            + self.per_out_channel * out_channels(layer)
            + self.per_in_float * in_features(layer)
            + self.per_weight * weights(layer)
            + self.per_unaligned * unaligned_floats(layer)
            + self.per_first * layer.first_of_kind
            + self.per_first_touch * layer.first_touch_floats
            + self.base
        )


def as_run(layer: Layer, fused: Fused | None, taps: Sequence[int] = (), first_touch: int = 0) -> Layer:
    """`layer` as the generated C runs it, given its node's fused epilogues (`passes.lower_c.Fused`, or
    None), the floats of each input it reads from the normal world's buffers and the floats of arena
    lines it writes first in an inference: a conv whose global average pool runs inside its kernel is
    `fused_gap` (kernel conv_gap)."""
    return dataclasses.replace(
        layer,
        fused_gap=fused is not None and fused.pools,
        tap_in_floats=sum(taps),
        tap_inputs=len(taps),
        first_touch_floats=first_touch,
    )


@dataclasses.dataclass(frozen=True)
class ColdReads:
    """The price of reading a tap of n floats that is not in the caches (an input the normal world
    wrote, on its own pages): per_tap + per_head_float * min(n, head_floats) + per_float * n (us)."""

    per_tap: float = 0.0
    per_head_float: float = 0.0
    per_float: float = 0.0
    head_floats: int = 0

    def us(self, layer: Layer) -> float:
        taps, head, floats = cold_arrays(layer, self.head_floats)
        return self.per_tap * taps + self.per_head_float * head + self.per_float * floats


def cold_arrays(layer: Layer, head_floats: int) -> tuple[int, int, int]:
    """(taps, floats in the first `head_floats` of each, floats) a layer reads cold at the shared price:
    the inputs the normal world wrote that it is first to read (`Layer.tap_in_floats`). Not its weights:
    priced with the shared per-float price, the 1000x1000 dense layers (4 MB read row by row) came out
    10% over in every model while the taps' price held."""
    return layer.tap_inputs, min(layer.tap_in_floats, head_floats * layer.tap_inputs), layer.tap_in_floats


def first_reads(reads: Iterable[Sequence[tuple[str, int]]]) -> list[list[int]]:
    """Per node in run order, given the (tensor, floats) it reads from the normal world's buffers: the
    floats of those it is the first to read (`as_run`'s taps); a tap read again is in the caches."""
    seen: set[str] = set()
    out = []
    for node in reads:
        out.append([floats for name, floats in node if name not in seen])
        seen.update(name for name, _ in node)
    return out


def first_of_kind(layers: Iterable[Layer]) -> list[Layer]:
    """`layers` with the first of each kernel (`kernel_of`) or op type marked `first_of_kind`; a CPM's
    prediction does not depend on the order (one mark per kind either way)."""
    seen: set[str] = set()
    out = []
    for x in layers:
        kind = kernel_of(x) or x.op_type
        out.append(dataclasses.replace(x, first_of_kind=kind not in seen))
        seen.add(kind)
    return out


def out_channels(layer: Layer) -> int:
    """A conv's output channels, or an "other" layer's output planes (the planes their loops compute);
    0 for dense layers."""
    if layer.kind == "conv":
        return layer.oc or 0
    return layer.out_planes if layer.kind == "other" else 0


def in_features(layer: Layer) -> int:
    """A dense layer's input numbers per sample (MACs / OC), a conv's input map (IC x FI); 0 for other
    layers. A narrow conv over many input planes (DenseNet's 1x1 convs over its growing concatenations,
    2 outputs from up to 36 planes) does 2 MACs per input float it reads: reading is its cost."""
    if layer.kind == "conv" and layer.ic and layer.fi:
        return layer.ic * layer.fi[0] * layer.fi[1]
    return layer.macs // layer.oc if layer.kind in ("dense", "matmul") and layer.oc else 0


def unaligned_floats(layer: Layer) -> int:
    """Output floats of a layer whose planes are not a multiple of 4 floats (55x55, 27x27, 13x13, 7x7
    maps): every plane but the first starts off a 16-byte boundary, so the kernels' vector loops load
    and store unaligned, and end in a scalar tail; 0 for other layers."""
    if not layer.out_planes or (layer.out_floats // layer.out_planes) % 4 == 0:
        return 0
    return layer.out_floats


def weights(layer: Layer) -> int:
    """A conv's weights (OC x IC / groups x K_h x K_w: its inner loops' starts); 0 for other layers."""
    if layer.kind != "conv" or not layer.fo:
        return 0
    return layer.macs // max(1, layer.fo[0] * layer.fo[1])


KERNELS = (
    "conv_pointwise",
    "conv_spatial3",
    "conv_spatial5",
    "conv_spatial",
    "conv_grouped",
    "conv_strided",
    "conv_gap",
    "dense",
)
# A kernel a profile may lack -> the one that predicts it then (a profile fitted before it existed)
KERNEL_FALLBACK = {"conv_gap": "conv_pointwise", "conv_spatial3": "conv_spatial", "conv_spatial5": "conv_spatial"}


def kernel_of(layer: Layer) -> str | None:
    """Which of the C's compute loops a layer runs: "conv_gap" (a conv with its ReLU and global
    average pool fused in: SqueezeNet's head), "conv_strided" (mc_conv2d's strided path),
    "conv_grouped" (groups > 1), "conv_pointwise" (1x1), "conv_spatial3" / "conv_spatial5"
    (mc_conv2d_s1 with a kernel 3 or 5 wide: mc_conv_row_s1's unrolled rows), "conv_spatial" (its
    other widths), "dense" (mc_gemm and MatMul); None for the other layers."""
    if layer.kind in ("dense", "matmul"):
        return "dense"
    if layer.kind != "conv":
        return None
    if layer.fused_gap:
        return "conv_gap"
    if layer.strides != (1, 1):
        return "conv_strided"
    if layer.groups > 1:
        return "conv_grouped"
    if layer.k == (1, 1):
        return "conv_pointwise"
    width = layer.k[1] if layer.k else 0
    return f"conv_spatial{width}" if width in (3, 5) else "conv_spatial"


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
    other: tuple[tuple[str, Terms], ...] = ()  # op type ("*": any other) -> its terms
    kernels: tuple[tuple[str, Terms], ...] = ()  # kernel_of() -> its terms, in place of Eq. 4 / 5
    call_us: float = 0.0  # fixed cost per inference
    cold: ColdReads = ColdReads()  # the price of what a layer reads cold, with the kernel and op terms

    def other_fit(self, op_type: str) -> Terms | None:
        fits = dict(self.other)
        return fits.get(op_type, fits.get("*"))

    def switch_us(self, nbytes: int) -> float:
        """One world switch carrying `nbytes` to the secure world (Eq. 2)."""
        return self.switch.slope * (nbytes / self.kb_bytes) + self.switch.base

    def layer_us(self, layer: Layer) -> float:
        """Secure-world latency of one layer: the profile's terms for its kernel or op type, else Eq. 4 /
        Eq. 5 (scaled); 0 for layers the paper ignores when the profile does not time them."""
        kernels, name = dict(self.kernels), kernel_of(layer) or ""
        kernel = kernels.get(name, kernels.get(KERNEL_FALLBACK.get(name, "")))
        if kernel is not None:
            us = kernel.us(layer) + self.cold.us(layer)
        elif layer.kind in ("conv", "dense", "matmul"):
            fit = self.conv if layer.kind == "conv" else self.dense
            us = fit.slope * layer.workload + fit.base
        else:
            other = self.other_fit(layer.op_type)
            return other.us(layer) + self.cold.us(layer) if other else 0.0
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

    def optional(*keys: str) -> float:  # an optional term: 0 when absent
        obj = raw
        for k in keys[:-1]:
            obj = obj[k]
        return float(num(*keys)) if keys[-1] in obj else 0.0

    def table(field: str, required: tuple[str, ...], terms: dict[str, str]) -> tuple[tuple[str, Terms], ...]:
        """An optional object of name -> {term: number}; `terms` maps its JSON keys to Terms fields."""
        entries = raw.get(field, {})
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise MirrorcError(f"{path}: field '{field}' must be an object of name -> {{{', '.join(terms)}}}")
        for name, entry in entries.items():
            unknown = sorted(set(entry) - set(terms) - {"source"})
            if unknown:
                raise MirrorcError(f"{path}: field '{field}.{name}' has unknown term '{unknown[0]}'")
        return tuple(
            (
                name,
                Terms(
                    **{
                        attr: float(num(field, name, key)) if key in required else optional(field, name, key)
                        for key, attr in terms.items()
                    }
                ),
            )
            for name in sorted(entries)
        )

    other = table(
        "other_us",
        ("per_float", "base"),
        {
            "per_float": "per_float",
            "per_window_float": "per_window",
            "per_out_channel": "per_out_channel",
            "per_unaligned_float": "per_unaligned",
            "per_first_of_kind": "per_first",
            "per_first_touch_float": "per_first_touch",
            "base": "base",
        },
    )
    kernels = table(
        "kernels_us",
        ("per_mac", "per_out_float", "base"),
        {
            "per_mac": "per_mac",
            "per_out_float": "per_float",
            "per_out_channel": "per_out_channel",
            "per_weight": "per_weight",
            "per_in_float": "per_in_float",
            "per_unaligned_float": "per_unaligned",
            "per_first_of_kind": "per_first",
            "per_first_touch_float": "per_first_touch",
            "base": "base",
        },
    )
    if set(dict(kernels)) - set(KERNELS):
        bad = sorted(set(dict(kernels)) - set(KERNELS))[0]
        raise MirrorcError(f"{path}: field 'kernels_us.{bad}': not a kernel ({', '.join(KERNELS)})")
    if "call_us" in raw and not isinstance(raw["call_us"], dict):
        raise MirrorcError(f"{path}: field 'call_us' must be an object with 'base'")
    if "cold_read_us" in raw and not isinstance(raw["cold_read_us"], dict):
        raise MirrorcError(f"{path}: field 'cold_read_us' must be an object of per_tap, per_head_float, ...")
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
        kernels=kernels,
        call_us=float(num("call_us", "base")) if "call_us" in raw else 0.0,
        cold=ColdReads(
            optional("cold_read_us", "per_tap"),
            optional("cold_read_us", "per_head_float"),
            optional("cold_read_us", "per_float"),
            int(optional("cold_read_us", "head_floats")),
        )
        if "cold_read_us" in raw
        else ColdReads(),
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
    compute = sum(x["us"] for x in per_layer) + (device.call_us if per_layer else 0.0)
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
