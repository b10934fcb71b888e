"""What the TA's defences cost an honest caller: latency per protected inference (batch 1, single mode,
backbone included) in the simulator, for builds of one model that differ only in their TA (plan "guard"),
and the latency of opening a session (where the session cap and the client-identity check run).

    python benchmarks/defence_latency.py build_open build_range build_range_budget --data mnist
    python benchmarks/defence_latency.py --make /tmp/defence_builds --data mnist   # LeNet-5, one TA per defence

`--make DIR` writes one LeNet-5 MirrorNet (random CPM weights: the cost of a defence does not depend on
training) into DIR/<variant> for each defence alone and all together, then measures them. Each build is
named by its defences; an interleaved schedule (round-robin over the builds, repeated) keeps a busy
machine's drift out of the differences; figures are medians over every round. Also measured on the first
build: a TA call alone on fixed taps and logits (what an attacker who skips the backbone pays per
query), the bound a rate limit would have to beat. Writes results/defence_latency.json."""

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
from mirrorc.tee.runtime import ProtectedModel, session_login  # noqa: E402
from mirrorc.train.data import load_dataset  # noqa: E402


def defences(build: str) -> str:
    guard = json.loads((Path(build) / "plan.json").read_text()).get("guard") or {}
    parts = (
        (["range check"] if guard.get("range_check") else [])
        + ([f"budget {guard['query_budget']}"] if guard.get("query_budget") else [])
        + ([f"session cap {guard['session_cap']}"] if guard.get("session_cap") else [])
        + ([f"client {guard['allow_client'].split(':')[0]}"] if guard.get("allow_client") else [])
        + ([f"rate {guard['rate_limit']}/s"] if guard.get("rate_limit") else [])
    )
    return " + ".join(parts) or "none"


def make_builds(out: Path, data: str, data_dir: str) -> list[str]:
    """LeNet-5 MirrorNet builds in OUT, one per defence: open, range check, query budget (never spent),
    session cap, client identity check (this user), rate limit (above the honest rate measured here, so
    never met), all but the budget."""

    from examples.make_models import write_all
    from mirrorc.backend import guard
    from mirrorc.backend.secure_build import write_build
    from mirrorc.pipeline import build_mirrornet
    from passes import contract

    models = out / "models"
    if not (models / "lenet5.onnx").exists():
        write_all(models)
    mirrornet, _ = build_mirrornet(models / "lenet5.onnx", channels=2)
    k = contract.num_classes(mirrornet)
    x_train = load_dataset(data, data_dir=data_dir, input_shape=(1, 28, 28), limit_train=10000).x_train
    ranged = guard.logit_range(mirrornet, x_train)
    me = f"user:{os.geteuid()}"
    variants = {
        "open": {**guard.no_guard(k), **guard.no_access()},
        "range": {**ranged, **guard.no_access()},
        "budget": {**guard.no_guard(k), **guard.no_access(), "query_budget": 10**12},
        "cap": {**guard.no_guard(k), **guard.access(session_cap=guard.SESSION_CAP)},
        "client": {**guard.no_guard(k), **guard.access(session_cap=0, allow_client=me)},
        "rate": {**guard.no_guard(k), **guard.access(session_cap=0, rate_limit=100000)},
        "all": {**ranged, **guard.access(allow_client=me, rate_limit=100000)},
    }
    builds = []
    for name, defences in variants.items():
        build = out / name
        build.mkdir(parents=True, exist_ok=True)
        write_build(mirrornet, build, "lenet5", defences=defences)
        builds.append(str(build))
    return builds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="*")
    ap.add_argument("--make", type=Path, help="write LeNet-5 builds, one per defence, into this folder first")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=os.environ.get("MIRRORC_DATA", "."))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.make:
        args.builds = args.builds + make_builds(args.make, args.data, args.data_dir)
    if not args.builds:
        ap.error("name builds, or --make DIR")

    models = [ProtectedModel(b, tee="sim", mode="single") for b in args.builds]
    ds = load_dataset(args.data, data_dir=args.data_dir, input_shape=tuple(int(d or 1) for d in models[0].input_shape))
    x = ds.x_test[: args.images]
    times: list[list[float]] = [[] for _ in models]
    opens: list[list[float]] = [[] for _ in models]
    labels: list[list[int]] = [[] for _ in models]
    ta_only: list[float] = []
    for model in models:
        for i in range(20):  # warm up: simulator spawned, caches hot
            model.predict(x[i : i + 1])
    fixed = models[0].backbone_outputs(x[:1])
    taps, logits = [o[0] for o in fixed[:-1]], fixed[-1][0]
    for _ in range(args.rounds):
        for model, sink, out, opened in zip(models, times, labels, opens):
            for i in range(len(x)):
                t = time.perf_counter()
                out.append(int(model.predict(x[i : i + 1])[0]))
                sink.append(time.perf_counter() - t)
            assert model.context is not None
            login, gid = session_login(model.plan.get("guard"))
            for _ in range(20):  # a second session beside the model's: open and close
                t = time.perf_counter()
                model.context.open_session(model.plan["uuid"], login, gid).close()
                opened.append(time.perf_counter() - t)
        if models[0].plan.get("guard", {}).get("rate_limit", 0) == 0:
            for _ in range(len(x)):  # the attacker's query: the TA alone, no backbone
                t = time.perf_counter()
                models[0].query(taps, logits)
                ta_only.append(time.perf_counter() - t)
    for model in models:
        model.close()
    rows = []
    for build, sink, out, opened in zip(args.builds, times, labels, opens):
        row = {
            "build": build,
            "defences": defences(build),
            "median_us": float(np.median(sink) * 1e6),
            "p90_us": float(np.percentile(sink, 90) * 1e6),
            "open_session_median_us": float(np.median(opened) * 1e6),
            "inferences": len(sink),
            "same_labels_as_first": out == labels[0],
        }
        rows.append(row)
        print(
            f"{row['defences']:44} median {row['median_us']:8.1f} µs  p90 {row['p90_us']:8.1f} µs  "
            f"open session {row['open_session_median_us']:7.1f} µs  "
            f"same labels as {rows[0]['defences']}: {row['same_labels_as_first']}"
        )
    ta_only_us = float(np.median(ta_only) * 1e6) if ta_only else None
    if ta_only_us:
        print(f"TA call alone (an attacker's query, no backbone), {rows[0]['defences']}: median {ta_only_us:.1f} µs")
    write_results(
        "defence_latency",
        "the TA's defences' cost to an honest caller: latency per protected inference (simulator, batch 1, "
        "single) and per session open; medians over interleaved rounds",
        {
            "setup": {"data": args.data, "images": args.images, "rounds": args.rounds},
            "rows": rows,
            "ta_call_alone_median_us": ta_only_us,
        },
    )


if __name__ == "__main__":
    main()
