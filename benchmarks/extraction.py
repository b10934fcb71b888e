"""The label oracle's leak, measured (issue 13): CPM logits recovered through the TA by binary search on
the backbone logits, a clone of the CPM trained on them, against label-only distillation and training
from scratch on as many oracle labels as the extraction spent queries; with and without the TA's range
check; and the range check's cost to an honest caller (latency per inference in the simulator).

    python benchmarks/extraction.py --open build_lenet --guarded build_lenet_guard --data mnist

`--open` is a build without the range check (compiled before it existed, or with "guard" off), `--guarded`
the same model compiled with it (mirrorc compile's default). Writes results/extraction.json."""

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
from mirrorc.attack import extract, thief  # noqa: E402
from mirrorc.errors import MirrorcError  # noqa: E402
from mirrorc.tee.runtime import ProtectedModel  # noqa: E402
from mirrorc.train.data import load_dataset  # noqa: E402
from passes import contract  # noqa: E402


def honest_latency_us(build: str, x: np.ndarray) -> float:
    """Median microseconds per protected inference (batch 1, single mode), backbone included."""
    with ProtectedModel(build, tee="sim", mode="single") as model:
        for i in range(50):
            model.predict(x[i : i + 1])
        times = []
        for i in range(len(x)):
            t = time.perf_counter()
            model.predict(x[i : i + 1])
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--open", required=True, help="build without the range check")
    ap.add_argument("--guarded", required=True, help="the same model built with the range check")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=os.environ.get("MIRRORC_DATA", "."))
    ap.add_argument("--images", default="10,40,160", help="inputs whose CPM logits are recovered")
    ap.add_argument("--eps", type=float, default=1e-2, help="precision of each binary search")
    ap.add_argument("--min-steps", type=int, default=500)
    ap.add_argument("--latency-images", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("MIRRORC_THREADS", "1")))
    schedule = thief.Schedule(epochs=2, min_steps=args.min_steps, lr_grid=(1e-3,))
    view_open = thief.load_view(args.open)
    ds = load_dataset(args.data, data_dir=args.data_dir, input_shape=view_open.input_shape)
    x_test, y_test = ds.x_test, ds.y_test
    n_train = len(ds.x_train)

    rows, scratch_at = [], {}
    for build in (args.open, args.guarded):
        view = thief.load_view(build)
        guard = json.loads((Path(build) / "plan.json").read_text()).get("guard") or {}
        defence = "range check" if guard.get("range_check") else "none"
        for n in [int(v) for v in args.images.split(",")]:
            pool = thief.draw_budget(n_train, n, args.seed).pool
            t0 = time.perf_counter()
            res = extract.run_extract(
                view, ds.x_train[pool], x_test, y_test, seed=args.seed, schedule=schedule, eps=args.eps
            )
            queries = res.extra["queries"]
            # label-only at the same number of TA queries: distillation and from scratch on as many oracle labels
            labelled = thief.draw_budget(n_train, min(queries, n_train), args.seed).pool
            y_oracle, _ = thief.oracle_labels(view, ds.x_train[labelled])
            attacks = {a.name: a for a in thief.attacks_for(view, args.seed)}
            distill = thief.fit_and_score(
                attacks["distill"], ds.x_train[labelled], y_oracle, x_test, y_test, schedule, args.seed, len(labelled)
            )
            key = (defence == "none", len(labelled))  # the two builds differ in their oracle only by the guard
            if key not in scratch_at:
                scratch_at[key] = thief.fit_and_score(
                    attacks["scratch_oracle"],
                    ds.x_train[labelled],
                    y_oracle,
                    x_test,
                    y_test,
                    schedule,
                    args.seed,
                    len(labelled),
                ).accuracy
            scratch = scratch_at[key]
            row = {
                "defence": defence,
                "images": n,
                "queries": queries,
                "refused": res.extra["refused"],
                "eps": res.extra["eps"],
                "inputs_recovered": res.extra["inputs_recovered"],
                "differences_recovered": res.extra["differences_recovered"],
                "censored": res.extra["censored"],
                "confused": res.extra["confused"],
                "clone_accuracy": res.accuracy,
                "distill_accuracy": distill.accuracy,
                "scratch_accuracy": scratch,
                "clone_head_start": res.accuracy - scratch,
                "distill_head_start": distill.accuracy - scratch,
                "seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            print(
                f"{defence:12} {n:5d} images {queries:7d} queries  clone {res.accuracy:6.2f}%  "
                f"distill {distill.accuracy:6.2f}%  scratch {scratch:6.2f}%  "
                f"head start {row['clone_head_start']:+6.2f} "
                f"(differences recovered {row['differences_recovered']}/{n * (view.num_classes - 1)}, "
                f"censored {row['censored']}, confused {row['confused']})",
                flush=True,
            )

    mirrornet_acc = thief.accuracy(view_open.mirrornet, contract.LABEL, x_test, y_test)
    lat_x = ds.x_test[: args.latency_images]
    latency = {"none": honest_latency_us(args.open, lat_x), "range check": honest_latency_us(args.guarded, lat_x)}
    with ProtectedModel(args.guarded, tee="sim", mode="single") as model:
        refused_honest = 0
        for i in range(0, len(x_test), 500):
            try:
                model.predict(x_test[i : i + 500])
            except MirrorcError:
                refused_honest += 1
    print(f"MirrorNet (TA) accuracy {mirrornet_acc:.2f}%; honest latency per inference (median µs): {latency}")
    print(f"honest test batches refused by the range check: {refused_honest} of {-(-len(x_test) // 500)}")
    write_results(
        "extraction",
        "CPM extraction through the label oracle: queries -> clone accuracy -> head start over from scratch "
        "on as many oracle labels; with and without the TA's range check; honest latency",
        {
            "setup": {
                "open": args.open,
                "guarded": args.guarded,
                "data": args.data,
                "eps": args.eps,
                "schedule": vars(schedule),
                "mirrornet_accuracy": mirrornet_acc,
                "honest_latency_us": latency,
                "honest_test_batches_refused": refused_honest,
            },
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
