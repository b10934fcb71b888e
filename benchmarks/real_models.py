"""Real architectures end to end: every entry of the held-out corpus (examples/export_real_models.py)
through `mirrorc compile --epochs 0` and `mirrorc evaluate` (split execution: normal.onnx in
onnxruntime, the CPM's TA in the simulator, labels against mirrornet.onnx), or its one-line refusal.

    python benchmarks/real_models.py [--only NAME,...] [--skip NAME,...] [--max-mb 100] [--images 20] [-C 2]

Prints one row per entry: model, exporter, opset, input, ops (distinct op types in the source file),
taps, CPM MACs as % of the backbone's, CPU us per batch-1 inference of the secure graph in C and in
onnxruntime (benchmarks/c_lowering.time_c_and_ort), split agreement (agree/images). An entry that does
not go through shows the `mirrorc: error:` line it got instead. Writes results/real_models.json.

The files come from the corpus cache ($MIRRORC_CACHE/real_models; --export makes the missing ones).
The data is CIFAR-10 ($MIRRORC_DATA), cut to --train-images training and --images test images in an
.npz beside the corpus, so the normalisation statistics and the 224x224 resize stay cheap: at 0
epochs the figures are about the compiler, not accuracy. --max-mb skips the largest source files
(VGG-11 and AlexNet carry 0.2 to 0.5 GB of weights each) on a small machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from c_lowering import time_c_and_ort  # noqa: E402
from record import write_results  # noqa: E402

from examples.export_real_models import CORPUS, Entry, default_dir  # noqa: E402
from mirrorc.pipeline import secure_pipeline  # noqa: E402
from mirrorc.train.data import load_raw, resolve  # noqa: E402


def small_cifar(cache: Path, train: int, test: int) -> Path:
    """The first `train` training and `test` test images of CIFAR-10, as an .npz mirrorc reads."""
    path = cache / f"cifar10-{train}-{test}.npz"
    if not path.exists():
        x_train, y_train, x_test, y_test, _ = load_raw(resolve("cifar10", None))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x_train=x_train[:train], y_train=y_train[:train], x_test=x_test[:test], y_test=y_test[:test])
        os.replace(tmp, path)
    return path


def mirrorc(*args: str) -> tuple[dict | None, str]:
    """Run the mirrorc CLI with --json: (its JSON, "") or (None, its one-line error)."""
    proc = subprocess.run([sys.executable, "-m", "mirrorc.cli", *args, "--json"], capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout), ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mirrorc: error:")]
    if errors:
        return None, errors[-1].removeprefix("mirrorc: error: ")
    tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return None, f"crashed (exit {proc.returncode}): {tail}"


def secure_times(build: Path) -> tuple[float, float]:
    """(C, onnxruntime) CPU seconds per batch-1 inference of the build's secure graph, on one input."""
    mirrornet = onnx.load(str(build / "mirrornet.onnx"))
    secure = secure_pipeline(mirrornet, "bench")
    normal = ort.InferenceSession(str(build / "normal.onnx"), providers=["CPUExecutionProvider"])
    vi = normal.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([1, *vi.shape[1:]]).astype(np.float32)
    return time_c_and_ort(secure.lowered, secure.secure, normal.run(None, {vi.name: x}))


def run(entry: Entry, path: Path, data: Path, images: int, channels: int, work: Path) -> dict:
    source = onnx.load(str(path), load_external_data=False)
    row: dict = {
        "model": entry.name,
        "exporter": entry.exporter,
        "opset": entry.opset,
        "input": f"{'N' if entry.dynamic_batch else 1}x3x{entry.size}x{entry.size}",
        "ops": len({n.op_type for n in source.graph.node}),
    }
    del source
    build = work / entry.name
    began = time.perf_counter()
    options = ["--epochs", "0", "--no-baseline", "-C", str(channels), "-o", str(build)]
    compiled, error = mirrorc("compile", str(path), "--data", str(data), *options)
    row["compile_s"] = round(time.perf_counter() - began, 1)
    if compiled is None:
        return {**row, "refused": error}
    report = json.loads((build / "report.json").read_text())["totals"]
    row["taps"] = report["taps"]
    row["cpm_macs_pct"] = round(100.0 * report["cpm_backbone_mac_ratio"], 4)
    evaluated, error = mirrorc("evaluate", str(build), "--data", str(data), "--split-images", str(images))
    if evaluated is None:
        return {**row, "refused": error}
    split = evaluated["split_execution"]
    row["agree"], row["images"] = split["agree"], split["images"]
    c_s, ort_s = secure_times(build)
    row["c_us"], row["ort_us"] = 1e6 * c_s, 1e6 * ort_s
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=default_dir(), help="the corpus folder")
    ap.add_argument("--only", default=None, help="comma-separated entries (file stems)")
    ap.add_argument("--skip", default="", help="comma-separated entries to leave out")
    ap.add_argument("--max-mb", type=float, default=None, help="skip source files larger than this")
    ap.add_argument("--images", type=int, default=20, help="test images for split agreement")
    ap.add_argument("--train-images", type=int, default=256, help="training images (statistics only at 0 epochs)")
    ap.add_argument("-C", "--channels", type=int, default=2)
    ap.add_argument("--export", action="store_true", help="export the entries missing from the cache first")
    args = ap.parse_args()
    entries = [e for e in CORPUS if (args.only is None or e.name in args.only.split(","))]
    entries = [e for e in entries if e.name not in args.skip.split(",")]
    if args.export:
        exporter = [sys.executable, str(ROOT / "examples" / "export_real_models.py"), "--out", str(args.cache)]
        subprocess.run([*exporter, "--only", ",".join(e.name for e in entries)], check=True)
    data = small_cifar(args.cache.parent, args.train_images, args.images)
    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="mirrorc-real-") as tmp:
        for entry in entries:
            path = args.cache / entry.file
            if not path.exists():
                skipped.append(f"{entry.name}: not exported (run with --export)")
                continue
            if args.max_mb is not None and path.stat().st_size > args.max_mb * 1e6:
                skipped.append(f"{entry.name}: {path.stat().st_size / 1e6:.0f} MB > --max-mb")
                continue
            row = run(entry, path, data, args.images, args.channels, Path(tmp))
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    print_table(rows)
    for line in skipped:
        print(f"skipped {line}")
    write_results(
        "real_models",
        "held-out real architectures (random weights, CIFAR-10 at the model's input size) through "
        "`mirrorc compile --epochs 0` and `mirrorc evaluate`: taps, CPM MACs % of the backbone, CPU us per "
        "batch-1 inference of the secure graph in C and onnxruntime, split agreement; or the refusal",
        {
            "setup": {"channels": args.channels, "images": args.images, "train_images": args.train_images},
            "rows": rows,
            "skipped": skipped,
        },
    )
    return 0


def print_table(rows: list[dict]) -> None:
    cols = ["model", "exporter", "opset", "input", "ops", "taps", "cpm_macs_pct", "c_us", "ort_us", "agree"]
    table = []
    for r in rows:
        if "refused" in r and "taps" not in r:
            reason = r["refused"].split(" (supported:")[0]  # the list of supported ops stays in the JSON
            cells = [str(r[c]) for c in cols[:5]] + [f"refused: {reason}"]
        else:
            cells = [str(r[c]) for c in cols[:6]] + [f"{r['cpm_macs_pct']:.2f}%"]
            if "refused" in r:  # compiled, then evaluate failed
                cells.append(f"evaluate failed: {r['refused']}")
            else:
                cells += [f"{r['c_us']:.1f}", f"{r['ort_us']:.1f}", f"{r['agree']}/{r['images']}"]
        table.append(cells)
    widths = [len(c) for c in cols]
    for t in table:  # the last cell of a row (agreement, or a refusal) is not padded
        for i, v in enumerate(t[:-1]):
            widths[i] = max(widths[i], len(v))
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t[:-1], widths)) + "  " + t[-1])
    print("times: CPU us per batch-1 inference of the secure graph (C, -O3 for this CPU; onnxruntime 1 thread)")


if __name__ == "__main__":
    sys.exit(main())
