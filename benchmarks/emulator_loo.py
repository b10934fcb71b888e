"""The Performance Emulator against measurement, leave-one-out: predicted vs measured secure-world compute.

    python benchmarks/emulator_loo.py [--models lenet5,vgg7,bvlc_alexnet,...] [--channels 2]
                                      [--rounds 5] [--iters 30] [--evict-mb 64]

Per model: mirrornet (pipeline, random CPM weights) -> split -> the CPM's C at the TA's flags
(mirrorc.profile.TA_HOST_CFLAGS). Models: LeNet-5, VGG-7 and the nine model-zoo files shipped with
onnx (benchmarks/ta_flags.py's set; all pass `mirrorc check`), at --channels.

Every inference is timed cold, as on a device where the normal world's backbone runs between two CPM
inferences: --evict-mb of other data touched first, untimed (mirrorc.profile.EVICT_BYTES; 0 times
them back to back, warm, when a CPM's weights may still sit in the shared last-level cache).

Measured, in --rounds interleaved rounds (every model and every sweep CPM once per round, so a busy
spell of the shared machine hits the predicted and the predictors alike): the release C's us per
batch-1 inference (no timers; fastest of 5 loops of --iters) and every node's time in the profiling
build (lower(profile=True), its mean over --iters, fastest of 5 such loops: the same statistic). A
model's measured time is the median over rounds of the release C; its spread is (max - min) / median
over the rounds, the measurement's own noise. A node's time is its median over rounds. Beside them,
the profiling build with its timers compiled as empty functions (median over the rounds): the
release C's computation in another binary layout, so a gap between it and the release C is the
layout's, which no per-layer term can see.

Predicted: the profile `mirrorc profile` would fit (mirrorc.profile.fit_device_terms: per kernel and
per op type terms, the shared price of cold reads, a fixed cost per inference, the profiling timers'
cost taken out) fitted on the layer-shape sweep (mirrorc.profile_sweep at C = 1, 2, 4) and the OTHER
models' nodes and totals only, summed by the emulator over this model's nodes. World switches are in
neither figure (`mirrorc profile` fits them separately). Per model the error is split by kind (conv
kernel or op type: predicted minus measured node time), so a miss names the term that misses."""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from c_lowering import model_path  # noqa: E402
from record import write_results  # noqa: E402
from ta_flags import MODELS  # noqa: E402

from mirrorc import profile  # noqa: E402
from mirrorc.backend import cbuild  # noqa: E402
from mirrorc.pipeline import build_mirrornet  # noqa: E402
from mirrorc.plan import emulator  # noqa: E402
from mirrorc.plan.layers import Layer  # noqa: E402
from mirrorc.profile_sweep import SWEEP_MODELS, write_sweep_models  # noqa: E402
from passes.lower_c import lower  # noqa: E402
from passes.split import split  # noqa: E402

SWEEP_CHANNELS = (1, 2, 4)
# The paper's emulator error (Sec. V-D, Table IV), on its Raspberry Pi 3B
PAPER_ERROR = {"lenet5": "25.8%", "vgg7": "0.5-4.8% (VGGs)", "vgg19": "0.5-4.8% (VGGs)"}


def kind_of(row: dict[str, Any]) -> str:
    """The term a node is predicted by: its kernel (conv_*, dense) or its op type."""
    return row["kernel"] or row["op_type"]


def median_rows(rounds: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each node's row with its median time over the rounds."""
    return [dict(r, us=statistics.median(x["us"] for x in same)) for r, *same in zip(rounds[0], *rounds)]


# The profiling build's hooks as empty functions: its binary runs the release C's work
EMPTY_HOOKS = "void mirrorc_profile_begin(void) {}\nvoid mirrorc_profile_end(unsigned step) { (void)step; }\n"


def empty_timer_us(secure: Any, name: str, iters: int, evict_bytes: int) -> float:
    """CPU us per inference of the profiling build (lower(profile=True)) with empty timers: the same
    computation as the release C in another binary layout (the timer calls move code and data)."""
    lowered = lower(secure, name, profile=True)
    lowered = dataclasses.replace(lowered, files=dict(lowered.files, **{"model/mirrorc_empty_hooks.c": EMPTY_HOOKS}))
    taps, logits = profile._random_inputs(lowered)
    seconds, _ = cbuild.time_lowered(
        lowered, taps, logits, iters=iters, repeats=5, cflags=profile.TA_HOST_CFLAGS, evict_bytes=evict_bytes
    )
    return 1e6 * seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--evict-mb", type=int, default=profile.EVICT_BYTES >> 20, help="0: warm, back to back")
    ap.add_argument(
        "--measurements",
        type=Path,
        help="a pickle of the measurements: read when it exists (refit without measuring again), else "
        "written after measuring",
    )
    args = ap.parse_args()
    names = args.models.split(",")
    evict = args.evict_mb << 20
    if args.measurements and args.measurements.exists():
        with open(args.measurements, "rb") as f:
            saved = pickle.load(f)

        # the sweep may have grown since: the saved one is made again (`as_the_code_sees_them`)
        def comparable(setup: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in setup.items() if k != "sweep_models"}

        if comparable(saved["setup"]) != comparable(setup_of(args)) or not set(names) <= set(saved["measured"]):
            raise SystemExit(f"emulator_loo: {args.measurements} holds other measurements: {saved['setup']}")
        report(args, names, **as_the_code_sees_them(saved, args.channels))
        return
    secure: dict[str, Any] = {}
    nodes: dict[str, list[Layer]] = {}
    sweep: dict[str, Any] = {}  # "sweepN_cC" -> its secure graph, timed in every round as the models are
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write_sweep_models(Path(tmp)).items():
            for c in SWEEP_CHANNELS:
                mirrornet, _ = build_mirrornet(path, channels=c)
                _, sweep[f"{name}_c{c}"] = split(mirrornet)
        for name in names:
            mirrornet, _ = build_mirrornet(model_path(name, Path(tmp)), channels=args.channels)
            _, secure[name] = split(mirrornet)
            nodes[name] = profile.step_layers(secure[name])
    totals: dict[str, list[float]] = {name: [] for name in names}
    empty_timers: dict[str, list[float]] = {name: [] for name in names}
    node_rounds: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in [*names, *sweep]}
    sweep_rounds: dict[str, list[float]] = {name: [] for name in sweep}
    for done in range(args.rounds):
        for name, sec in sweep.items():
            sweep_rounds[name].append(profile.measure_total_us(sec, name, args.iters, evict_bytes=evict))
            node_rounds[name].append(profile.measure_steps(sec, name, args.iters, evict_bytes=evict))
        for name in names:
            totals[name].append(profile.measure_total_us(secure[name], name, args.iters, evict_bytes=evict))
            empty_timers[name].append(empty_timer_us(secure[name], name, args.iters, evict))
            node_rounds[name].append(profile.measure_steps(secure[name], name, args.iters, evict_bytes=evict))
        print(f"round {done + 1}/{args.rounds}", flush=True)
    samples = {name: median_rows(node_rounds[name]) for name in names}
    measured = {name: statistics.median(totals[name]) for name in names}
    sweep_rows = [r for name in sweep for r in median_rows(node_rounds[name])]
    sweep_totals = [(profile.step_layers(sec), statistics.median(sweep_rounds[name])) for name, sec in sweep.items()]
    saved = dict(
        sweep_rows=sweep_rows,
        sweep_totals=sweep_totals,
        nodes=nodes,
        samples=samples,
        measured=measured,
        totals=totals,
        empty_timers=empty_timers,
    )
    if args.measurements:
        with open(args.measurements, "wb") as f:
            pickle.dump(dict(saved, setup=setup_of(args)), f)
    report(args, names, **saved)


def as_the_code_sees_them(saved: dict[str, Any], channels: int) -> dict[str, Any]:
    """Saved measurements with every node's Layer made again by today's `profile.step_layers` (the
    times stay): a term that reads a new Layer field refits them without measuring again."""
    out = {k: v for k, v in saved.items() if k != "setup"}
    with tempfile.TemporaryDirectory() as tmp:
        cpms = [
            (name, path, c)
            for name, path in write_sweep_models(Path(tmp)).items()
            if name in saved["setup"]["sweep_models"]
            for c in saved["setup"]["sweep_channels"]
        ]
        if len(cpms) != len(saved["sweep_totals"]):
            raise SystemExit("emulator_loo: the saved sweep is not today's mirrorc.profile_sweep")
        out["sweep_totals"] = [
            (now_layers(path, c, [(x.name, x.notation) for x in old]), total)
            for (_, path, c), (old, total) in zip(cpms, saved["sweep_totals"])
        ]
        out["nodes"] = {
            n: now_layers(model_path(n, Path(tmp)), channels, [(x.name, x.notation) for x in old])
            for n, old in saved["nodes"].items()
        }
    return out


def now_layers(path: Path, channels: int, names: list[tuple[str, str]]) -> list[Layer]:
    """The scheduled nodes' Layers of `path`'s CPM at `channels`, which must be the nodes `names`
    ((name, notation) each: the same nodes of the same shapes)."""
    mirrornet, _ = build_mirrornet(path, channels=channels)
    layers = profile.step_layers(split(mirrornet)[1])
    if [(x.name, x.notation) for x in layers] != names:
        raise SystemExit(f"emulator_loo: {path.name} at C={channels} no longer has the saved nodes")
    return layers


def setup_of(args: argparse.Namespace) -> dict[str, Any]:
    """What the measurements depend on besides the models."""
    return {
        "channels": args.channels,
        "rounds": args.rounds,
        "iters": args.iters,
        "evict_mb": args.evict_mb,
        "sweep_channels": list(SWEEP_CHANNELS),
        "sweep_models": list(SWEEP_MODELS),
        "cflags": list(profile.TA_HOST_CFLAGS),
    }


def report(
    args: argparse.Namespace,
    names: list[str],
    *,
    sweep_rows: list[dict[str, Any]],
    sweep_totals: list[tuple[list[Layer], float]],
    nodes: dict[str, list[Layer]],
    samples: dict[str, list[dict[str, Any]]],
    measured: dict[str, float],
    totals: dict[str, list[float]],
    empty_timers: dict[str, list[float]],
) -> None:
    """Fit leave-one-out, print the table and write the results. The fits read each node's row as
    `profile.step_row` makes it now from its Layer and time, so saved measurements refit under
    changed terms."""
    sweep_layers = [x for cpm, _ in sweep_totals for x in cpm]
    sweep_rows = [profile.step_row(x, r["us"]) for x, r in zip(sweep_layers, sweep_rows, strict=True)]
    samples = {n: [profile.step_row(x, r["us"]) for x, r in zip(nodes[n], samples[n], strict=True)] for n in samples}
    rows = []
    for name in names:
        others = [o for o in names if o != name]
        terms = profile.fit_device_terms(
            sweep_rows + [s for o in others for s in samples[o]],
            sweep_totals + [(nodes[o], measured[o]) for o in others],
        )
        device = profile.device_of(terms)
        predicted_nodes = [device.layer_us(x) for x in nodes[name]]
        predicted = emulator.predict(device, nodes[name], [])["compute_us"]
        by_kind: dict[str, dict[str, float]] = {}
        for row, pred in zip(samples[name], predicted_nodes):
            k = by_kind.setdefault(kind_of(row), {"measured_us": 0.0, "predicted_us": 0.0})
            k["measured_us"] += row["us"]
            k["predicted_us"] += pred
        spread = 100 * (max(totals[name]) - min(totals[name])) / measured[name]
        rows.append(
            {
                "model": name,
                "nodes": len(nodes[name]),
                "measured_us": measured[name],
                "measured_rounds_us": totals[name],
                "spread_pct": spread,
                "node_sum_us": sum(s["us"] for s in samples[name]),
                "empty_timers_us": statistics.median(empty_timers[name]),
                "call_us": terms["call_us"],
                "timer_us": terms["timer_us"],
                "predicted_us": predicted,
                "error_pct": 100 * (predicted - measured[name]) / measured[name],
                "paper_error": PAPER_ERROR.get(name),
                "by_kind": by_kind,
            }
        )
    print(
        f"{'model':>14} {'nodes':>6} {'measured us':>12} {'spread':>7} {'empty timers':>13} {'node sum':>9} "
        f"{'predicted':>10} {'error':>8}  largest miss by kind (pred - node us)   paper"
    )
    for r in rows:
        k, v = max(r["by_kind"].items(), key=lambda kv: abs(kv[1]["predicted_us"] - kv[1]["measured_us"]))
        miss = f"{k} {v['predicted_us'] - v['measured_us']:+.1f}"
        print(
            f"{r['model']:>14} {r['nodes']:>6} {r['measured_us']:>12.1f} {r['spread_pct']:>6.1f}% "
            f"{r['empty_timers_us']:>13.1f} {r['node_sum_us']:>9.1f} {r['predicted_us']:>10.1f} "
            f"{r['error_pct']:>+7.1f}%  {miss:<37} "
            f"{r['paper_error'] or ''}"
        )
    print(f"largest |error|: {max(abs(r['error_pct']) for r in rows):.1f}%")
    write_results(
        "emulator_loo",
        "Performance Emulator leave-one-out: CPM compute at the TA's flags, predicted by a profile fitted "
        "on the layer-shape sweep and the other models' per-node times, against the measured release C",
        {"setup": dict(setup_of(args), sweep_nodes=len(sweep_rows)), "rows": rows},
    )


if __name__ == "__main__":
    main()
