"""The label oracle's leak, measured (issue 13): CPM logits recovered through the TA by binary search on
the backbone logits, a clone of the CPM trained on them, against label-only distillation and training
from scratch on as many oracle labels as the extraction spent queries; with and without the TA's range
check; then the same attack under each other defence, on builds of the same MirrorNet that differ only
in their TA: range check + a query budget B (the largest query count of the open-TA table at which the
clone's and distillation's head starts are both <= 2 points), the session cap (an attacker's threads
opening sessions: how many it gets, and its query throughput), a rate limit (the wall time the
extraction takes), a client-identity check (an attacker that is not the allowed client); and the range
check's cost to an honest caller (latency per inference in the simulator).

    python benchmarks/extraction.py --open build_lenet --guarded build_lenet_guard --data mnist

`--open` is a build without the range check (compiled before it existed, or with "guard" off), `--guarded`
the same model compiled with it (mirrorc compile's default). Writes results/extraction.json."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import write_results  # noqa: E402
from mirrorc.attack import extract, thief  # noqa: E402
from mirrorc.backend import guard as defence  # noqa: E402
from mirrorc.errors import MirrorcError  # noqa: E402
from mirrorc.tee import teec  # noqa: E402
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


HEAD_START_LIMIT = 2.0  # points of test accuracy over from scratch (the bound)


def pick_budget(rows: list[dict], limit: float = HEAD_START_LIMIT) -> int | None:
    """The largest query count among open-TA `rows` at which the clone's and distillation's head starts
    are both <= `limit`, and every smaller count's too (a budget above a count that breaks the bound
    would allow it); None if the smallest count already breaks it."""
    budget = None
    for row in sorted((r for r in rows if r["defence"] == "none"), key=lambda r: r["queries"]):
        if row["clone_head_start"] > limit or row["distill_head_start"] > limit:
            break
        budget = int(row["queries"])
    return budget


def variant_build(guarded: str, out: Path, defences: dict) -> str:
    """The guarded build's MirrorNet (byte-identical mirrornet.onnx) with a TA of these defences."""
    import onnx

    from mirrorc.backend.secure_build import build_secure

    out.mkdir(parents=True)
    shutil.copy(Path(guarded) / "mirrornet.onnx", out / "mirrornet.onnx")
    mirrornet = onnx.load(str(out / "mirrornet.onnx"))
    fields = build_secure(mirrornet, out, defences=defences)
    plan = json.loads((Path(guarded) / "plan.json").read_text())
    (out / "plan.json").write_text(json.dumps({"format": plan["format"], "model": plan.get("model"), **fields}))
    return str(out)


def one_query(build: str, x: np.ndarray) -> np.ndarray:
    """The SINGLE input (taps then backbone logits) of image x[0], as an attacker's session sends it."""
    with ProtectedModel(build, tee="sim", mode="single") as model:
        return np.concatenate([o[0].reshape(-1) for o in model.backbone_outputs(x[:1])]).astype(np.float32)


def session_cap_attack(build: str, x: np.ndarray, threads: int, queries: int) -> dict:
    """An attacker with `threads` threads on one TEE context, each opening a session: the sessions it
    gets, then the queries per second of one session alone and of every session it got at once."""
    plan = json.loads((Path(build) / "plan.json").read_text())
    single = one_query(build, x)
    with teec.Context.simulator(build) as ctx:
        sessions, refusals = [], []
        lock = threading.Lock()

        def open_one() -> None:
            try:
                s = ctx.open_session(plan["uuid"])
                with lock:
                    sessions.append(s)
            except teec.TeecError as e:
                with lock:
                    refusals.append(e.result)

        pool = [threading.Thread(target=open_one) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        answered = [0] * len(sessions)

        def ask(k: int, n: int) -> None:
            buffer = single.copy()  # each thread its own memref
            op = teec.Operation(teec.TEEC_MEMREF_TEMP_INPUT, teec.TEEC_VALUE_OUTPUT).temp(0, buffer)
            for _ in range(n):
                if sessions[k].try_invoke(plan["single"]["command"], op)[0] == teec.TEEC_SUCCESS:
                    answered[k] += 1

        ask(0, 200)  # warm up: the simulator's pages and caches
        rates = {}
        for used in (1, len(sessions)):
            answered[:] = [0] * len(sessions)
            pool = [threading.Thread(target=ask, args=(k, queries // used)) for k in range(used)]
            t0 = time.perf_counter()
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            rates[used] = sum(answered) / (time.perf_counter() - t0)
    return {
        "threads": threads,
        "sessions_opened": len(sessions),
        "sessions_refused": len(refusals),
        "refusals_are_session_cap": all(r == contract.TA_ERROR_SESSION_CAP for r in refusals),
        "queries_per_s_one_session": rates[1],
        "queries_per_s_all_sessions": rates[len(sessions)],
    }


def identity_attack(build: str) -> dict:
    """An attacker that is not the allowed client, trying each login it can make: sessions it gets."""
    plan = json.loads((Path(build) / "plan.json").read_text())
    tried, refusals = 0, []
    with teec.Context.simulator(build) as ctx:
        for login in ("public", "user", "group"):
            tried += 1
            gid = os.getegid() if login == "group" else None
            try:
                ctx.open_session(plan["uuid"], contract.CLIENT_LOGINS[login], gid)
            except teec.TeecError as e:
                refusals.append(e.result)
    return {
        "logins_tried": tried,
        "sessions_opened": tried - len(refusals),
        "refusals_are_client_check": all(r == contract.TA_ERROR_CLIENT for r in refusals),
    }


def scores(res: thief.Result, scratch: float, distill_accuracy: float, distill_head_start: float, t0: float) -> dict:
    """A row's accuracies and head starts (the clone, the distiller, from scratch) and its times."""
    return {
        "clone_accuracy": res.accuracy,
        "distill_accuracy": distill_accuracy,
        "scratch_accuracy": scratch,
        "clone_head_start": res.accuracy - scratch,
        "distill_head_start": distill_head_start,
        "recovery_seconds": res.extra["recovery_seconds"],
        "seconds": time.perf_counter() - t0,
    }


def defence_table(
    args: argparse.Namespace, rows: list[dict], scratch_at: dict, ds: object, tmp: Path, schedule: thief.Schedule
) -> tuple[list[dict], int | None]:
    """The attack under range check + budget, session cap, rate limit and identity check (builds of
    the guarded build's MirrorNet in `tmp`); the budget picked from the open-TA `rows`."""
    x_train, x_test, y_test = ds.x_train, ds.x_test, ds.y_test  # type: ignore[attr-defined]
    ranged = json.loads((Path(args.guarded) / "plan.json").read_text())["guard"]
    out: list[dict] = []

    def report(row: dict) -> None:
        out.append(row)
        print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)

    budget = pick_budget(rows)
    if budget is None:
        print("no open-TA query count keeps both head starts <= 2: no budget row")
    else:
        build = variant_build(args.guarded, tmp / "budget", {**ranged, "query_budget": budget})
        os.environ["MIRRORC_TA_STORAGE"] = str(tmp / "storage")  # a fresh counter, on this disk
        images = args.budget_images or 2 * max(int(v) for v in args.images.split(","))
        pool = thief.draw_budget(len(x_train), images, args.seed).pool
        t0 = time.perf_counter()
        res = extract.run_extract(
            thief.load_view(build), x_train[pool], x_test, y_test, seed=args.seed, schedule=schedule, eps=args.eps
        )
        at_budget = next(r for r in rows if r["defence"] == "none" and r["queries"] == budget)
        scratch = scratch_at[(True, min(budget, len(x_train)))]
        report(
            {
                "defence": f"range check + budget {budget}",
                "images": images,
                "queries": res.extra["queries"],
                "answered": res.extra["answered"],
                "refused": res.extra["refused"],
                "budget_spent": res.extra["budget_spent"],
                "inputs_completed": res.extra["inputs_completed"],
                "differences_recovered": res.extra["differences_recovered"],
                # the distiller also gets `budget` labels
                **scores(res, scratch, at_budget["distill_accuracy"], at_budget["distill_head_start"], t0),
            }
        )

    build = variant_build(args.guarded, tmp / "cap", {**ranged, **defence.access()})
    t0 = time.perf_counter()
    cap = session_cap_attack(build, x_test, args.threads, args.cap_queries)
    longest = max((r for r in rows if r["defence"] == "range check"), key=lambda r: r["queries"])
    report(
        {
            "defence": f"range check + session cap {defence.SESSION_CAP}",
            **cap,
            "extraction_queries": longest["queries"],
            "extraction_seconds_at_that_rate": longest["queries"] / cap["queries_per_s_all_sessions"],
            "seconds": time.perf_counter() - t0,
        }
    )

    rate, _, burst = args.rate.partition("/")
    limit = {"rate_limit": int(rate), "rate_burst": int(burst or rate)}
    access = defence.access(rate_limit=limit["rate_limit"], rate_burst=limit["rate_burst"])
    build = variant_build(args.guarded, tmp / "rate", {**ranged, **access})
    pool = thief.draw_budget(len(x_train), args.rate_images, args.seed).pool
    with ProtectedModel(build, tee="sim", mode="single") as deployed:
        t0 = time.perf_counter()
        rec = extract.recover(deployed, x_train[pool], args.eps)
        wall = time.perf_counter() - t0
    report(
        {
            "defence": f"range check + rate limit {args.rate}",
            "images": args.rate_images,
            "queries": rec.queries,
            "answered": rec.answered,
            "refused": rec.refused,
            "rate_limited": rec.rate_limited,
            "differences_recovered": int((~(rec.censored | rec.confused))[:, 1:].sum()),
            "recovery_seconds": wall,
            # the longest range-check extraction above: its answers past the burst come at the rate
            "extraction_queries": longest["answered"],
            "extraction_seconds_at_that_rate": max(0, longest["answered"] - limit["rate_burst"]) / limit["rate_limit"],
        }
    )

    other = f"user:{os.geteuid() + 1}"  # the allowed client is another user
    build = variant_build(args.guarded, tmp / "client", {**ranged, **defence.access(allow_client=other)})
    t0 = time.perf_counter()
    report(
        {
            "defence": "range check + client identity (another user)",
            **identity_attack(build),
            "answered": 0,
            "seconds": time.perf_counter() - t0,
        }
    )
    return out, budget


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
    ap.add_argument("--budget-images", type=int, help="images the attack tries under the budget (default: 2x the most)")
    ap.add_argument("--rate", default="30/300", help="the rate limit R/BURST measured (labels/s, burst)")
    ap.add_argument("--rate-images", type=int, default=20, help="images the attack recovers under the rate limit")
    ap.add_argument("--threads", type=int, default=8, help="the session-cap attacker's threads")
    ap.add_argument("--cap-queries", type=int, default=4000, help="queries per throughput measurement")
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
                "answered": res.extra["answered"],
                "refused": res.extra["refused"],
                "eps": res.extra["eps"],
                "inputs_recovered": res.extra["inputs_recovered"],
                "differences_recovered": res.extra["differences_recovered"],
                "censored": res.extra["censored"],
                "confused": res.extra["confused"],
                **scores(res, scratch, distill.accuracy, distill.accuracy - scratch, t0),
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

    with tempfile.TemporaryDirectory(prefix="mirrorc-extraction-") as tmp:
        defence_rows, budget = defence_table(args, rows, scratch_at, ds, Path(tmp), schedule)

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
        "on as many oracle labels; with and without the TA's range check; under a query budget, the session "
        "cap, a rate limit and a client-identity check; honest latency",
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
                "budget": budget,
                "rate": args.rate,
            },
            "rows": rows,
            "defences": defence_rows,
        },
    )


if __name__ == "__main__":
    main()
