"""Compile-time cost of the front end: per model, wall time and peak memory of inspect
(mirrorc.plan.inspect.inspect_model: load, canonicalize, taps, the layer table), mirror
(mirrorc.pipeline.build_mirrornet) and the partition report.

    python benchmarks/compile_time.py [-C 4] [--only resnet50,vgg7]

Each model runs in its own subprocess so its peak RSS (resource.getrusage maxrss) is its own. Models:
LeNet-5 and VGG-7 from examples/make_models.py, and the nine model-zoo files shipped in the onnx
package (onnx/backend/test/data/light). Target: ResNet-50 under 10 s in total."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def models(tmp: Path) -> dict[str, Path]:
    import onnx

    sys.path.insert(0, str(ROOT / "examples"))
    import make_models

    found = {name: path for name, path in make_models.write_all(tmp).items()}
    zoo = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    for p in sorted(zoo.glob("light_*.onnx")):
        found[p.stem.removeprefix("light_")] = p
    return found


def run_one(path: str, channels: int) -> dict:
    """Runs in the child: time each phase, then report peak RSS."""
    from mirrorc.pipeline import build_mirrornet
    from mirrorc.plan import report
    from mirrorc.plan.inspect import inspect_model

    out = {}
    t0 = time.perf_counter()
    try:
        ins = inspect_model(path)
    except Exception as e:
        out["error"] = f"inspect: {str(e).splitlines()[0][:80]}"
        return out
    out["inspect_s"] = time.perf_counter() - t0
    out["backbone_macs"] = ins["totals"]["macs"]
    t0 = time.perf_counter()
    try:
        built = build_mirrornet(path, channels=channels, seed=0, init="keep")
    except Exception as e:  # report it in the table; the benchmark goes on with the next model
        out["error"] = f"mirror: {str(e).splitlines()[0][:80]}"
        return out
    model = built[0] if isinstance(built, tuple) else built
    out["mirror_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = report.build_report(model)
    out["report_s"] = time.perf_counter() - t0
    out["taps"] = rep["totals"]["taps"]
    out["cpm_macs"] = rep["totals"]["cpm_macs"]
    out["single_ms"] = rep["latency_us"]["single"] / 1000
    out["tee_bytes"] = rep["memory"]["total"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-C", "--channels", type=int, default=4)
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: one model path
    args = ap.parse_args()
    if args.one:
        res = run_one(args.one, args.channels)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(json.dumps(res))
        return

    from mirrorc.plan.layers import fmt_count

    measured = []  # the child's figures per model, for results/compile_time.json
    rows = [
        [
            "model",
            "inspect s",
            "mirror s",
            "report s",
            "total s",
            "peak RSS MB",
            "taps",
            "backbone MACs",
            "CPM MACs",
            "CPM ms (single)",
            "TEE KiB",
            "note",
        ]
    ]
    with tempfile.TemporaryDirectory() as tmp:
        found = models(Path(tmp))
        wanted = args.only.split(",") if args.only else list(found)
        for name in wanted:
            if name not in found:
                sys.exit(f"unknown model '{name}' (have: {', '.join(found)})")
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(found[name]), "-C", str(args.channels)],
                capture_output=True,
                text=True,
                env=os.environ | {"PYTHONPATH": str(ROOT)},
            )
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                rows.append(
                    [name] + ["-"] * 10 + [proc.stderr.strip().splitlines()[-1][:80] if proc.stderr else "failed"]
                )
                measured.append({"model": name, "error": rows[-1][-1]})
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            measured.append({"model": name, **r})
            phases = [r.get(k) for k in ("inspect_s", "mirror_s", "report_s")]
            rows.append(
                [name]
                + [f"{p:.2f}" if p is not None else "-" for p in phases]
                + [
                    f"{sum(p for p in phases if p is not None):.2f}",
                    f"{r['peak_rss_mb']:.0f}",
                    str(r.get("taps", "-")),
                    fmt_count(r["backbone_macs"]) if "backbone_macs" in r else "-",
                    fmt_count(r["cpm_macs"]) if "cpm_macs" in r else "-",
                    f"{r['single_ms']:.2f}" if "single_ms" in r else "-",
                    f"{r['tee_bytes'] / 1024:.0f}" if "tee_bytes" in r else "-",
                    r.get("error", f"subprocess {wall:.1f} s"),
                ]
            )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    print(f"C = {args.channels}")
    for r in rows:
        print("  ".join(cell.ljust(w) if c in (0, 11) else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths))))
    from record import write_results

    write_results(
        "compile_time",
        "inspect + mirror + report per model, one process each: seconds, peak RSS, "
        "taps, MACs, predicted secure-world time, TEE memory",
        {"setup": {"channels": args.channels}, "rows": measured},
    )


if __name__ == "__main__":
    main()
