"""The generated CPM C at the TA dev kit's flags and at candidate sub.mk additions, against -O3 for
this CPU and onnxruntime on the same secure graph, single-threaded, in one run.

    python benchmarks/ta_flags.py [--models lenet5,vgg7,resnet50,...] [--rounds 5] [--channels 2]

OP-TEE's TA dev kit compiles every TA source with `-std=gnu11 -Os` (mirrorc.backend.ta.DEV_KIT_CFLAGS
holds the arm64 set); the TA's sub.mk flags come after them on the command line, so an `-O` there
wins. The aarch64-only flags (-mstrict-align, ...) are left out on this host. The TA rows are
compiled without -march: x86-64's baseline SSE2 has 128-bit vectors like the board's NEON, and no
FMA, so they proxy the board's code shape, not its speed. Each row: CPU us per batch-1 inference
(loop inside C, fastest of --rounds interleaved rounds) and its ratio to onnxruntime running the
secure graph single-threaded (>1: faster than onnxruntime) and to the dev kit's plain -Os.
Models as in benchmarks/c_lowering.py (random CPM weights); by default LeNet-5, VGG-7 and every
model-zoo file shipped with onnx (all nine go through `mirrorc check`)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from c_lowering import model_path, session  # noqa: E402
from record import write_results  # noqa: E402

from mirrorc.backend import cbuild, ta  # noqa: E402
from mirrorc.pipeline import build_mirrornet  # noqa: E402
from mirrorc.zoo import ZOO_MODELS  # noqa: E402
from passes import contract  # noqa: E402
from passes.lower_c import lower  # noqa: E402
from passes.split import split  # noqa: E402

# LeNet-5 and VGG-7 (examples/make_models.py), then onnx's light model zoo
MODELS = ("lenet5", "vgg7", *ZOO_MODELS)
# The dev kit's flags that also mean something on x86 (the language mode and -Os).
DEV_KIT = ta.DEV_KIT_HOST_CFLAGS
# name -> flags, in the order the table prints them; "ta" is what the generated sub.mk adds.
VARIANTS: dict[str, tuple[str, ...]] = {
    "devkit -Os": DEV_KIT,
    "+ -O2 vect dynamic": (*DEV_KIT, "-O2", "-ftree-vectorize", "-fvect-cost-model=dynamic"),
    "+ -O2": (*DEV_KIT, "-O2"),
    "+ -O3": (*DEV_KIT, "-O3"),
    "+ ta sub.mk": (*DEV_KIT, *ta.TA_CODE_CFLAGS),
    "-O3 native contract": ("-std=gnu11", "-O3", *cbuild.host_march()),
    "-O3 native c99": (*cbuild.DEFAULT_CFLAGS, *cbuild.host_march()),
}


def measure(name: str, channels: int, rounds: int, tmp: Path) -> dict:
    mn, _ = build_mirrornet(model_path(name, tmp), channels=channels)
    normal, secure = split(mn)
    lowered = lower(secure, name)
    vi = mn.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(0).standard_normal([1, *shape]).astype(np.float32)
    nout = session(normal).run(None, {vi.name: x})
    taps, logits = [t[0] for t in nout[1:]], nout[0][0]
    feeds = {contract.tap_name(k): t for k, t in enumerate(nout[1:], 1)} | {contract.BACKBONE_LOGITS: nout[0]}
    sec = session(secure)
    # calibrate the iteration count on the slowest variant: about 0.2 s per timing
    once, _ = cbuild.time_lowered(lowered, taps, logits, iters=3, repeats=1, cflags=VARIANTS["devkit -Os"])
    iters = int(min(5000, max(5, 0.2 / max(once, 1e-7))))
    best = dict.fromkeys([*VARIANTS, "onnxruntime"], float("inf"))
    labels = {}
    for _ in range(rounds):  # interleaved, so a burst of load on the shared machine hits every row alike
        for variant, flags in VARIANTS.items():
            t, labels[variant] = cbuild.time_lowered(lowered, taps, logits, iters=iters, repeats=1, cflags=flags)
            best[variant] = min(best[variant], t)
        t0 = time.process_time()
        for _ in range(iters):
            sec.run(None, feeds)
        best["onnxruntime"] = min(best["onnxruntime"], (time.process_time() - t0) / iters)
    ort_label = int(sec.run(None, feeds)[0][0])
    return {
        "model": name,
        "iters": iters,
        "us": {v: 1e6 * t for v, t in best.items()},
        "vs_ort": {v: best["onnxruntime"] / t for v, t in best.items()},
        "vs_devkit": {v: best["devkit -Os"] / t for v, t in best.items()},
        "labels_agree": all(label == ort_label for label in labels.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--channels", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name in args.models.split(","):
            rows.append(measure(name, args.channels, args.rounds, Path(tmp)))
            print(f"{name}: done", file=sys.stderr)
    names = [*VARIANTS, "onnxruntime"]
    width = max(len(n) for n in names)
    print(f"{'flags':<{width}}  " + "  ".join(f"{r['model']:>26}" for r in rows))
    print(f"{'':<{width}}  " + "  ".join(f"{'us  x ort  x -Os':>26}" for _ in rows))
    for n in names:
        cells = [f"{r['us'][n]:10.1f} {r['vs_ort'][n]:6.2f}x {r['vs_devkit'][n]:6.2f}x" for r in rows]
        print(f"{n:<{width}}  " + "  ".join(f"{c:>26}" for c in cells))
    for n, flags in VARIANTS.items():
        print(f"  {n}: {' '.join(flags)}")
    print("labels agree with onnxruntime:", {r["model"]: r["labels_agree"] for r in rows})
    write_results(
        "ta_flags",
        "generated CPM C at the TA dev kit's flags and candidate sub.mk additions vs -O3 for this CPU and "
        "onnxruntime on the same secure graph: CPU us per batch-1 inference, ratios, single-threaded, one run",
        {
            "setup": {"channels": args.channels, "rounds": args.rounds, "weights": "random", "variants": VARIANTS},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
