"""The Python-side fuzzer on generated TAs, longer than tests/test_ta_call_fuzz.py: THREADS concurrent
contexts of random Client API calls through mirrorc.tee.teec (commands in and out of order, any
parameter types, sizes up to 2^64-1 without buffers, shared memory at any offset, NaN/Inf contents,
session churn against the per-client cap), a correct call after every burst checked against
mirrornet.onnx's label by onnxruntime.

    python benchmarks/ta_call_fuzz.py [--models lenet5,vgg7] [--seconds 300] [--threads 8]

Random CPM weights (the mirror pass's draw) and the compile's default access defences (session cap);
the fuzzer checks the protocol, which does not depend on training. Writes results/ta_call_fuzz.json."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import write_results  # noqa: E402
from ta_fuzz import example_build  # noqa: E402

from mirrorc.attack.call_fuzz import fuzz_calls  # noqa: E402
from mirrorc.backend import guard  # noqa: E402


def access_defences(num_classes: int) -> dict:
    """The compile's default access defences (session cap), no range check or budget."""
    return {**guard.no_guard(num_classes), **guard.access()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lenet5,vgg7")
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--inputs", type=int, default=8, help="reference inputs checked after every burst")
    ap.add_argument("-C", "--channels", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mirrorc-call-fuzz-") as tmp:
        for name in args.models.split(","):
            build, _ = example_build(name, args.channels, Path(tmp), access_defences)
            shape = [
                d.dim_value or 1 for d in onnx.load(build / "normal.onnx").graph.input[0].type.tensor_type.shape.dim
            ]
            x = np.random.default_rng(0).normal(size=(args.inputs, *shape[1:])).astype(np.float32)
            counts = fuzz_calls(build, x, threads=args.threads, seconds=args.seconds)
            row = {"model": name, "threads": args.threads, "seconds": args.seconds, **counts.summary()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_results(
        "ta_call_fuzz",
        "concurrent random Client API calls on generated TAs in the simulator (mirrorc.attack.call_fuzz): "
        "calls, refusals by kind, crashes, label checks after every burst and wrong labels",
        {
            "setup": {"channels": args.channels, "burst": 40, "defences": "session cap 2 (compile default)"},
            "rows": rows,
        },
    )
    sys.exit(0 if all(r["crashes"] == 0 and r["wrong_labels"] == 0 and not r["errors"] for r in rows) else 1)


if __name__ == "__main__":
    main()
