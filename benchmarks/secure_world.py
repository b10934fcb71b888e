"""The secure world measured, at batch 1 and single-threaded, in one run per model:

1. the generated C secure graph (a C loop over mirrorc_reset/run_tap/run_final, built like the
   simulator's TA: -O3 for this CPU) vs onnxruntime running the same secure graph (session.run per image);
2. end-to-end protected inference (onnxruntime normal.onnx + the TA in the simulator process, stream
   and single modes) vs the original model in onnxruntime, and the labels' agreement with
   mirrornet.onnx on every image;
3. TA memory: the memory plan, and the aarch64 sections of the TA when the cross compiler exists.

    python benchmarks/secure_world.py [--models lenet5,vgg7] [--images 1000] [--rounds 10] [--per-round 200]
                                      [--calls 3000]

Models are examples/models/*.onnx with random weights (the timings do not depend on training). The
labels are checked on all `--images`. Time figures are wall time. Part 1 compares the fastest of
`--rounds` rounds (each a mean over `--per-round` images). Part 2 times every call: `--calls` per
variant and mode, the variants taking turns image by image, and prints the median (a call when the
host leaves it alone) and the mean (which carries the host's stalls: this VM loses its vCPUs for
milliseconds now and then, and a protected inference needs two of them at once). Run it on an idle
machine: the simulator polls its mailbox while it waits (docs/ARCHITECTURE.md; here for up to 1 s),
so it needs a core of its own, as the secure world has the core on a board, and its CPU time is not
a cost."""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import write_results  # noqa: E402

from mirrorc.backend import cbuild, ta  # noqa: E402
from mirrorc.backend.secure_build import write_build  # noqa: E402
from mirrorc.pipeline import build_mirrornet  # noqa: E402
from mirrorc.tee import teec  # noqa: E402
from mirrorc.tee.runtime import MODES, ProtectedModel  # noqa: E402
from passes import contract  # noqa: E402
from passes.split import split  # noqa: E402

INPUT_SHAPES = {"lenet5": (1, 28, 28), "vgg7": (3, 32, 32)}
PAPER = {"lenet5": 32.93, "vgg7": 0.99}  # Table IV overhead (%), Raspberry Pi 3B + OP-TEE
TARGET = {"lenet5": 5.0, "vgg7": 1.0}
EMPTY_COMMAND = 0x7FFF  # no command of the TA: refused at once, after a full crossing both ways

HARNESS = r"""
/* Times the generated model alone: per image reset, every tap, final. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "mirrorc_model.h"

static const unsigned tap_floats[MIRRORC_NUM_TAPS] = MIRRORC_TAP_FLOATS;

static int32_t infer(mirrorc_state_t *s, const float *img)
{
    mirrorc_reset(s);
    for (unsigned k = 0; k < MIRRORC_NUM_TAPS; k++) {
        mirrorc_run_tap(s, k, img);
        img += tap_floats[k];
    }
    return mirrorc_run_final(s, img);
}

int main(int argc, char **argv)
{
    long iters = atol(argv[3]), m = atol(argv[2]);
    float *data = malloc(sizeof(float) * MIRRORC_SINGLE_FLOATS * m);
    FILE *f = fopen(argv[1], "rb");
    static mirrorc_state_t s;
    struct timespec t0, t1, c0, c1;
    volatile int32_t sink = 0;
    if (!f || fread(data, sizeof(float) * MIRRORC_SINGLE_FLOATS, m, f) != (size_t)m) return 1;
    for (long i = 0; i < m; i++) printf("%d ", (int)infer(&s, data + i * MIRRORC_SINGLE_FLOATS));
    printf("\n");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (long i = 0; i < iters; i++) sink += infer(&s, data + (i % m) * MIRRORC_SINGLE_FLOATS);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.1f %.1f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / iters,
           ((c1.tv_sec - c0.tv_sec) * 1e9 + (c1.tv_nsec - c0.tv_nsec)) / iters);
    return 0;
}
"""


def session(path_or_model, disabled_optimizers: list[str] | None = None) -> ort.InferenceSession:
    """A single-threaded CPU session (onnxruntime graph optimizers in `disabled_optimizers` off)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    kwargs = {"disabled_optimizers": disabled_optimizers} if disabled_optimizers else {}
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"], **kwargs)


def per_image(fn, n: int) -> float:
    """Wall seconds per call of fn(i), i < n."""
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n


def bench_model(name: str, images: int, rounds: int, per_round: int, calls: int, channels: int, work: Path) -> dict:
    build = work / name
    build.mkdir()
    mirrornet, _ = build_mirrornet(ROOT / "examples" / "models" / f"{name}.onnx", channels=channels)
    fields = write_build(mirrornet, build, f"{name}.onnx")
    x = np.random.default_rng(0).normal(size=(images, *INPUT_SHAPES[name])).astype(np.float32)

    # agreement with the golden reference, every image, both modes
    ref = session(str(build / "mirrornet.onnx"))
    want = ref.run([contract.LABEL], {ref.get_inputs()[0].name: x})[0]
    agree = {}
    for m in MODES:
        with ProtectedModel(build, tee="sim", mode=m, threads=1) as pm:
            agree[m] = float((pm.predict(x) == want).mean())
            outputs = pm.backbone_outputs(x)  # taps..., logits

    # 1. secure graph: generated C vs onnxruntime
    secure = split(mirrornet)[1]
    sec = session(secure)
    names = [t["selected"] for t in fields["taps"]] + [contract.BACKBONE_LOGITS]
    feeds = [{n: o[i : i + 1] for n, o in zip(names, outputs)} for i in range(images)]
    ort_labels = np.array([sec.run([contract.LABEL], f)[0][0] for f in feeds])
    packed = np.concatenate([o.reshape(images, -1) for o in outputs], axis=1).astype(np.float32)
    packed.tofile(work / f"{name}.f32")
    ta_dir = build / "ta"
    (work / "harness.c").write_text(HARNESS)
    model_srcs = sorted((ta_dir / "model").glob("*.c")) + sorted((ta_dir / "kernels").glob("*.c"))
    exe = cbuild.build(
        [work / "harness.c", *model_srcs],
        kind="exe",
        name=f"bench_{name}",
        include_dirs=[ta_dir / "model", ta_dir / "kernels"],
        cflags=ta.sim_cflags(),
        out_dir=work,
    )
    iters = max(images, 20000 if name == "lenet5" else 2000)
    c_times = []
    for _ in range(rounds):
        out = subprocess.run(
            [exe, work / f"{name}.f32", str(images), str(iters)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        c_times.append(tuple(float(v) * 1e-9 for v in out[1].split()))
    c_labels = np.array([int(v) for v in out[0].split()])
    sec_times = [per_image(lambda i: sec.run([contract.LABEL], feeds[i]), per_round) for _ in range(rounds)]

    # 2. end to end: per mode, one simulator alive (it polls a core while it waits), the variants
    # taking turns image by image
    orig = session(str(ROOT / "examples" / "models" / f"{name}.onnx"))
    oname = orig.get_inputs()[0].name
    batches = [x[i : i + 1] for i in range(images)]
    # the original with the same batch-1 I/O binding the protected runtime uses (a fair baseline)
    one, logits = np.zeros_like(batches[0]), np.zeros((1, fields["logits"]["shape"][0]), np.float32)
    io = orig.io_binding()
    io.bind_input(oname, "cpu", 0, np.float32, list(one.shape), one.ctypes.data)
    io.bind_output(orig.get_outputs()[0].name, "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)

    def original_bound(i):
        one[...] = batches[i]
        orig.run_with_iobinding(io)

    times = {}
    for m in MODES:
        with ProtectedModel(build, tee="sim", mode=m, threads=1) as pm:
            refused = teec.Operation()
            variants = {
                "original": original_bound,
                "original run()": lambda i: orig.run(None, {oname: batches[i]}),
                # what the protected runtime runs in onnxruntime, without the TA
                "normal.onnx": lambda i: pm.backbone_one(batches[i]),
                # one world crossing with no work: a command id the TA refuses
                "empty call": lambda i, refused=refused: pm.session.try_invoke(EMPTY_COMMAND, refused),
                "protected": lambda i: pm.predict(batches[i]),
            }
            times[m] = interleaved(variants, images, calls)
            if m == "single":
                cold = cold_path(pm, refused, batches, min(calls, 1000))
    return {
        "name": name,
        "agree": agree,
        "c_vs_ort_labels": float((c_labels == ort_labels).mean()),
        "c": best(c_times),
        "ort_secure": min(sec_times),
        "times": times,
        "cold": cold,
        "memory": memory_of(fields, ta_dir, work, name),
        "taps": len(fields["taps"]),
        "single_bytes": fields["single"]["bytes"],
    }


def cold_path(pm: ProtectedModel, refused, batches: list, calls: int) -> dict[str, tuple[float, float]]:
    """Median wall seconds of small normal-world steps, back to back and right after a backbone
    run: how much of a call after the backbone is the normal world's own cold caches."""
    getpid = ctypes.CDLL(None).getpid
    steps = {
        "perf_counter": lambda: None,
        "ctypes call (getpid)": getpid,
        "empty call": lambda: pm.session.try_invoke(EMPTY_COMMAND, refused),
    }
    clock, out = time.perf_counter, {}
    for name, step in steps.items():
        warm, cold = np.empty(calls), np.empty(calls)
        for c in range(calls):
            t = clock()
            step()
            warm[c] = clock() - t
            pm.backbone_one(batches[c % len(batches)])
            t = clock()
            step()
            cold[c] = clock() - t
        out[name] = (float(np.median(warm)), float(np.median(cold)))
    return out


def interleaved(variants: dict, images: int, calls: int) -> dict[str, np.ndarray]:
    """Wall seconds of `calls` calls of each variant, cycling through the images; the variants take
    turns on each image (in a rotating order), so drift and the host's stalls fall on all alike."""
    names = list(variants)
    out = {k: np.empty(calls) for k in names}
    clock = time.perf_counter
    for c in range(calls):
        i = c % images
        for j in range(len(names)):
            k = names[(c + j) % len(names)]
            t = clock()
            variants[k](i)
            out[k][c] = clock() - t
    return out


def memory_of(fields: dict, ta_dir: Path, work: Path, name: str) -> dict:
    """The TA's memory plan, and its aarch64 sections when the cross compiler exists."""
    memory = dict(fields["memory"])
    if shutil.which("aarch64-linux-gnu-gcc"):
        sys.path.insert(0, str(ROOT / "tests"))
        from test_ta_cross import cross_compile

        objs = work / f"{name}_obj"
        objs.mkdir()
        memory["aarch64"] = cross_compile(ta_dir, objs)
    return memory


def best(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """Fastest wall time and smallest CPU time over the rounds."""
    return min(w for w, _ in samples), min(c for _, c in samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lenet5,vgg7")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=200, help="images timed per round (C and secure graph)")
    ap.add_argument("--calls", type=int, default=3000, help="end to end: timed calls of each variant per mode")
    ap.add_argument("--channels", type=int, default=2)
    args = ap.parse_args()
    # The variants take turns, so the simulator waits several backbones between two calls; it polls
    # all along, as a secure world that starts on the calling core never has to be woken (a futex
    # wake of an idle vCPU costs this VM 50-500 us, which a board does not pay).
    os.environ.setdefault("MIRRORC_SIM_SPIN_US", "1000000")
    results = []
    with tempfile.TemporaryDirectory(prefix="mirrorc-bench-") as tmp:
        for name in args.models.split(","):
            results.append(
                bench_model(
                    name,
                    args.images,
                    args.rounds,
                    min(args.per_round, args.images),
                    args.calls,
                    args.channels,
                    Path(tmp),
                )
            )

    print(
        f"\nSecure world, batch 1, 1 thread, C = {args.channels}, {args.images} random images (labels), "
        f"best of {args.rounds} rounds of {min(args.per_round, args.images)}; wall times in us"
    )
    print("\n1. CPM secure graph: generated C vs onnxruntime running the same graph (session.run)")
    print(f"{'model':8} {'C':>16} {'onnxruntime':>16} {'C speed-up':>16} {'labels C==ORT':>14}")
    for r in results:
        (cw, _), ow = r["c"], r["ort_secure"]
        print(f"{r['name']:8} {cw * 1e6:16.1f} {ow * 1e6:16.1f} {ow / cw:15.1f}x {100 * r['c_vs_ort_labels']:13.1f}%")
    print(
        "\n2. End to end per image, wall time in us; each mode its own run with one simulator, the variants "
        "taking turns image by image; p50 = median call, mean = what a stream of images costs (with the host's "
        "stalls). Overhead vs the original model in onnxruntime with the same batch-1 I/O binding (run() without "
        "it beside). Where it goes: taps = normal.onnx - original (onnxruntime handing out the tapped channels); "
        "TA = protected - normal.onnx (the calls and the CPM); empty call = one command the TA refuses at once, "
        "right after another variant ran (the crossing alone, from a cold normal-world core)"
    )
    print(
        f"{'model':8} {'mode':6} {'stat':4} {'original':>9} {'orig run()':>10} {'normal.onnx':>11} {'empty call':>10} "
        f"{'protected':>10} {'overhead':>8} {'taps':>6} {'TA':>6} {'target':>6} {'paper':>6} {'agree':>6}"
    )
    for r in results:
        for m in MODES:
            for stat, fn in (("p50", np.median), ("mean", np.mean)):
                v = {k: float(fn(x)) for k, x in r["times"][m].items()}
                o = v["original"]
                pct = (v["protected"] / o - 1, (v["normal.onnx"] - o) / o, (v["protected"] - v["normal.onnx"]) / o)
                cells = " ".join(
                    f"{v[k] * 1e6:{w}.1f}"
                    for k, w in (
                        ("original", 9),
                        ("original run()", 10),
                        ("normal.onnx", 11),
                        ("empty call", 10),
                        ("protected", 10),
                    )
                )
                print(
                    f"{r['name']:8} {m:6} {stat:4} {cells} {100 * pct[0]:7.1f}% {100 * pct[1]:5.1f}% "
                    f"{100 * pct[2]:5.1f}% {TARGET[r['name']]:5.1f}% {PAPER[r['name']]:5.2f}% "
                    f"{100 * r['agree'][m]:5.1f}%"
                )
    print(
        "\n   The normal world's cold path: median wall us of a step right after the previous one (warm) and "
        "right after a normal.onnx run (after backbone)"
    )
    print(f"{'model':8} " + " ".join(f"{k + ', warm':>28} {'after backbone':>15}" for k in results[0]["cold"]))
    for r in results:
        print(f"{r['name']:8} " + " ".join(f"{w * 1e6:28.1f} {c * 1e6:15.1f}" for w, c in r["cold"].values()))
    print("\n3. TA memory (bytes)")
    print(
        f"{'model':8} {'weights':>8} {'arena':>7} {'state':>6} {'stack':>6} {'TA_STACK':>8} {'TA_DATA':>8} "
        f"{'total':>7}  aarch64 sections"
    )
    for r in results:
        m = r["memory"]
        secs = " ".join(f"{k}={v}" for k, v in sorted(m.get("aarch64", {}).items())) or "(no cross compiler)"
        print(
            f"{r['name']:8} {m['weights']:8} {m['arena']:7} {m['state']:6} {m['stack']:6} {m['ta_stack_size']:8} "
            f"{m['ta_data_size']:8} {m['total']:7}  {secs}"
        )
    write_results(
        "secure_world",
        "the secure world at batch 1: 1. the CPM in C vs onnxruntime (us), 2. end to end "
        "per image (wall us, p50 and mean per variant and mode), the cold path, 3. TA memory (bytes)",
        {
            "setup": {"images": args.images, "rounds": args.rounds, "calls": args.calls, "channels": args.channels},
            "rows": [_result_row(r) for r in results],
        },
    )


def _result_row(r: dict) -> dict:
    """One model's figures as results/secure_world.json holds them (summaries, not every call)."""
    (c_wall, c_cpu), ort_wall = r["c"], r["ort_secure"]
    return {
        "model": r["name"],
        "cpm_c_us": c_wall * 1e6,
        "cpm_c_cpu_us": c_cpu * 1e6,
        "cpm_onnxruntime_us": ort_wall * 1e6,
        "c_vs_onnxruntime_labels": r["c_vs_ort_labels"],
        "end_to_end_us": {
            m: {
                k: {"p50": float(np.median(x)) * 1e6, "mean": float(np.mean(x)) * 1e6} for k, x in r["times"][m].items()
            }
            for m in MODES
        },
        "agree": {m: float(r["agree"][m]) for m in MODES},
        "cold_path_us": {k: {"warm": w * 1e6, "after_backbone": c * 1e6} for k, (w, c) in r["cold"].items()},
        "target_overhead_pct": TARGET[r["name"]],
        "paper_overhead_pct": PAPER[r["name"]],
        "memory": r["memory"],
    }


if __name__ == "__main__":
    main()
