"""`mirrorc profile` and the calibrated Performance Emulator: the fits recover known coefficients, a
fitted profile round-trips through the loader, the profiling lowering is the release C plus timers,
and the command runs end to end on the simulator."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from helpers import EXAMPLE_MODELS
from mirrorc import profile
from mirrorc.backend import cbuild, ta
from mirrorc.backend.secure_build import build_secure
from mirrorc.cli import main
from mirrorc.pipeline import build_mirrornet
from mirrorc.plan import emulator
from mirrorc.plan.layers import Layer
from mirrorc.tee import teec
from passes.lower_c import PROFILE_HOOKS, lower, plan_secure
from passes.split import split


def test_fit_line_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(100, 200_000, 40).astype(float)
    y = (3e-4 * x + 0.5) * (1 + 1e-4 * rng.standard_normal(40))  # 0.01% noise
    fit = profile.fit_line(x, y)
    print(f"slope {fit.slope:.6g} (3e-4), base {fit.base:.6g} (0.5)")
    assert abs(fit.slope - 3e-4) / 3e-4 < 1e-3
    assert abs(fit.base - 0.5) < 5e-3


def test_fit_line_keeps_coefficients_non_negative() -> None:
    """A line that would cross below zero is refitted through the origin (the loader rejects negatives)."""
    fit = profile.fit_line([1.0, 2.0, 3.0], [1.0, 3.0, 5.0])  # y = 2x - 1
    assert fit.base == 0.0 and fit.slope > 0


def _row(
    kind: str,
    op: str,
    workload: int,
    out_floats: int,
    us: float,
    kernel: str | None = None,
    window: int = 1,
    out_channels: int = 0,
    in_features: int = 0,
) -> dict:
    return {
        "kind": kind,
        "op_type": op,
        "workload": workload,
        "out_floats": out_floats,
        "us": us,
        "kernel": kernel,
        "window": window,
        "out_channels": out_channels,
        "in_features": in_features,
    }


def test_fit_terms_recovers_per_op_lines() -> None:
    rows = [_row("conv", "Conv", w, 0, 1e-4 * w + 0.2) for w in (1000, 5000, 20000, 80000)]
    rows += [_row("dense", "Gemm", w, 0, 2e-4 * w + 0.1) for w in (100, 500, 2500)]
    rows += [_row("other", "Relu", 0, n, 1e-3 * n + 0.05) for n in (100, 1000, 6000)]
    rows += [_row("other", "MaxPool", 0, n, 4e-3 * n) for n in (200, 800)]  # too few for its own line
    terms = profile.fit_terms(rows)
    worst = max(
        abs(terms["conv"].slope - 1e-4) / 1e-4,
        abs(terms["dense"].slope - 2e-4) / 2e-4,
        abs(terms["other"]["Relu"].per_float - 1e-3) / 1e-3,
    )
    print(f"largest relative slope error {worst:.2g}")
    assert worst < 1e-6
    assert abs(terms["conv"].base - 0.2) < 1e-6 and abs(terms["other"]["Relu"].base - 0.05) < 1e-6
    assert "MaxPool" not in terms["other"] and "*" in terms["other"]
    assert terms["kernels"] == {}  # rows without a kernel: the Eq. 4 line alone


# Known per-kernel and per-op coefficients the synthetic timings below are made of
KNOWN_KERNELS = {
    "conv_pointwise": emulator.Terms(per_mac=6e-5, per_float=2e-4, per_out_channel=0.05, per_weight=3e-3, base=0.03),
    "conv_spatial": emulator.Terms(per_mac=8e-5, per_float=5e-4, per_out_channel=0.01, per_weight=1e-3, base=0.1),
    "conv_strided": emulator.Terms(per_mac=4e-4, per_float=1e-3, per_out_channel=0.02, per_unaligned=2e-4, base=0.2),
    "conv_grouped": emulator.Terms(per_mac=1e-4, per_float=0.0, per_out_channel=0.0, base=0.05),  # zeros stay zero
    "dense": emulator.Terms(per_mac=9e-5, per_float=3e-4, per_in_float=2e-3, base=0.04),
}
KNOWN_OTHER = {
    "AveragePool": emulator.Terms(per_float=1e-4, per_window=6.8e-4, per_unaligned=5e-5, base=0.02),
    "LRN": emulator.Terms(per_float=2e-3, per_window=1.2e-3, base=0.1),
    "Add": emulator.Terms(per_float=1.4e-4, base=0.02),
    "BatchNormalization": emulator.Terms(per_float=3e-4, per_out_channel=0.02, base=0.03),
}
# ... and the price of cold taps they all share (read by half the Adds and half the kernels' layers)
KNOWN_COLD = emulator.ColdReads(per_tap=0.3, per_head_float=4e-4, per_float=2.5e-4, head_floats=4096)


def _synthetic_rows(rng: np.random.Generator) -> list[dict]:
    rows = []
    for kernel, t in KNOWN_KERNELS.items():
        for _ in range(10):
            macs, floats, chans, wts = (
                int(rng.integers(100, 2_000_000)),
                int(rng.integers(50, 100_000)),
                int(rng.integers(1, 1000)),
                int(rng.integers(4, 40_000)),
            )
            oc, ic, wts = (0, chans, 0) if kernel == "dense" else (chans, 0, wts)
            odd = floats * int(rng.integers(0, 2))  # unaligned planes in half of the layers
            us = t.per_mac * macs + t.per_float * floats + t.per_out_channel * oc + t.per_in_float * ic
            us += t.per_weight * wts + t.per_unaligned * odd + t.base
            tap = int(rng.integers(50, 200_000)) * int(rng.integers(0, 2))  # a CPM's first node reads one
            us += KNOWN_COLD.us(Layer("k", "Conv", "conv", 0, macs, tap_in_floats=tap, tap_inputs=int(tap > 0)))
            row = _row(kernel.split("_")[0], "Conv", macs, floats, us, kernel, out_channels=oc, in_features=ic)
            rows.append(dict(row, weights=wts, unaligned_floats=odd, tap_in_floats=tap, tap_inputs=int(tap > 0)))
    for op, t in KNOWN_OTHER.items():
        for _ in range(8):
            floats, window = int(rng.integers(8, 100_000)), int(rng.choice([1, 4, 5, 9, 49]))
            window = window if op in ("AveragePool", "LRN") else 1
            odd, planes = floats * int(rng.integers(0, 2)), int(rng.integers(1, 64))
            us = t.per_float * floats + t.per_window * window * floats + t.per_unaligned * odd
            us += t.per_out_channel * planes + t.base
            tap = floats * int(rng.integers(0, 2)) if op == "Add" else 0  # half the Adds read a tap
            us += KNOWN_COLD.us(Layer("a", op, "other", 0, 0, tap_in_floats=tap, tap_inputs=int(tap > 0)))
            row = _row("other", op, 0, floats, us, window=window, out_channels=planes)
            rows.append(dict(row, unaligned_floats=odd, tap_in_floats=tap, tap_inputs=int(tap > 0)))
    return rows


def test_fit_terms_recovers_known_kernel_and_window_terms() -> None:
    """Exact synthetic timings: every kernel's and op's terms and the shared cold-read price (its head
    length among the candidates) come back to 1e-6 (relative, or absolute for a zero term),
    non-negative; with 1% noise within 10% on the terms that carry the time."""
    rng = np.random.default_rng(1)
    terms = profile.fit_terms(_synthetic_rows(rng))
    assert set(terms["kernels"]) == set(KNOWN_KERNELS)
    assert terms["cold"].head_floats == KNOWN_COLD.head_floats
    worst = 0.0
    for fitted, known in [(terms["kernels"][k], t) for k, t in KNOWN_KERNELS.items()] + [
        (terms["other"][op], t) for op, t in KNOWN_OTHER.items()
    ]:
        for field in dataclasses.fields(emulator.Terms):
            field = field.name
            got, want = getattr(fitted, field), getattr(known, field)
            assert got >= 0
            worst = max(worst, abs(got - want) / want if want else abs(got))
    for field in ("per_tap", "per_head_float", "per_float"):
        worst = max(worst, abs(getattr(terms["cold"], field) / getattr(KNOWN_COLD, field) - 1))
    print(f"largest term error, exact timings: {worst:.2g}")
    assert worst < 1e-6

    noisy = [dict(r, us=r["us"] * (1 + 0.01 * rng.standard_normal())) for r in _synthetic_rows(rng)]
    terms = profile.fit_terms(noisy)
    slopes = [(terms["kernels"][k].per_mac, t.per_mac) for k, t in KNOWN_KERNELS.items()]
    slopes += [(terms["other"][op].per_window, t.per_window) for op, t in KNOWN_OTHER.items() if t.per_window]
    worst = max(abs(got - want) / want for got, want in slopes)
    print(f"largest MAC / window slope error, 1% noise: {worst:.2g}")
    assert worst < 0.1


def test_fit_call_us_recovers_a_fixed_cost_and_the_timers() -> None:
    """Release totals made of the layer predictions, minus 0.02 us of timers per node, plus 1.5 us per
    inference: both come back, and `fit_device_terms` takes the timers out of every base."""
    dev = profile.device_of(
        {
            "conv": emulator.Linear(1e-4, 0.2),
            "dense": emulator.Linear(2e-4, 0.1),
            "kernels": {"conv_spatial": KNOWN_KERNELS["conv_spatial"]},
            "other": {"*": emulator.Terms(per_float=1e-3, base=0.03)},
        }
    )
    conv = Layer("c", "Conv", "conv", 0, 50_000, ic=2, oc=2, k=(3, 3), fi=(8, 8), fo=(8, 8), out_floats=128)
    relu = Layer("r", "Relu", "other", 0, 0, out_floats=128)
    # the kernel's terms; 50,000 MACs on an 8x8 map: 781 weights (the inner loops' starts)
    assert np.isclose(dev.layer_us(conv), 8e-5 * 50_000 + 5e-4 * 128 + 0.01 * 2 + 1e-3 * 781 + 0.1)
    dense = Layer("d", "Gemm", "dense", 0, 500, ic=50, oc=10)
    bn = Layer("b", "BatchNormalization", "other", 0, 0, out_floats=98, out_planes=2)  # two 7x7 planes
    sizes = [
        (emulator.out_channels(x), emulator.in_features(x), emulator.weights(x), emulator.unaligned_floats(x))
        for x in (conv, dense, bn)
    ]
    assert sizes == [(2, 128, 781, 0), (0, 50, 0, 0), (2, 0, 0, 98)]  # the conv reads 2 planes of 8x8
    cpms = []
    for n, m in ((1, 2), (3, 1), (10, 30), (2, 9)):
        total = n * dev.layer_us(conv) + m * dev.layer_us(relu) - 0.02 * (n + m) + 1.5
        cpms.append(([conv] * n + [relu] * m, total))
    call, timer = profile.fit_call_us(dev, cpms)
    print(f"call {call:.6g} us (1.5), timer {timer:.6g} us/node (0.02)")
    assert np.isclose(call, 1.5, rtol=1e-6) and np.isclose(timer, 0.02, rtol=1e-6)
    assert profile.fit_call_us(dev, [([conv], 0.5 * dev.layer_us(conv))])[0] == 0.0  # never negative

    rows = _synthetic_rows(np.random.default_rng(2))
    fitted = profile.fit_device_terms(rows, [])
    assert fitted["call_us"] == 0.0 and fitted["timer_us"] == 0.0
    cut = profile.without_timer(fitted, 0.03)
    assert np.isclose(cut["kernels"]["conv_spatial"].base, fitted["kernels"]["conv_spatial"].base - 0.03)
    assert cut["other"]["Add"].base == 0.0  # 0.02 - 0.03: never below zero


def test_profile_round_trips_through_load_device(tmp_path: Path) -> None:
    terms = {
        "conv": emulator.Linear(1e-4, 0.2),
        "dense": emulator.Linear(2e-4, 0.1),
        "other": {"Relu": emulator.Terms(per_float=1e-3, base=0.05), "*": emulator.Terms(per_float=2e-3)},
        "kernels": {"conv_strided": KNOWN_KERNELS["conv_strided"]},
        "call_us": 0.7,
    }
    raw = profile.profile_json(terms, emulator.Linear(0.02, 45.0), name="test-host", source="test")
    path = tmp_path / "host.json"
    path.write_text(json.dumps(raw))
    dev = emulator.load_device(path)
    assert (dev.name, dev.conv, dev.dense, dev.switch) == ("test-host", terms["conv"], terms["dense"], raw_switch(raw))
    relu = Layer("r", "Relu", "other", 0, 0, out_floats=1000)
    pool = Layer("p", "MaxPool", "other", 0, 0, out_floats=1000)
    assert np.isclose(dev.layer_us(relu), 1.05) and np.isclose(dev.layer_us(pool), 2.0)
    # the paper's board has no other_us: other layers stay out, as in the paper
    assert emulator.load_device("rpi3b-optee").layer_us(relu) == 0.0
    # predict() counts the timed other layers too, and the fixed cost per inference once
    assert np.isclose(emulator.predict(dev, [relu, pool], [])["compute_us"], 3.05 + 0.7)
    assert dict(dev.kernels) == terms["kernels"] and dev.call_us == 0.7


def raw_switch(raw: dict) -> emulator.Linear:
    return emulator.Linear(raw["context_switch_us"]["per_kb"], raw["context_switch_us"]["base"])


def test_the_paper_profile_predicts_as_before() -> None:
    """The bundled rpi3b-optee profile has none of the measured terms: a strided, a grouped and a 1x1
    conv are Eq. 4 x 1.6, a dense Eq. 5, LRN and pooling 0, and no fixed cost per inference."""
    dev = emulator.load_device("rpi3b-optee")
    assert dev.kernels == () and dev.other == () and dev.call_us == 0.0
    convs = [
        Layer("s", "Conv", "conv", 0, 28_224, ic=2, oc=2, k=(3, 3), fi=(56, 56), fo=(28, 28), strides=(2, 2)),
        Layer("g", "Conv", "conv", 0, 4_608, ic=2, oc=2, k=(3, 3), fi=(16, 16), fo=(16, 16), groups=2),
        Layer("p", "Conv", "conv", 0, 1_024, ic=2, oc=2, k=(1, 1), fi=(16, 16), fo=(16, 16)),
    ]
    for x in convs:
        assert dev.layer_us(x) == (0.03938 * x.workload + 504.3) * 1.6
    dense = Layer("d", "Gemm", "dense", 0, 500, ic=50, oc=10)
    lrn = Layer("l", "LRN", "other", 0, 0, out_floats=1352, window=5)
    assert dev.layer_us(dense) == 0.02666 * 500 + 465.6 and dev.layer_us(lrn) == 0.0
    pred = emulator.predict(dev, [*convs, dense, lrn], [4096])
    assert pred["compute_us"] == sum(dev.layer_us(x) for x in (*convs, dense))
    assert [x["name"] for x in pred["layers"]] == ["s", "g", "p", "d"]


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("kernels_us", {"winograd": {"per_mac": 1, "per_out_float": 0, "base": 0}}, "kernels_us.winograd"),
        ("kernels_us", {"dense": {"per_mac": -1, "per_out_float": 0, "base": 0}}, "kernels_us.dense.per_mac"),
        ("kernels_us", {"conv_strided": {"per_mac": 1e-4, "base": 0}}, "kernels_us.conv_strided.per_out_float"),
        ("kernels_us", {"dense": {"per_mac": 1, "per_out_float": 0, "base": 0, "per_row": 1}}, "per_row"),
        ("kernels_us", [1, 2], "kernels_us"),
        ("kernels_us", {"dense": {"per_mac": 1, "per_out_float": 0, "base": 0, "per_in_float": None}}, "per_in_float"),
        ("other_us", {"LRN": {"per_float": 1, "base": 0, "per_window_float": "x"}}, "other_us.LRN.per_window_float"),
        ("call_us", {"base": -2}, "call_us.base"),
        ("call_us", 3, "call_us"),
    ],
)
def test_malformed_profile_is_a_one_line_error(tmp_path: Path, field: str, value: object, expected: str) -> None:
    raw = json.loads((emulator.DEVICES_DIR / "rpi3b-optee.json").read_text())
    raw[field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    res = CliRunner().invoke(main, ["partition", str(EXAMPLE_MODELS / "lenet5.onnx"), "--device", str(path)])
    print(res.output)
    assert res.exit_code == 2
    line = res.output.strip()
    assert "\n" not in line and str(path) in line and expected in line


def test_profile_rejects_malformed_other_us(tmp_path: Path) -> None:
    raw = json.loads((emulator.DEVICES_DIR / "rpi3b-optee.json").read_text())
    raw["other_us"] = {"Relu": {"per_float": -1, "base": 0}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    try:
        emulator.load_device(path)
    except emulator.MirrorcError as e:
        assert "other_us.Relu.per_float" in str(e)
    else:
        raise AssertionError("a negative per_float was accepted")


def test_profiling_lowering_is_the_release_c_plus_timers() -> None:
    mirrornet, _ = build_mirrornet(EXAMPLE_MODELS / "vgg7.onnx", channels=2)
    _, secure = split(mirrornet)
    release, profiled = lower(secure, "vgg7"), lower(secure, "vgg7", profile=True)
    steps = len(plan_secure(secure).body)
    src = profiled.files["model/mirrorc_model.c"]
    assert re.findall(r"mirrorc_profile_end\((\d+)\);", src) == [str(i) for i in range(steps)]
    assert src.count("mirrorc_profile_begin();") == steps
    hooks = f"#define MIRRORC_PROFILE_STEPS {steps}\n{PROFILE_HOOKS}"
    stripped = "\n".join(line for line in src.replace(hooks, "").splitlines() if "mirrorc_profile_" not in line)
    assert stripped == release.files["model/mirrorc_model.c"].rstrip("\n")
    assert {k: v for k, v in profiled.files.items() if k != "model/mirrorc_model.c"} == {
        k: v for k, v in release.files.items() if k != "model/mirrorc_model.c"
    }
    assert "mirrorc_profile" not in "".join(release.files.values())
    assert len(profile.step_layers(secure)) == steps


def test_cold_timing_times_every_node_and_refuses_an_impossible_eviction() -> None:
    """Timed cold (other data touched before every inference, as a device's normal world does): every
    conv and dense node has a time, the release C too, and the label is the model's; an eviction
    buffer that cannot be allocated is a one-line error, not a crash or a silent warm run."""
    mirrornet, _ = build_mirrornet(EXAMPLE_MODELS / "lenet5.onnx", channels=2)
    _, secure = split(mirrornet)
    rows = profile.measure_steps(secure, "lenet5", iters=3, repeats=1, evict_bytes=1 << 20)
    assert len(rows) == len(profile.step_layers(secure))
    assert all(r["us"] > 0 for r in rows if r["kind"] != "other")
    lowered = lower(secure, "lenet5")
    taps, logits = profile._random_inputs(lowered)
    warm = cbuild.time_lowered(lowered, taps, logits, iters=2, repeats=1, cflags=profile.TA_HOST_CFLAGS)
    cold = cbuild.time_lowered(
        lowered, taps, logits, iters=2, repeats=1, cflags=profile.TA_HOST_CFLAGS, evict_bytes=1 << 20
    )
    assert cold[0] > 0 and cold[1] == warm[1]
    with pytest.raises(emulator.MirrorcError, match="cannot allocate"):
        profile.measure_steps(secure, "lenet5", iters=1, repeats=1, evict_bytes=1 << 60)
    with pytest.raises(MemoryError, match="cannot allocate"):
        cbuild.time_lowered(lowered, taps, logits, iters=1, repeats=1, evict_bytes=1 << 60)


def test_profile_command_on_the_simulator(tmp_path: Path) -> None:
    """A tiny sweep end to end: timed nodes, simulator transfers, a profile the report can use."""
    out = tmp_path / "host.json"
    runner = CliRunner()
    res = runner.invoke(main, ["profile", "--tee", "sim", "--models", "lenet5", "-C", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    raw = json.loads(out.read_text())
    dev = emulator.load_device(out)
    print(res.output)
    # a world switch costs something; whether the fit puts it in the base or the per-KB slope depends on
    # this machine's noise (a loaded host once gave base 0), so only the sum is asserted
    assert dev.conv.slope > 0 and min(dev.switch.slope, dev.switch.base) >= 0 < dev.switch.slope + dev.switch.base
    assert len(raw["samples"]["transfer_bytes_us"]) == 4 and raw["samples"]["nodes"]
    assert all(row["us"] > 0 for row in raw["samples"]["nodes"] if row["kind"] != "other")
    assert "inferences cold, 64 MB touched before each" in raw["description"]
    rep = runner.invoke(main, ["partition", str(EXAMPLE_MODELS / "lenet5.onnx"), "--device", str(out), "--json"])
    assert rep.exit_code == 0, rep.output
    report = json.loads(rep.output)
    assert report["device"]["name"] == raw["name"] and report["latency_us"]["compute"] > 0
    bad = runner.invoke(main, ["profile", "--tee", "board"])
    assert bad.exit_code == 2 and "Invalid value for '--tee'" in bad.output


def _symbols(executable: Path) -> set[str]:
    out = subprocess.run(["nm", "--defined-only", str(executable)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def test_the_calibration_ta_times_every_node_and_a_release_ta_has_no_timer(tmp_path: Path) -> None:
    """`profile --tee optee`'s build: the TA's own timers (TEE_GetSystemTime in mirrorc_profile_ta.c)
    report every scheduled node through the simulator; a release build of the same mirrornet has no
    timer in its C or its binary and refuses the profile command."""
    mirrornet, _ = build_mirrornet(EXAMPLE_MODELS / "lenet5.onnx", channels=1)
    rows, build_dir, uuid = profile.measure_steps_in_ta(mirrornet, tmp_path / "profiling", budget_ms=300)
    _, secure = split(mirrornet)
    assert [r["name"] for r in rows] == [x.name for x in profile.step_layers(secure)]
    runs = rows[0]["runs"]
    print(f"\n{runs} runs:", [(r["op_type"], r["ticks"], round(r["us"], 3)) for r in rows])
    assert all(r["runs"] == runs and r["us"] == 1000 * r["ticks"] / runs for r in rows)
    assert sum(r["ticks"] for r in rows) > 0  # the run is >= 50 ms of nodes back to back
    sub_mk = (build_dir / "ta" / "sub.mk").read_text()
    assert "cflags-y += -DMIRRORC_TA_PROFILE" in sub_mk and "srcs-y += mirrorc_profile_ta.c" in sub_mk

    release = tmp_path / "release"
    plan = build_secure(mirrornet, release)
    assert plan["uuid"] != uuid  # the calibration TA never answers for the release one
    sources = {p.relative_to(release / "ta").as_posix(): p.read_text() for p in (release / "ta").rglob("*.[ch]")}
    assert not (release / "ta" / "mirrorc_profile_ta.c").exists() and "MIRRORC_TA_PROFILE" not in "".join(
        (release / "ta" / d / "sub.mk").read_text() for d in (".", "model", "kernels")
    )
    assert not any("mirrorc_profile" in text for rel, text in sources.items() if rel.startswith(("model/", "kernels/")))
    timers = {"mirrorc_ta_profile", "mirrorc_profile_begin", "mirrorc_profile_end", "TEE_GetSystemTime"}
    assert timers - {"TEE_GetSystemTime"} <= _symbols(ta.simulator(build_dir))
    assert not (timers - {"TEE_GetSystemTime"}) & _symbols(ta.simulator(release))
    with teec.Context.simulator(release) as ctx, ctx.open_session(plan["uuid"]) as session:
        with pytest.raises(teec.TeecError, match="NOT_SUPPORTED"):
            profile.ta_profile_run(session, plan["single"]["bytes"] // 4, len(rows), 10)
    with teec.Context.simulator(build_dir) as ctx, ctx.open_session(uuid) as session:
        floats = plan["single"]["bytes"] // 4
        for bad in ((floats, len(rows), 0), (floats + 1, len(rows), 10), (floats, len(rows) + 1, 10)):
            with pytest.raises(teec.TeecError, match="BAD_PARAMETERS"):
                profile.ta_profile_run(session, *bad)


def test_profile_optee_fits_the_ta_timers(tmp_path: Path) -> None:
    fitted = profile.calibrate("optee", models=["lenet5"], channels=[1, 2], ta_budget_ms=300)
    out = tmp_path / "ta.json"
    out.write_text(json.dumps(fitted))
    dev = emulator.load_device(out)
    nodes = fitted["samples"]["nodes"]
    print(fitted["conv2d_us"]["source"], dev.conv, dev.dense, dev.switch)
    assert fitted["name"] == "optee-host" and all("ticks" in n for n in nodes)
    # a world switch costs something; whether the fit puts it in the base or the per-KB slope depends on
    # this machine's noise (a loaded host once gave base 0), so only the sum is asserted
    assert dev.conv.slope > 0 and min(dev.switch.slope, dev.switch.base) >= 0 < dev.switch.slope + dev.switch.base


def test_profile_cli_default_models_are_the_default_sweep() -> None:
    """`mirrorc profile --models`'s default (a literal, so the CLI starts without numpy) is DEFAULT_MODELS."""
    option = next(p for p in main.commands["profile"].params if p.name == "models")
    assert option.default.split(",") == list(profile.DEFAULT_MODELS)


@pytest.mark.parametrize(
    ("lead", "kernel", "side"),
    [
        ("", "conv_pointwise", 24),
        ("spatial3", "conv_spatial3", 24),
        ("valid5", "conv_spatial5", 20),
        ("strided", "conv_strided", 12),
        ("grouped", "conv_grouped", 24),
    ],
)
def test_a_sweep_lead_is_the_cpms_first_node(tmp_path: Path, lead: str, kernel: str, side: int) -> None:
    """A sweep model's lead conv is its CPM's first node (reads the tap, writes fresh arena lines), run by
    the named kernel at the map size it makes (LeNet-5's 5x5 unpadded: 24 to 20)."""
    from mirrorc.profile_sweep import sweep_model

    path = tmp_path / "lead.onnx"
    onnx.save(sweep_model(24, 10, "conv", lead), path)
    mirrornet, _ = build_mirrornet(path, channels=2)
    first = profile.step_layers(split(mirrornet)[1])[0]
    print(lead or "(none)", first.notation, emulator.kernel_of(first), first.tap_in_floats, first.first_touch_floats)
    assert emulator.kernel_of(first) == kernel and first.notation.endswith(f", {side}]")
    assert first.tap_in_floats == 2 * 24 * 24 and first.first_touch_floats >= 2 * side * side


def _gap_mirrornet(tmp_path: Path, channels: int) -> onnx.ModelProto:
    """The mirrornet of a small sweep model with SqueezeNet's head (1x1 conv, ReLU, GlobalAveragePool)."""
    from mirrorc.profile_sweep import sweep_model

    path = tmp_path / "gap.onnx"
    onnx.save(sweep_model(24, 10, "gap"), path)
    return build_mirrornet(path, channels=channels)[0]


def _kernel_device(
    kernels: dict[str, emulator.Terms], other: dict[str, emulator.Terms], cold: emulator.ColdReads | None = None
) -> emulator.Device:
    """A fitted profile's Device with only these kernel and op terms (no Eq. 4 / 5 lines)."""
    flat = emulator.Linear(0, 0)
    terms = {"conv": flat, "dense": flat, "kernels": kernels, "other": other, "cold": cold or emulator.ColdReads()}
    return profile.device_of(terms)


def test_a_fused_gap_head_is_its_own_kernel(tmp_path: Path) -> None:
    """A sweep model with SqueezeNet's head: the C runs ReLU and GlobalAveragePool inside the 1x1 conv,
    so the scheduled steps hold one conv_gap and no pool; the emulator predicts it with conv_gap's
    terms, and with conv_pointwise's when a profile has none."""
    steps = profile.step_layers(split(_gap_mirrornet(tmp_path, 1))[1])
    kernels = [emulator.kernel_of(x) or x.op_type for x in steps]
    print(kernels)
    assert kernels.count("conv_gap") == 1 and "GlobalAveragePool" not in kernels
    head = steps[kernels.index("conv_gap")]
    assert head.oc == 10 and head.k == (1, 1)
    pointwise = emulator.Terms(per_mac=1e-4, base=0.5)
    only_pointwise = _kernel_device({"conv_pointwise": pointwise}, {})
    assert np.isclose(only_pointwise.layer_us(head), 1e-4 * head.macs + 0.5)
    both = _kernel_device({"conv_pointwise": pointwise, "conv_gap": emulator.Terms(per_mac=3e-4, base=0.1)}, {})
    assert np.isclose(both.layer_us(head), 3e-4 * head.macs + 0.1)


def test_the_report_prices_the_steps_the_c_runs(tmp_path: Path) -> None:
    """`partition --report` on a fitted profile predicts the compute the emulator predicts over the C's
    scheduled steps (`step_layers`): a conv's fused ReLU / GlobalAveragePool are not priced again,
    SqueezeNet's kind of head is priced as conv_gap, and both see each node's context alike: the floats
    it reads cold (the Adds of taps, the final Add of the backbone logits, weights), whether it is the
    first of its kernel and the arena lines it writes first."""
    from mirrorc.plan.report import build_report

    mirrornet = _gap_mirrornet(tmp_path, 2)
    device = _kernel_device(
        {"conv_pointwise": emulator.Terms(per_mac=1e-4, base=0.5), "conv_gap": emulator.Terms(base=7.0)},
        {"*": emulator.Terms(per_float=1e-3, per_first=0.5, per_first_touch=1e-3, base=0.25)},
        KNOWN_COLD,
    )
    steps = profile.step_layers(split(mirrornet)[1])
    secure = split(mirrornet)[1]
    sent = sum(int(np.prod([d.dim_value for d in i.type.tensor_type.shape.dim])) for i in secure.graph.input)
    assert sum(x.tap_in_floats for x in steps) == sent  # every tap and the logits, cold where first read
    want = sum(device.layer_us(x) for x in steps) + device.call_us
    got = build_report(mirrornet, device)["latency_us"]["compute"]
    print(f"report {got:.3f} us, steps {want:.3f} us")
    assert np.isclose(got, want)
    # the terms of the context a node runs in count, and alike in both
    assert all(
        sum(f(x) for x in steps) > 0
        for f in (device.cold.us, lambda x: x.first_of_kind, lambda x: x.first_touch_floats)
    )
