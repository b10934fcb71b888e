"""`mirrorc profile`: calibrate a Performance Emulator device profile on the target.

Two measurements, each fitted by least squares into the paper's linear models (Eq. 2, 4, 5) and the
terms the data needs besides (mirrorc.plan.emulator's module doc):
- compute: the CPMs of the example models (LeNet-5, VGG-7) and of the layer-shape sweep
  (mirrorc.profile_sweep: strided, grouped and 1x1 convs, LRN, poolings, ...) at several widths C,
  lowered with a timer around every scheduled node (`lower(profile=True)`) and built at the TA's
  flags: conv and dense lines in the workload (Eq. 4, 5); per kernel of the C (the conv loops, dense)
  MAC, output-float, input-float, output-channel, weight and base terms (`kernels_us`); for the nodes
  the paper leaves out (ReLU, pooling, Add, ...) output-float, window and base terms per op type
  (`other_us`, "*" for op types measured too rarely); terms of the node's place in a cold inference
  (first of its kernel, arena lines it writes first); fitted together with them, one price of
  reading a tap cold that every kernel and op shares (`cold_read_us`; weights are their kernel's); all
  non-negative; and from the release C's measured totals a fixed cost per inference (`call_us`) and
  the profiling timers' cost per node, taken out of every base;
- transfer: a simulator TA invoked with a command it refuses, carrying buffers of several sizes
  (per-invoke and per-KB cost).
With `--tee sim` the compute nodes are timed by a host harness around the model C (clock_gettime, ns),
every inference cold, as on a device whose normal world runs between two of them (`EVICT_BYTES`).
With `--tee optee` they are timed inside the TA: a calibration build of it (`build_secure(profile=True)`:
mirrorc_profile_ta.c, compiled only under MIRRORC_TA_PROFILE) counts, per node, the millisecond ticks
of TEE_GetSystemTime that fall inside it over many back-to-back inferences (ticks * 1000 / runs
estimates a node's us without bias, however much shorter than a millisecond it is); those inferences
run back to back, warm (a TA has no room for a buffer that would evict a host's caches). Here that TA
runs in the simulator; on a board it would run through libteec once built with the dev kit and
installed under its own UUID, which mirrorc does not automate yet.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mirrorc.backend import cbuild, ta
from mirrorc.errors import MirrorcError
from mirrorc.plan import emulator
from mirrorc.plan.layers import Layer, layers
from mirrorc.profile_sweep import SWEEP_MODELS
from passes.lower_c import Lowered, first_touch_floats, lower, plan_secure

# The TA's flags as they mean something on this host: the dev kit's language mode and -Os, then the
# generated sub.mk's own flags (which override -Os).
TA_HOST_CFLAGS = (*ta.DEV_KIT_HOST_CFLAGS, *ta.TA_CODE_CFLAGS)
TEES = ("sim", "optee")
# On a device the normal world's backbone runs between two CPM inferences (between two of its stages,
# streaming) and takes the caches: the CPM starts every inference cold, its weights streamed from
# memory. The host harness times it so: before every inference it touches this much other data,
# twice this host's last-level cache (32 MB). Back to back instead, a 1000x1000 dense layer's 4 MB
# found in the shared L3 ran in 70 to 290 us, as other tenants' and the CPM's own traffic left it
# there; cold it takes 250 to 290 us in any model.
EVICT_BYTES = 64 << 20
# A command no mirrorc TA knows: it is refused after the world switch, so its time is the transfer's.
REFUSED_COMMAND = 0x7FFF

_HARNESS_C = r"""
#define _POSIX_C_SOURCE 199309L
#include <stddef.h>
#include <stdlib.h>
#include <time.h>
#include <stdint.h>
#include "mirrorc_model.h"
#define STEPS @STEPS@
static double step_ns[STEPS > 0 ? STEPS : 1];
static double t_begin;
static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e9 * (double)t.tv_sec + (double)t.tv_nsec;
}
void mirrorc_profile_begin(void) { t_begin = now_ns(); }
void mirrorc_profile_end(unsigned step) { step_ns[step] = now_ns() - t_begin; }
/* The mean time of every scheduled node over `iters` back-to-back inferences: the statistic of the
   release C's timing (cbuild.time_lowered), so that node times add up to it. A per-node minimum
   would not: memory-bound nodes (a 4 MB dense layer) vary from inference to inference, and the sum
   of each node's luckiest run undercuts every real inference by 5-7%. With `evict_bytes`, every
   inference starts cold, as in cbuild.time_lowered's cold timing (the eviction untimed). -1 when
   the eviction buffer cannot be allocated, else 0. */
@EVICT_C@
int mirrorc_profile_steps(const float *const *taps, const float *logits, int iters, size_t evict_bytes,
                          double *mean_ns)
{
    static mirrorc_state_t state;
    int i;
    unsigned k;
    for (k = 0; k < STEPS; k++) mean_ns[k] = 0.0;
    for (i = 0; i < iters; i++) {
        if (mirrorc_evict(evict_bytes) != 0) return -1;
        mirrorc_reset(&state);
        for (k = 0; k < MIRRORC_NUM_TAPS; k++) mirrorc_run_tap(&state, k, taps[k]);
        (void)mirrorc_run_final(&state, logits);
        for (k = 0; k < STEPS; k++) mean_ns[k] += step_ns[k] / iters;
    }
    return 0;
}
"""


def step_layers(secure: onnx.ModelProto) -> list[Layer]:
    """The Layer (mirrorc.plan.layers) of every scheduled node of the secure graph, in the order of
    `lower(profile=True)`'s step numbers; a conv that runs its ReLU and global average pool as kernel
    epilogues is marked `fused_gap` (its own kernel, `conv_gap`)."""
    by_name = {x.name: x for x in layers(secure)}
    plan = plan_secure(secure)
    taps = emulator.first_reads(
        [(t, int(np.prod(plan.shapes[t]))) for t in nd.input if t in plan.inputs]
        for _, nd in plan.body  # batch 1
    )
    return emulator.first_of_kind(
        emulator.as_run(by_name[nd.name], plan.fused.get(nd.output[0]), cold, fresh)
        for (_, nd), cold, fresh in zip(plan.body, taps, first_touch_floats(plan), strict=True)
    )


def fit_line(x: Sequence[float], y: Sequence[float]) -> emulator.Linear:
    """y = slope * x + base by least squares on the relative error (every sample weighs alike, small
    layers as much as large ones); both coefficients kept non-negative, as the profile format needs."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    if len(xs) == 0:
        raise MirrorcError("profile: no samples to fit")
    w = 1.0 / np.maximum(ys, 1e-12)
    if len(set(xs.tolist())) >= 2:
        (slope, base), *_ = np.linalg.lstsq(np.stack([xs * w, w], 1), ys * w, rcond=None)
        if slope >= 0 and base >= 0:
            return emulator.Linear(float(slope), float(base))
    if np.any(xs > 0):  # through the origin
        slope = float(np.sum(xs * w * ys * w) / np.sum((xs * w) ** 2))
        return emulator.Linear(max(slope, 0.0), 0.0)
    return emulator.Linear(0.0, float(np.mean(ys)))


def _timer_library(lowered: Lowered, steps: int) -> ctypes.CDLL:
    harness = _HARNESS_C.replace("@STEPS@", str(steps)).replace("@EVICT_C@", cbuild.EVICT_C)
    files = dict(lowered.files, **{"model/mirrorc_profile_timer.c": harness})
    return cbuild.load(cbuild.build_lowered(files, name="mirrorc_profiled", debug=False, cflags=TA_HOST_CFLAGS))


def _random_inputs(lowered: Lowered, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    taps = [rng.standard_normal(n).astype(np.float32) for n in lowered.tap_floats]
    return taps, rng.standard_normal(lowered.num_classes).astype(np.float32)


def measure_steps(
    secure: onnx.ModelProto, name: str, iters: int = 50, repeats: int = 5, evict_bytes: int = EVICT_BYTES
) -> list[dict[str, Any]]:
    """Every scheduled node of `secure`'s C at the TA's flags: its Layer fields and its time (us): the
    mean over `iters` inferences, the fastest of `repeats` such loops (as `measure_total_us` times the
    release C: the fastest loop drops the preemptions of a shared machine); every inference cold after
    touching `evict_bytes` of other data (0: back to back, warm)."""
    lowered = lower(secure, name, profile=True)
    steps = step_layers(secure)
    lib = _timer_library(lowered, len(steps))
    taps, logits = _random_inputs(lowered)
    ptrs = (ctypes.c_void_p * max(1, len(taps)))(*[t.ctypes.data for t in taps])
    best = np.full(max(1, len(steps)), np.inf)
    mean = np.zeros(max(1, len(steps)), np.float64)
    evict = ctypes.c_size_t(evict_bytes)
    for _ in range(repeats):
        if lib.mirrorc_profile_steps(
            ptrs, ctypes.c_void_p(logits.ctypes.data), iters, evict, ctypes.c_void_p(mean.ctypes.data)
        ):
            raise MirrorcError(f"profile: cannot allocate {evict_bytes} bytes to evict the caches")
        best = np.minimum(best, mean)
    return [step_row(x, 1e-3 * float(t)) for x, t in zip(steps, best)]


def step_row(layer: Layer, us: float) -> dict[str, Any]:
    """A timed node as the fits read it: its Layer's fields (kind, conv kernel, MACs, output floats,
    window) and its time in us."""
    return {
        "name": layer.name,
        "op_type": layer.op_type,
        "kind": "dense" if layer.kind == "matmul" else layer.kind,
        "kernel": emulator.kernel_of(layer),
        "out_channels": emulator.out_channels(layer),
        "in_features": emulator.in_features(layer),
        "weights": emulator.weights(layer),
        "unaligned_floats": emulator.unaligned_floats(layer),
        "tap_in_floats": layer.tap_in_floats,
        "tap_inputs": layer.tap_inputs,
        "params": layer.params,
        "first_of_kind": int(layer.first_of_kind),
        "first_touch_floats": layer.first_touch_floats,
        "notation": layer.notation,
        "workload": layer.workload,
        "out_floats": layer.out_floats,
        "window": layer.window,
        "us": us,
    }


# Fewer ticks than this over a calibration run and a node is below what the run resolves: it is
# reported (ticks, us) but left out of the fits, whose relative-error weights a zero would swamp.
MIN_TICKS = 5


def ta_profile_run(session: Any, lowered_floats: int, steps: int, runs: int) -> tuple[np.ndarray, int]:
    """One CMD_PROFILE call: (ticks per node, ms over all `runs`) on random inputs."""
    from mirrorc.tee import teec
    from passes import contract

    inputs = np.random.default_rng(0).standard_normal(lowered_floats).astype(np.float32)
    ticks = np.zeros(max(1, steps), np.uint32)
    op = teec.Operation(
        teec.TEEC_VALUE_INPUT, teec.TEEC_MEMREF_TEMP_INPUT, teec.TEEC_MEMREF_TEMP_OUTPUT, teec.TEEC_VALUE_OUTPUT
    )
    op.value(0, runs).temp(1, inputs).temp(2, ticks)
    session.invoke(contract.CMD_PROFILE, op)
    return ticks[:steps].copy(), op.value_out(3)[0]


def measure_steps_in_ta(
    mirrornet: onnx.ModelProto, build_dir: Path, budget_ms: int = 2000
) -> tuple[list[dict[str, Any]], Path, str]:
    """Every scheduled node of `mirrornet`'s CPM timed inside a calibration TA (`build_secure(profile=True)`
    into `build_dir`) through the simulator: runs grow tenfold from 100 until a call lasts 50 ms, then
    one call of about `budget_ms`. Rows as `measure_steps`, plus `ticks` and `runs`; returns the rows,
    the build directory and the TA's UUID."""
    from mirrorc.backend.secure_build import build_secure
    from mirrorc.tee import teec
    from passes.split import split

    plan = build_secure(mirrornet, build_dir, profile=True)
    _, secure = split(mirrornet)
    steps = step_layers(secure)
    floats = plan["single"]["bytes"] // 4
    with teec.Context.simulator(build_dir) as ctx, ctx.open_session(plan["uuid"]) as session:
        runs = 100
        _, ms = ta_profile_run(session, floats, len(steps), runs)
        while ms < 50 and runs < 10**8:
            runs *= 10
            _, ms = ta_profile_run(session, floats, len(steps), runs)
        runs = max(1, int(runs * budget_ms / max(ms, 1)))
        ticks, ms = ta_profile_run(session, floats, len(steps), runs)
    if int(ticks.sum()) > ms:  # disjoint nodes inside the timed loop cannot hold more ticks than it
        raise MirrorcError(f"profile: the TA reported {int(ticks.sum())} node ticks in a {ms} ms run")
    rows = [dict(step_row(x, 1000.0 * int(t) / runs), ticks=int(t), runs=runs) for x, t in zip(steps, ticks)]
    return rows, build_dir, plan["uuid"]


def measure_total_us(secure: onnx.ModelProto, name: str, iters: int = 50, evict_bytes: int = EVICT_BYTES) -> float:
    """us per batch-1 inference of the release C (no timers) at the TA's flags, fastest of 5, every
    inference cold after touching `evict_bytes` of other data (0: back to back; cbuild.time_lowered)."""
    lowered = lower(secure, name)
    taps, logits = _random_inputs(lowered)
    seconds, _ = cbuild.time_lowered(
        lowered, taps, logits, iters=iters, repeats=5, cflags=TA_HOST_CFLAGS, evict_bytes=evict_bytes
    )
    return 1e6 * seconds


def fit_nonneg(
    features: np.ndarray, y: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """Non-negative least squares (Lawson-Hanson) of y on the columns of `features`, each row weighted
    by `weights`, by default 1 / y: the relative error, so every sample weighs alike, small layers as
    much as large ones. No term of a layer's cost can be negative."""
    a = np.asarray(features, float)
    ys = np.asarray(y, float)
    w = 1.0 / np.maximum(ys, 1e-12) if weights is None else np.asarray(weights, float)
    a, b = a * w[:, None], ys * w
    n = a.shape[1]
    x = np.zeros(n)
    active: list[int] = []
    for _ in range(3 * n + 10):  # Lawson-Hanson ends in at most a few passes per column
        grad = a.T @ (b - a @ x)
        free = [j for j in range(n) if j not in active and grad[j] > 1e-12 * max(1.0, float(np.abs(grad).max()))]
        if not free:
            break
        active.append(max(free, key=lambda j: grad[j]))
        while True:
            z = np.zeros(n)
            z[active] = np.linalg.lstsq(a[:, active], b, rcond=None)[0]
            if all(z[j] > 0 for j in active):
                x = z
                break
            step = min(x[j] / (x[j] - z[j]) for j in active if z[j] <= 0)
            x = x + step * (z - x)
            active = [j for j in active if x[j] > 0]
    return x


_COLUMN = {  # emulator.Terms field -> its feature in a step row
    "per_mac": lambda r: r["workload"],
    "per_float": lambda r: r["out_floats"],
    "per_window": lambda r: r["window"] * r["out_floats"],
    "per_out_channel": lambda r: r["out_channels"],
    "per_in_float": lambda r: r["in_features"],
    "per_weight": lambda r: r.get("weights", 0),
    "per_unaligned": lambda r: r.get("unaligned_floats", 0),
    "per_first": lambda r: r.get("first_of_kind", 0),
    "per_first_touch": lambda r: r.get("first_touch_floats", 0),
}
# Where reading a cold tap stops paying its first lines' latency (the head term), in floats: the
# fit picks the one that fits best
COLD_HEAD_FLOATS = (1024, 4096, 16384)


def _varying(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """The columns whose feature varies over `rows`: a column that never varies (zeros, or
    DenseNet-only plane counts fitted on Inception's 2-plane Muls) is the base's; given a coefficient
    of its own it would be extrapolated blind."""
    return [c for c in columns if len({_COLUMN[c](r) for r in rows}) > 1]


def _fit_terms(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> emulator.Terms:
    """Terms with the named fields (emulator.Terms's; base always) fitted on `rows`."""
    cols = _varying(rows, columns)
    a = np.array([[_COLUMN[c](r) for c in cols] + [1.0] for r in rows], float)
    coef = fit_nonneg(a, [r["us"] for r in rows])
    return emulator.Terms(**dict(zip(cols, map(float, coef))), base=float(coef[-1]))


def _cold_layer(r: dict[str, Any]) -> Layer:
    """The fields of a step row that `emulator.cold_arrays` reads, as a Layer."""
    return Layer(
        "",
        "",
        r["kind"],
        0,
        0,
        tap_in_floats=r.get("tap_in_floats", 0),
        tap_inputs=r.get("tap_inputs", 0),
    )


def _fit_jointly(
    groups: dict[tuple[str, str], tuple[list[dict[str, Any]], tuple[str, ...]]], head: int
) -> tuple[emulator.ColdReads, dict[tuple[str, str], emulator.Terms], float]:
    """One non-negative least-squares fit of every group's terms (its rows, its columns and a base)
    and the cold-read price every group shares (emulator.ColdReads with `head`), on relative error;
    and its sum of squared relative errors."""
    shared = 3  # the cold-read prices, in emulator.cold_arrays' order: per tap, per head float, per float
    layout, at = [], shared  # (group, its varying columns, where its block starts)
    for key, (rows, cols) in groups.items():
        varying = _varying(rows, cols)
        layout.append((key, varying, at))
        at += len(varying) + 1
    width = at
    blocks, ys = [], []
    for key, varying, at in layout:
        for r in groups[key][0]:
            line = np.zeros(width)
            line[:shared] = emulator.cold_arrays(_cold_layer(r), head)
            line[at : at + len(varying)] = [_COLUMN[c](r) for c in varying]
            line[at + len(varying)] = 1.0
            blocks.append(line)
            ys.append(r["us"])
    a, y = np.array(blocks), np.array(ys, float)
    coef = fit_nonneg(a, y)
    sse = float((((a @ coef - y) / np.maximum(y, 1e-12)) ** 2).sum())
    cold = emulator.ColdReads(float(coef[0]), float(coef[1]), float(coef[2]), head)
    terms = {
        key: emulator.Terms(
            **dict(zip(varying, map(float, coef[at : at + len(varying)]))), base=float(coef[at + len(varying)])
        )
        for key, varying, at in layout
    }
    return cold, terms, sse


def fit_terms(steps: Sequence[dict[str, Any]], min_per_op: int = 3) -> dict[str, Any]:
    """From `measure_steps` rows: the conv and dense lines (us vs workload, Eq. 4, 5; a kind with no
    sample gets the other's line); fitted together, the price of reading cold taps
    (emulator.ColdReads, its head length the best of COLD_HEAD_FLOATS) and per kernel
    (`emulator.kernel_of`) with more samples than terms, MAC, output-float, unaligned-float, base and
    output-channel + weight (conv) or input-feature (dense) terms, per op type of the rest with at least
    `min_per_op` samples output-float, output-plane, unaligned-float, window and base terms (the window
    term only where windows differ from 1); then for all other ops together ("*") the same terms on
    what the cold reads leave."""
    fits: dict[str, Any] = {}
    for kind in ("conv", "dense"):
        rows = [s for s in steps if s["kind"] == kind]
        if rows:
            fits[kind] = fit_line([s["workload"] for s in rows], [s["us"] for s in rows])
    if not fits:
        raise MirrorcError("profile: no conv or dense layer was measured")
    for kind in ("conv", "dense"):
        fits.setdefault(kind, next(iter(fits.values())))
    groups: dict[tuple[str, str], tuple[list[dict[str, Any]], tuple[str, ...]]] = {}
    first = ("per_first", "per_first_touch")
    for kernel in emulator.KERNELS:
        rows = [s for s in steps if s.get("kernel") == kernel]
        if len(rows) >= 6:  # more samples than terms (a column of zeros has none)
            loops = ("per_in_float",) if kernel == "dense" else ("per_in_float", "per_out_channel", "per_weight")
            groups["kernels", kernel] = (rows, ("per_mac", "per_float", *loops, "per_unaligned", *first))
    others = [s for s in steps if s["kind"] == "other"]
    sizes = ("per_float", "per_out_channel", "per_unaligned", *first)
    for op in sorted({s["op_type"] for s in others}):
        rows = [s for s in others if s["op_type"] == op]
        if len(rows) >= min_per_op:
            windowed = any(r.get("window", 1) != 1 for r in rows)
            groups["other", op] = (rows, (*sizes, "per_window") if windowed else sizes)
    cold, terms, _ = min((_fit_jointly(groups, head) for head in COLD_HEAD_FLOATS), key=lambda fit: fit[2])
    fits["cold"] = cold
    fits["kernels"] = {name: t for (table, name), t in terms.items() if table == "kernels"}
    fits["other"] = {name: t for (table, name), t in terms.items() if table == "other"}
    if others:
        rest = [dict(r, us=max(r["us"] - cold.us(_cold_layer(r)), 0.1 * r["us"])) for r in others]
        fits["other"]["*"] = _fit_terms(rest, sizes)
    return fits


def fit_call_us(device: emulator.Device, cpms: Sequence[tuple[Sequence[Layer], float]]) -> tuple[float, float]:
    """(fixed cost per inference, timer cost per node) from each CPM's release C time against the sum
    of `device`'s layer predictions over its layers ((layers, measured us) per CPM): measured -
    predicted = call - timer * nodes, both non-negative, on the relative error. The node terms are
    fitted on times that each hold one timer pair, which the release C does not run; `without_timer`
    takes that cost out of them."""
    if not cpms:
        return 0.0, 0.0
    totals = np.array([total for _, total in cpms], float)
    residual = totals - np.array([sum(device.layer_us(x) for x in cpm) for cpm, _ in cpms])
    nodes = np.array([len(cpm) for cpm, _ in cpms], float)
    call, timer = fit_nonneg(np.stack([np.ones_like(nodes), -nodes], 1), residual, weights=1.0 / totals)
    return float(call), float(timer)


def without_timer(terms: dict[str, Any], timer_us: float) -> dict[str, Any]:
    """`terms` with the timer's cost per node taken out of every base (never below zero)."""

    def line(f: emulator.Linear) -> emulator.Linear:
        return emulator.Linear(f.slope, max(0.0, f.base - timer_us))

    def cut(t: emulator.Terms) -> emulator.Terms:
        return dataclasses.replace(t, base=max(0.0, t.base - timer_us))

    return dict(
        terms,
        conv=line(terms["conv"]),
        dense=line(terms["dense"]),
        kernels={k: cut(t) for k, t in terms.get("kernels", {}).items()},
        other={op: cut(t) for op, t in terms["other"].items()},
    )


def fit_device_terms(steps: Sequence[dict[str, Any]], cpms: Sequence[tuple[Sequence[Layer], float]]) -> dict[str, Any]:
    """The whole compute fit: `fit_terms` on the timed nodes, then the fixed cost per inference and
    the timer's cost per node from the release totals of `cpms` (`fit_call_us`)."""
    terms = fit_terms(steps)
    call, timer = fit_call_us(device_of(terms), cpms)
    return dict(without_timer(terms, timer), call_us=call, timer_us=timer)


def profile_json(
    terms: dict[str, Any], switch: emulator.Linear, *, name: str, source: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A device profile (the format of mirrorc/plan/devices/*.json) from fitted terms; the memory
    figures, which nothing here measures, are the bundled default's."""
    base = json.loads((emulator.DEVICES_DIR / f"{emulator.DEFAULT_DEVICE}.json").read_text())
    out = {
        "name": name,
        "description": f"fitted by {source}",
        "context_switch_us": {"per_kb": switch.slope, "base": switch.base, "kb_bytes": 1024},
        "conv2d_us": {"per_workload": terms["conv"].slope, "base": terms["conv"].base, "source": source},
        "dense_us": {"per_workload": terms["dense"].slope, "base": terms["dense"].base, "source": source},
        "kernels_us": {
            k: {
                "per_mac": t.per_mac,
                "per_out_float": t.per_float,
                "per_out_channel": t.per_out_channel,
                "per_weight": t.per_weight,
                "per_in_float": t.per_in_float,
                "per_unaligned_float": t.per_unaligned,
                "per_first_of_kind": t.per_first,
                "per_first_touch_float": t.per_first_touch,
                "base": t.base,
            }
            for k, t in terms.get("kernels", {}).items()
        },
        "other_us": {
            op: {
                "per_float": t.per_float,
                "per_window_float": t.per_window,
                "per_out_channel": t.per_out_channel,
                "per_unaligned_float": t.per_unaligned,
                "per_first_of_kind": t.per_first,
                "per_first_touch_float": t.per_first_touch,
                "base": t.base,
            }
            for op, t in terms["other"].items()
        },
        "cold_read_us": dataclasses.asdict(terms.get("cold", emulator.ColdReads())),
        "call_us": {
            "base": terms.get("call_us", 0.0),
            "source": "fitted on the release C's totals against the sum of its layers, with "
            f"{terms.get('timer_us', 0.0):.4g} us per node of the profiling timers taken out of every base",
        },
        "compute_scale": {
            "factor": 1.0,
            "applies_to": ["conv"],
            "source": "none: every node is measured and fitted",
        },
        "tee_memory_bytes": base["tee_memory_bytes"],
        "tee_memory_source": f"not measured: {emulator.DEFAULT_DEVICE}'s",
        "ta_overhead_bytes": base["ta_overhead_bytes"],
        "ta_overhead_source": f"not measured: {emulator.DEFAULT_DEVICE}'s",
    }
    out.update(extra or {})
    return out


def measure_transfer(build_dir: Path, uuid: str, sizes: Sequence[int], invokes: int = 200) -> list[tuple[int, float]]:
    """(bytes, fastest us per invoke) of a refused command carrying a temp input buffer of each size,
    through the simulator TA `uuid` of the secure build in `build_dir`."""
    from mirrorc.tee import teec

    out = []
    with teec.Context.simulator(build_dir) as ctx, ctx.open_session(uuid) as session:
        for size in sizes:
            buf = np.zeros(max(1, size // 4), np.float32)
            op = teec.Operation(teec.TEEC_MEMREF_TEMP_INPUT).temp(0, buf)
            best = float("inf")
            for _ in range(invokes):
                t0 = time.perf_counter()
                session.try_invoke(REFUSED_COMMAND, op)
                best = min(best, time.perf_counter() - t0)
            out.append((int(buf.nbytes), 1e6 * best))
    return out


def example_models(out_dir: Path) -> dict[str, Path]:
    """LeNet-5 and VGG-7 (examples/make_models.py) and the layer-shape sweep (mirrorc.profile_sweep)
    as ONNX files in `out_dir`."""
    from mirrorc.profile_sweep import write_sweep_models

    script = Path(__file__).resolve().parents[1] / "examples" / "make_models.py"
    subprocess.run([sys.executable, str(script), str(out_dir)], check=True, capture_output=True)
    return {**{name: out_dir / f"{name}.onnx" for name in ("lenet5", "vgg7")}, **write_sweep_models(out_dir)}


# What `mirrorc profile` times by default: the paper's examples and the sweep of every kind the zoo's CPMs hold.
DEFAULT_MODELS = ("lenet5", "vgg7", *SWEEP_MODELS)


def device_of(terms: dict[str, Any]) -> emulator.Device:
    """The emulator's Device of fitted terms (no transfer term)."""
    raw = profile_json(terms, emulator.Linear(0.0, 0.0), name="fitted", source="fit_terms")
    return emulator.device_from_json(raw, "fitted terms")


def calibrate(
    tee: str = "sim",
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    channels: Sequence[int] = (1, 2, 4),
    transfer_sizes: Sequence[int] = (4, 4096, 65536, 262144),
    iters: int = 30,
    name: str | None = None,
    ta_budget_ms: int = 2000,
    evict_bytes: int = EVICT_BYTES,
) -> dict[str, Any]:
    """Measure and fit a device profile (the JSON of mirrorc/plan/devices/*.json, as a dict). `tee`:
    "sim" times the model C in a host harness, each inference cold after touching `evict_bytes` of
    other data (0: back to back, warm), "optee" inside a calibration TA, about `ta_budget_ms` of
    back-to-back inferences per model and C (see the module doc)."""
    from mirrorc.backend.secure_build import build_secure
    from mirrorc.pipeline import build_mirrornet
    from passes.split import split

    if tee not in TEES:
        raise MirrorcError(f"tee must be one of {', '.join(TEES)}, not '{tee}'")
    steps: list[dict[str, Any]] = []
    totals: list[tuple[list[Layer], float]] = []  # per CPM timed in the harness: layers, release C's us
    transfer: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="mirrorc-profile-") as tmp:
        paths = example_models(Path(tmp))
        for model in models:
            if model not in paths:
                raise MirrorcError(f"profile: model '{model}' is not one of {', '.join(paths)}")
            for c in channels:
                mirrornet, _ = build_mirrornet(paths[model], channels=c)
                if tee == "optee":  # timed inside the calibration TA, whose transfers are timed too
                    rows, build_dir, uuid = measure_steps_in_ta(mirrornet, Path(tmp) / f"{model}_c{c}", ta_budget_ms)
                    steps += rows
                    if not transfer and transfer_sizes:
                        transfer = measure_transfer(build_dir, uuid, transfer_sizes)
                    continue
                _, secure = split(mirrornet)
                steps += measure_steps(secure, f"{model}_c{c}", iters, evict_bytes=evict_bytes)
                total = measure_total_us(secure, f"{model}_c{c}", iters, evict_bytes=evict_bytes)
                totals.append((step_layers(secure), total))
                if not transfer and transfer_sizes:
                    build_dir = Path(tmp) / "ta_build"
                    plan = build_secure(mirrornet, build_dir)
                    transfer = measure_transfer(build_dir, plan["uuid"], transfer_sizes)
    switch = (
        fit_line([b / 1024 for b, _ in transfer], [us for _, us in transfer]) if transfer else emulator.Linear(0, 0)
    )
    resolved = [s for s in steps if s.get("ticks", MIN_TICKS) >= MIN_TICKS]
    timing = f"cold, {evict_bytes >> 20} MB touched before each" if tee == "sim" and evict_bytes else "back to back"
    source = (
        f"mirrorc profile --tee {tee}: {len(steps)} nodes of {', '.join(models)} at C={list(channels)}, "
        f"inferences {timing}"
    )
    if len(resolved) < len(steps):
        source += f" ({len(steps) - len(resolved)} under {MIN_TICKS} TEE_GetSystemTime ticks left out of the fits)"
    terms = fit_device_terms(resolved, totals)
    return profile_json(
        terms,
        switch,
        name=name or f"{tee}-host",
        source=source,
        extra={"samples": {"transfer_bytes_us": transfer, "nodes": steps}},
    )
