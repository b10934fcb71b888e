"""What a thief gets, across MirrorNet constructions: for each dataset, protection strategy, C, tap
selection and backbone penalty, compile a LeNet-5 MirrorNet, run `mirrorc.attack.thief` on it and print
MirrorNet accuracy, Δp and the head start (best attack - from scratch) at each budget; with
`--baseline`, also the unprotected model trained the same way and the MirrorNet's cost against it.

    python benchmarks/attacks.py --out /tmp/attack-bench                      # the full grid (hours)
    python benchmarks/attacks.py --out /tmp/ab --datasets mnist --channels 2 --penalties 0,1 --seeds 1
    # mirrorc.train.protect's figures:
    python benchmarks/attacks.py --out /tmp/ab --datasets mnist --protects joint,random-backbone \
        --channels default --penalties 0 --selects first --budgets 600,3000 --seeds 3 --baseline \
        --compile-epochs 10 --results protection          # the figures the partition report reads

The summary table also goes to results/attacks.json (`--results NAME`: results/NAME.json).

`--channels default` is each strategy's own C (mirrorc.train.protect). A backbone penalty is skipped for a
strategy that freezes the backbone (nothing to penalise).

Builds are kept in OUT/builds/<name>/ and reused when present (delete them to rebuild); every
attack report is written to OUT/<name>.attack.json and the summary to OUT/summary.json. The
labelled from-scratch baseline depends only on architecture, data, budget and seed, so it is
trained once per dataset and shared by all builds.

Per dataset, the missing builds are compiled first, then the attack cells of every build run as one
grid (mirrorc.train.grid): one after another here, or as Ray tasks with `--ray auto|ADDRESS` (the
same figures; the builds and OUT must be on a file system the Ray workers see). `--device` is where
the compiles and the attacks train.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from record import write_results

ROOT = Path(__file__).resolve().parents[1]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _finished(path: Path, budgets: list[int], seeds: int, schedule, attacks: tuple[str, ...] | None) -> dict | None:
    """The attack report a previous run of the same grid left in OUT (so an interrupted grid resumes
    where it stopped), or None when there is none or it was made with other settings. `attacks` None:
    any attacks (enough to reuse its from-scratch baseline)."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    # where the attacks trained does not change what they measure; the report does not record it
    wanted = {k: v for k, v in json.loads(json.dumps(vars(schedule))).items() if k != "device"}
    made = {k: v for k, v in report.get("schedule", {}).items() if k != "device"}
    same = (
        report.get("budgets") == budgets
        and report.get("seeds") == seeds
        and made == wanted
        and (attacks is None or {r["attack"] for r in report.get("results", [])} <= set(attacks))
    )
    if not same:
        return None
    from mirrorc.attack import thief as atk

    # the head start is recomputed from the stored accuracies, so a report from an earlier version reads
    # under today's definition (e.g. a public copy's own fine-tuning counts as a start without theft)
    report["head_start"] = atk.report_head_starts([atk.Result(**r) for r in report["results"]], report.get("protect"))
    return report


def _strategy(spec: str) -> tuple:
    """'NAME' or 'NAME:C' -> (the strategy, [C] or None)."""
    from mirrorc.train import protect as protection

    name, _, c = spec.partition(":")
    return protection.get(name), ([int(c)] if c else None)


def compile_build(
    args: argparse.Namespace, data: str, build: Path, strategy: str, select: str, c: int, penalty: float, name: str
) -> float:
    """Compile one build of the grid (a job of mirrorc.train.grid); returns its seconds."""
    from mirrorc.compile import compile_model
    from mirrorc.train.loop import TrainConfig

    began = time.perf_counter()
    config = TrainConfig(
        epochs=args.compile_epochs, backbone_penalty=penalty, seed=0, fast=args.fast, device=args.device
    )
    compile_model(
        args.model,
        build,
        data=data,
        data_dir=args.data_dir,
        channels=c,
        protect=strategy,
        select=select,
        seed=0,
        config=config,
        baseline=args.baseline,
        limit_train=args.limit_train,
        log=lambda m: print(f"  [{name}] {m}", file=sys.stderr),
    )
    return time.perf_counter() - began


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    from mirrorc.train.grid import add_grid_arguments

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for builds and reports")
    ap.add_argument("--model", default=str(ROOT / "examples" / "models" / "lenet5.onnx"))
    ap.add_argument("--data-dir", default=os.environ.get("MIRRORC_DATA", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--datasets", default="mnist,fashion-mnist")
    ap.add_argument(
        "--protects",
        default="joint",
        help="protection strategies (mirrorc.train.protect); NAME:C fixes C for that strategy alone "
        "(e.g. joint,random-backbone:16,random-backbone:32)",
    )
    ap.add_argument("--channels", default="1,2,4", help="C values, or 'default' for each strategy's own")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also train the unprotected model per build and report the MirrorNet's cost",
    )
    ap.add_argument("--selects", default="first,random")
    ap.add_argument(
        "--penalties",
        default="0,1",
        help="backbone-penalty weights (0 = the paper's plain loss; 'default' = each strategy's own)",
    )
    ap.add_argument("--budgets", default="600,3000")
    ap.add_argument("--seeds", type=int, default=1, help="attack seeds per budget")
    ap.add_argument("--compile-epochs", type=int, default=5)
    ap.add_argument("--limit-train", type=int, default=None, help="compile on the first N training images only")
    ap.add_argument("--fast", action="store_true", help="compile with mirrorc compile --fast")
    ap.add_argument("--epochs", type=int, default=20, help="attack schedule: epochs per run")
    ap.add_argument("--min-steps", type=int, default=500, help="attack schedule: minimum steps per run")
    ap.add_argument("--lr-grid", default="3e-4,1e-3,3e-3")
    ap.add_argument("--attacks", default=None, help="subset of attacks (default: all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_grid_arguments(ap, "the compiles and attacks")
    ap.add_argument(
        "--results",
        default="attacks",
        help="write the summary to results/NAME.json ('protection' is what the partition report reads)",
    )
    args = ap.parse_args(argv)

    from mirrorc.attack import thief as atk
    from mirrorc.evaluate import original_accuracy
    from mirrorc.plan.inspect import inspect_model
    from mirrorc.train.data import load_dataset
    from mirrorc.train.distributed import resolve_device
    from mirrorc.train.grid import check_ray, run_tasks

    # the size class mirrorc.plan.report.measured_protection matches other models against (read first:
    # a model it cannot read fails here, not after the grid)
    backbone_macs = inspect_model(args.model)["totals"]["macs"]

    resolve_device(args.device)  # a bad --device or a missing Ray fails before any work
    check_ray(args.ray, args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "builds").mkdir(parents=True, exist_ok=True)
    schedule = atk.Schedule(
        epochs=args.epochs, min_steps=args.min_steps, lr_grid=tuple(_floats(args.lr_grid)), device=args.device
    )
    attacks = tuple(args.attacks.split(",")) if args.attacks else atk.ALL_ATTACKS
    budgets = _ints(args.budgets)
    rows = []
    for data in args.datasets.split(","):
        scratch_cache: dict = {}
        grid = []
        for strategy, fixed_c in map(_strategy, args.protects.split(",")):
            for penalty in [strategy.backbone_penalty] if args.penalties == "default" else _floats(args.penalties):
                for select in args.selects.split(","):
                    for c in fixed_c or (["default"] if args.channels == "default" else _ints(args.channels)):
                        if strategy.freeze_backbone and penalty:
                            continue
                        c = strategy.default_channels(args.model) if c == "default" else c
                        name = f"{data}-{strategy.name}-C{c}-{select}-p{penalty:g}"
                        grid.append((strategy, penalty, select, c, name, out / "builds" / name))

        missing = [g for g in grid if not (g[5] / "mirrornet.onnx").is_file()]
        compiled = run_tasks(
            compile_build,
            [
                (args, data, build, strategy.name, select, c, penalty, name)
                for strategy, penalty, select, c, name, build in missing
            ],
            ray=args.ray,
            device=args.device,
            desc=f"{data}: compiles",
            names=[g[4] for g in missing],
        )
        compile_seconds = {g[4]: seconds for g, seconds in zip(missing, compiled)}
        if not grid:
            continue
        view = atk.load_view(grid[0][5])
        dataset = load_dataset(data, data_dir=args.data_dir, input_shape=view.input_shape)
        reports = {g[4]: _finished(out / f"{g[4]}.attack.json", budgets, args.seeds, schedule, attacks) for g in grid}
        todo = [g for g in grid if reports[g[4]] is None]
        # any finished build's from-scratch baseline in OUT (this grid's or an earlier one's) serves the
        # builds still to attack: the cache keys it by architecture, data and schedule
        for path in sorted(out.glob(f"{data}-*.attack.json")) if todo else []:
            built = _finished(path, budgets, args.seeds, schedule, None)
            build = out / "builds" / path.name.removesuffix(".attack.json")
            if built is not None and (build / "normal.onnx").is_file():
                scratch_cache.update(atk.scratch_results(built, atk.load_view(build).normal, dataset, schedule))
        began = time.perf_counter()
        plans = [
            atk.plan(g[5], dataset, budgets=budgets, seeds=args.seeds, schedule=schedule, attacks=attacks) for g in todo
        ]
        # under Ray all builds' cells run as one pool; in this process build by build, so that each report
        # is saved as soon as it is done (an interrupted grid resumes from there)
        batches = [list(range(len(todo)))] if args.ray else [[i] for i in range(len(todo))]
        for batch in batches:
            done = atk.run_plans([plans[i] for i in batch], ray=args.ray, scratch_cache=scratch_cache)
            for i, report in zip(batch, done):
                (out / f"{todo[i][4]}.attack.json").write_text(json.dumps(report, indent=1))
                reports[todo[i][4]] = report
        if todo:
            print(f"== {data}: attacks on {len(todo)} build(s) {time.perf_counter() - began:.0f}s", flush=True)
        for strategy, penalty, select, c, name, build in grid:
            report = reports[name]
            table, head = atk.format_report(report)
            took = f" (compile {compile_seconds[name]:.0f}s)" if name in compile_seconds else ""
            print(f"== {name}{took}")
            print(table)
            print(head, flush=True)
            unprotected = original_accuracy(build, dataset.x_test, dataset.y_test)  # None without --baseline
            rows.append(
                {
                    "dataset": data,
                    "protect": strategy.name,
                    "C": c,
                    "select": select,
                    "penalty": penalty,
                    "unprotected": unprotected,
                    "mirrornet": report["mirrornet_accuracy"],
                    "backbone": report["backbone_accuracy"],
                    "delta_p": report["delta_p"],
                    "head_start": report["head_start"],
                    "best": {
                        b: max(set(h["best_attack"]), key=h["best_attack"].count)
                        for b, h in report["head_start"].items()
                    },
                }
            )
            (out / "summary.json").write_text(json.dumps(rows, indent=1))

    print(
        "\nsummary (test accuracy %; cost = unprotected - MirrorNet;"
        " head start = best attack - best start without the copy, points, mean ± sd over seeds)"
    )
    head = (
        f"{'dataset':<14}{'protect':<16}{'C':>3} {'select':<7}{'penalty':>8}{'unprot':>7}{'MirrorNet':>10}"
        f"{'cost':>6}{'backbone':>9}{'Δp':>7}"
    )
    head += "".join(f"{'HS@' + str(b):>14}" for b in budgets) + "  best attack"
    print(head)
    for r in rows:
        u = r["unprotected"]
        line = (
            f"{r['dataset']:<14}{r['protect']:<16}{r['C']:>3} {r['select']:<7}{r['penalty']:>8g}"
            f"{u if u is None else round(u, 2)!s:>7}{r['mirrornet']:>10.2f}"
            f"{'-' if u is None else format(u - r['mirrornet'], '.2f'):>6}{r['backbone']:>9.2f}{r['delta_p']:>7.2f}"
        )
        line += "".join(
            f"{atk.signed_spread(r['head_start'][str(b)]['per_seed']):>14}"
            if str(b) in r["head_start"]
            else f"{'-':>14}"
            for b in budgets
        )
        line += "  " + ", ".join(f"{b}: {a}" for b, a in r["best"].items())
        print(line)
    setup = {
        "model": Path(args.model).stem,
        "backbone_macs": backbone_macs,
        "compile_epochs": args.compile_epochs,
        "limit_train": args.limit_train,
        "attack_seeds": args.seeds,
        "budgets": budgets,
    }
    write_results(
        args.results,
        "what a thief gets per MirrorNet construction: test accuracy %, cost = unprotected - "
        "MirrorNet, head start = best attack - the thief's best start without the copy (from scratch; for "
        "public-backbone also the public model) (points, mean ± sd over seeds)",
        {"setup": setup, "rows": [_result_row(r) for r in rows]},
    )
    return 0


def _result_row(row: dict) -> dict:
    """A summary row as results/<name>.json holds it (mirrorc.plan.report.measured_protection reads it)."""
    from mirrorc.attack.thief import signed_spread

    u = row["unprotected"]
    return {
        **{
            k: row[k]
            for k in (
                "dataset",
                "protect",
                "C",
                "select",
                "penalty",
                "unprotected",
                "mirrornet",
                "backbone",
                "delta_p",
                "best",
            )
        },
        "cost": None if u is None else round(u - row["mirrornet"], 2),
        "head_start": {b: signed_spread(h["per_seed"]) for b, h in row["head_start"].items()},
    }


if __name__ == "__main__":
    sys.exit(main())
