"""What the TA's defences cost an honest caller: latency per protected inference (batch 1, single mode,
backbone included) in the simulator, for builds of one model that differ only in their TA (plan "guard").

    python benchmarks/defence_latency.py build_open build_range build_range_budget --data mnist

Each build is named by its defences; an interleaved schedule (round-robin over the builds, repeated)
keeps a busy machine's drift out of the differences. Writes results/defence_latency.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import write_results  # noqa: E402
from mirrorc.tee.runtime import ProtectedModel  # noqa: E402
from mirrorc.train.data import load_dataset  # noqa: E402


def defences(build: str) -> str:
    guard = json.loads((Path(build) / "plan.json").read_text()).get("guard") or {}
    parts = (["range check"] if guard.get("range_check") else []) + (
        [f"budget {guard['query_budget']}"] if guard.get("query_budget") else []
    )
    return " + ".join(parts) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="+")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=os.environ.get("MIRRORC_DATA", "."))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    models = [ProtectedModel(b, tee="sim", mode="single") for b in args.builds]
    ds = load_dataset(args.data, data_dir=args.data_dir, input_shape=tuple(int(d or 1) for d in models[0].input_shape))
    x = ds.x_test[: args.images]
    times: list[list[float]] = [[] for _ in models]
    labels: list[list[int]] = [[] for _ in models]
    for model in models:
        for i in range(20):  # warm up: simulator spawned, caches hot
            model.predict(x[i : i + 1])
    for _ in range(args.rounds):
        for model, sink, out in zip(models, times, labels):
            for i in range(len(x)):
                t = time.perf_counter()
                out.append(int(model.predict(x[i : i + 1])[0]))
                sink.append(time.perf_counter() - t)
    for model in models:
        model.close()
    rows = []
    for build, sink, out in zip(args.builds, times, labels):
        row = {
            "build": build,
            "defences": defences(build),
            "median_us": float(np.median(sink) * 1e6),
            "p90_us": float(np.percentile(sink, 90) * 1e6),
            "inferences": len(sink),
            "same_labels_as_first": out == labels[0],
        }
        rows.append(row)
        print(
            f"{row['defences']:28} median {row['median_us']:8.1f} µs  p90 {row['p90_us']:8.1f} µs  "
            f"same labels as {rows[0]['defences']}: {row['same_labels_as_first']}"
        )
    write_results(
        "defence_latency",
        "the TA's defences' cost to an honest caller: latency per protected inference (simulator, batch 1, single)",
        {"setup": {"data": args.data, "images": args.images, "rounds": args.rounds}, "rows": rows},
    )


if __name__ == "__main__":
    main()
