"""The secure graph lowered to C, per model: memory plan, C vs onnxruntime speed, label agreement.

    python benchmarks/c_lowering.py [--models lenet5,vgg7,squeezenet,resnet50] [--inputs 1000] [--channels 2]

For each model: mirrornet (pipeline, random CPM weights) -> split -> lower_c. Prints
- weights / arena / carry bytes and the naive sum of every tensor (what the liveness plan saves);
- CPU time per batch-1 inference of the C model (loop inside C, -O3 for this CPU, fastest of 5)
  vs onnxruntime running the same secure graph single-threaded (session.run per sample, fastest of
  5 interleaved rounds);
- label agreement of the C model with mirrornet.onnx in onnxruntime over --inputs random inputs
  (taps from onnxruntime on normal.onnx), and the largest MirrorNet logit difference.
Models: examples/models/{lenet5,vgg7}.onnx, or the onnx package's zoo files (light_<name>.onnx)."""

from __future__ import annotations

import argparse
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

from record import write_results  # noqa: E402

from mirrorc.backend import cbuild  # noqa: E402
from mirrorc.pipeline import build_mirrornet  # noqa: E402
from mirrorc.zoo import zoo_model_path  # noqa: E402
from passes import contract  # noqa: E402
from passes.lower_c import lower  # noqa: E402
from passes.split import split  # noqa: E402


def model_path(name: str, tmp: Path) -> Path:
    if name in ("lenet5", "vgg7"):
        if not (tmp / f"{name}.onnx").exists():
            subprocess.run(
                [sys.executable, str(ROOT / "examples" / "make_models.py"), str(tmp)], check=True, capture_output=True
            )
        return tmp / f"{name}.onnx"
    return zoo_model_path(name)


def session(model, threads=1):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def time_c_and_ort(lowered, secure: onnx.ModelProto, normal_out: list[np.ndarray]) -> tuple[float, float]:
    """Best CPU seconds per batch-1 inference of the C model (loop inside C) and of onnxruntime running
    the secure graph single-threaded, fastest of 5 interleaved rounds; `normal_out` is normal.onnx's
    output on one input (backbone_logits, then the taps)."""
    feeds = {contract.tap_name(k): t for k, t in enumerate(normal_out[1:], 1)}
    feeds[contract.BACKBONE_LOGITS] = normal_out[0]
    sec = session(secure)
    iters = max(5, int(2e5 // max(1, lowered.sizes["arena"] // 64)))
    iters = min(iters, 2000)
    c_best, ort_best = float("inf"), float("inf")
    for _ in range(5):
        c_t, _ = cbuild.time_lowered(lowered, [t[0] for t in normal_out[1:]], normal_out[0][0], iters=iters, repeats=1)
        t = time.process_time()
        for _ in range(iters):
            sec.run(None, feeds)
        c_best, ort_best = min(c_best, c_t), min(ort_best, (time.process_time() - t) / iters)
    return c_best, ort_best


def run(name: str, n_inputs: int, channels: int, tmp: Path) -> dict:
    t0 = time.perf_counter()
    mn, _ = build_mirrornet(model_path(name, tmp), channels=channels)
    normal, secure = split(mn)
    t1 = time.perf_counter()
    lowered = lower(secure, name)
    t2 = time.perf_counter()
    vi = mn.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(0).standard_normal([n_inputs, *shape]).astype(np.float32)
    normal_s, mirror_s = session(normal, 2), session(mn, 2)
    c_model = cbuild.SecureModel.from_lowered(lowered, name=f"bench_{name}")
    agree, worst = 0, 0.0
    for lo in range(0, n_inputs, 50):  # batches keep memory flat on the big models
        nout = normal_s.run(None, {vi.name: x[lo : lo + 50]})
        labels, _, logits = mirror_s.run(None, {vi.name: x[lo : lo + 50]})
        for i in range(len(labels)):
            label, c_logits = c_model.run([t[i] for t in nout[1:]], nout[0][i])
            agree += int(label == labels[i])
            worst = max(worst, float(np.abs(c_logits - logits[i]).max()))

    # speed on the first input
    c_best, ort_best = time_c_and_ort(lowered, secure, normal_s.run(None, {vi.name: x[:1]}))
    m = lowered.memory
    return {
        "model": name,
        "secure_nodes": len(secure.graph.node),
        "taps": len(lowered.tap_floats),
        "weights": lowered.sizes["weights"],
        "arena": m["arena_bytes"],
        "carry": m["carry_bytes"],
        "naive": m["naive_bytes"],
        "c_us": 1e6 * c_best,
        "ort_us": 1e6 * ort_best,
        "speedup": ort_best / c_best,
        "agree": f"{agree}/{n_inputs}",
        "max_logit_diff": worst,
        "split_s": t1 - t0,
        "lower_s": t2 - t1,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet5,vgg7,squeezenet,resnet50")
    ap.add_argument("--inputs", type=int, default=1000)
    ap.add_argument("--channels", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(name, args.inputs, args.channels, Path(tmp)) for name in args.models.split(",")]
    cols = [
        "model",
        "secure_nodes",
        "taps",
        "weights",
        "arena",
        "carry",
        "naive",
        "c_us",
        "ort_us",
        "speedup",
        "agree",
        "max_logit_diff",
        "lower_s",
    ]
    fmt = {"c_us": "{:.1f}", "ort_us": "{:.1f}", "speedup": "{:.2f}x", "max_logit_diff": "{:.2g}", "lower_s": "{:.2f}"}
    table = [[fmt.get(c, "{}").format(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.rjust(w) for v, w in zip(t, widths)))
    print(
        "bytes: weights (static const), arena (static, shared), carry (per session), naive (every tensor "
        "its own buffer); times: CPU us per batch-1 inference, onnxruntime single-threaded"
    )
    write_results(
        "c_lowering",
        "generated C of the CPM secure graph against onnxruntime running the same graph: "
        "labels agreeing, max logit difference, CPU us per batch-1 inference, bytes",
        {"setup": {"inputs": args.inputs, "channels": args.channels, "weights": "random"}, "rows": rows},
    )


if __name__ == "__main__":
    main()
