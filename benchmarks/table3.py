"""Reproduce the MirrorNet paper's Table III: the VGG family (VGG-6/7/11/16, examples/make_models.py's
VGG_PAPER) protected with C = 1..4 on CIFAR-10; test accuracy of the unprotected network, the
BackboneNet alone and the MirrorNet, and Δp, beside the paper's figures, for each recipe given.

    MIRRORC_DATA=../shared/datasets python benchmarks/table3.py [--models vgg6,vgg7_paper,vgg11,vgg16] \
        [--channels 1,2,3,4] [--recipe 'NAME=COMPILE FLAGS' ...] [--epochs 4] [--limit-train 10000] \
        [--seeds 1] [--fast] [--device auto] [--ray auto|ADDRESS] [--out build/table3] [--json-out FILE] \
        [--print-only]

A recipe is a name and the `mirrorc compile` flags it adds, e.g. `paper=--protect paper` (the default
recipes: the paper's, and `joint=--protect joint`, mirrorc's default strategy); any --protect
strategy or compile flag plugs in as text (a recipe without a name is named after its flags: write
it `--recipe=--backbone-penalty 0.5`). The table sets -C, --seed and the
training schedule itself. Every run is `mirrorc compile` then `mirrorc evaluate --no-split-check`,
each in a subprocess, into its own build directory
`<out>/<schedule>/<model>/<recipe>/C<c>-s<seed>/` (schedule = epochs, images, batch, lr, fast), so:
- a finished run (its build directory holds table3-result.json) is skipped on rerun;
- an interrupted one resumes from its per-epoch checkpoints (`mirrorc compile --resume`);
- the table and --json-out are written from whatever is finished, after every run and with
  --print-only, so a long grid can run in the background (nohup ... &) and be read at any time.
The unprotected network ("input" column) is trained once per (model, seed, schedule): by the first
run of that model and seed that has no finished baseline; the other runs pass --no-baseline.
The runs are independent (mirrorc.train.grid): one after another by default, as Ray tasks with
`--ray auto|ADDRESS` (one CPU and one torch thread each; --out must be on a file system the Ray
workers see). `--device` goes to every `mirrorc compile`.
"""

from __future__ import annotations

import argparse
import builtins
import functools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from examples.make_models import MODELS  # noqa: E402

# Table III of the paper (CIFAR-10): input network accuracy, then per C (BackboneNet, MirrorNet, Δp).
PAPER = {
    "VGG-6": (85.0, {1: (84.2, 85.4, 1.2), 2: (81.4, 86.5, 5.1), 3: (69.6, 85.8, 16.2), 4: (63.3, 86.1, 22.8)}),
    "VGG-7": (91.3, {1: (91.0, 91.2, 0.2), 2: (87.2, 91.5, 4.3), 3: (80.8, 91.2, 10.4), 4: (73.3, 91.9, 18.6)}),
    "VGG-11": (92.1, {1: (91.7, 92.0, 0.3), 2: (91.6, 92.2, 0.6), 3: (87.5, 92.1, 4.6), 4: (79.7, 92.3, 12.6)}),
    "VGG-16": (94.6, {1: (94.3, 94.5, 0.2), 2: (93.6, 94.4, 0.8), 3: (92.0, 94.5, 2.5), 4: (86.1, 94.7, 8.6)}),
}
PAPER_NAME = {"vgg6": "VGG-6", "vgg7_paper": "VGG-7", "vgg11": "VGG-11", "vgg16": "VGG-16"}
DEFAULT_RECIPES = ["paper=--protect paper", "joint=--protect joint"]
RESULT = "table3-result.json"  # written into a build directory once the run is evaluated


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """'NAME=FLAGS' -> (NAME, flags); a bare 'FLAGS' is named after its flags."""
    name, sep, flags = text.partition("=")
    if not sep or name.strip().startswith("-"):
        name, flags = re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_"), text
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise SystemExit(f"table3: --recipe '{text}': name '{name}' must be letters, digits, '.', '_' or '-'")
    return name, shlex.split(flags)


def schedule_key(args) -> str:
    """The training schedule, as part of the build path: runs with other schedules never mix."""
    n = "all" if args.limit_train is None else args.limit_train
    return f"e{args.epochs}-n{n}-b{args.batch_size}-lr{args.lr:g}" + ("-fast" if args.fast else "")


def cli(*argv: str, log: Path | None = None) -> subprocess.CompletedProcess:
    """`mirrorc ARGV` from this checkout in a subprocess (its own memory; a crash ends one run only);
    stderr (progress) goes to `log` when given."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "a") if log else open(os.devnull, "w") as err:
        return subprocess.run(
            [sys.executable, "-m", "mirrorc.cli", *argv],
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=err,
        )


def epoch_seconds(build: Path) -> dict:
    """Mean seconds per training epoch of the MirrorNet and of the baseline, from training.json."""
    training = json.loads((build / "training.json").read_text())
    return {
        k: round(statistics.mean(h["seconds"] for h in training[k]), 1) if training.get(k) else None
        for k in ("mirrornet", "original")
    }


def run_one(model_path: Path, build: Path, channels: int, seed: int, flags: list[str], args, baseline: bool) -> dict:
    """Compile (resuming from checkpoints if any) unless built, evaluate, write RESULT; returns it."""
    log = build.parent / f"{build.name}.log"
    build.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if not (build / "mirrornet.onnx").exists():
        argv = [
            "compile",
            str(model_path),
            "--data",
            args.data,
            "-C",
            str(channels),
            "-o",
            str(build),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--lr",
            str(args.lr),
            "--seed",
            str(seed),
            "--resume",
            *flags,
        ]
        argv += ["--limit-train", str(args.limit_train)] if args.limit_train else []
        argv += ["--fast"] if args.fast else []
        argv += ["--device", args.device]
        argv += [] if baseline else ["--no-baseline"]
        if args.data_dir:
            argv += ["--data-dir", args.data_dir]
        if cli(*argv, log=log).returncode != 0:
            raise RuntimeError(f"mirrorc {shlex.join(argv)} failed; see {log}")
    argv = ["evaluate", str(build), "--data", args.data, "--no-split-check", "--json"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    done = cli(*argv, log=log)
    if done.returncode != 0:
        raise RuntimeError(f"mirrorc {shlex.join(argv)} failed; see {log}")
    result = json.loads(done.stdout)
    report = json.loads((build / "report.json").read_text())
    result.update(
        epoch_seconds=epoch_seconds(build),
        seconds=round(time.perf_counter() - began, 1),
        cpm_macs=report["totals"].get("cpm_macs"),
        backbone_macs=report["totals"].get("backbone_macs"),
        tee_bytes=report["memory"]["total"],
        latency_single_us=round(report["latency_us"]["single"]),
    )
    (build / RESULT).write_text(json.dumps(result, indent=2))
    return result


def collect(args, recipes, models, channels, seeds) -> list[dict]:
    """Every finished run of the grid, one dict per run."""
    rows = []
    base = Path(args.out) / schedule_key(args)
    for m in models:
        for name, flags in recipes:
            for c in channels:
                for s in seeds:
                    f = base / m / name / f"C{c}-s{s}" / RESULT
                    if f.exists():
                        rows.append(
                            {
                                "model": m,
                                "recipe": name,
                                "flags": shlex.join(flags),
                                "channels": c,
                                "seed": s,
                                **json.loads(f.read_text()),
                            }
                        )
    return rows


def table(rows: list[dict], args, recipes, models, channels, seeds) -> dict:
    """Per (model, recipe, C): mean over finished seeds; the input accuracy is per model."""

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return round(statistics.mean(vals), 2) if vals else None

    cells = []
    for m in models:
        original = mean([r["original_acc"] for r in rows if r["model"] == m])
        for name, flags in recipes:
            for c in channels:
                rs = [r for r in rows if (r["model"], r["recipe"], r["channels"]) == (m, name, c)]
                paper_in, paper_rows = PAPER.get(PAPER_NAME.get(m, ""), (None, {}))
                cell = {
                    "model": m,
                    "paper_name": PAPER_NAME.get(m),
                    "recipe": name,
                    "flags": shlex.join(flags),
                    "channels": c,
                    "seeds_done": sorted(r["seed"] for r in rs),
                    "input_acc": original,
                    "paper": dict(
                        zip(("input_acc", "backbone_acc", "mirrornet_acc", "delta_p"), (paper_in, *paper_rows[c]))
                    )
                    if c in paper_rows
                    else None,
                }
                for k in ("backbone_acc", "mirrornet_acc", "delta_p"):
                    cell[k] = mean([r[k] for r in rs])
                cell["delta_p_spread"] = (
                    round(max(r["delta_p"] for r in rs) - min(r["delta_p"] for r in rs), 2) if len(rs) > 1 else None
                )
                cell["mirrornet_minus_input"] = (
                    round(cell["mirrornet_acc"] - original, 2)
                    if cell["mirrornet_acc"] is not None and original is not None
                    else None
                )
                secs = [r["epoch_seconds"]["mirrornet"] for r in rs if r["epoch_seconds"]["mirrornet"] is not None]
                cell["seconds_per_epoch"] = round(statistics.mean(secs), 1) if secs else None
                cell["cpm_macs"] = rs[0]["cpm_macs"] if rs else None
                cell["tee_bytes"] = rs[0]["tee_bytes"] if rs else None
                cells.append(cell)
    base_secs = {m: mean([r["epoch_seconds"]["original"] for r in rows if r["model"] == m]) for m in models}
    return {
        "schedule": {
            "epochs": args.epochs,
            "train_images": args.limit_train or "all",
            "seeds": seeds,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "fast": args.fast,
            "data": args.data,
        },
        "baseline_seconds_per_epoch": base_secs,
        "cells": cells,
        "runs": rows,
    }


def print_table(t: dict, file=None) -> None:
    print = functools.partial(builtins.print, file=file or sys.stdout)
    s = t["schedule"]
    print(
        f"\nTable III, {s['data']} (ours: {s['epochs']} epochs, {s['train_images']} training images, "
        f"seeds {','.join(map(str, s['seeds']))}, batch {s['batch_size']}, lr {s['lr']:g}"
        f"{', channels_last + bf16 (--fast)' if s['fast'] else ''}; test accuracy by onnxruntime on the full "
        "test set; ours = mean over the finished seeds)"
    )
    print(
        f"{'model':<11}{'recipe':<12}{'C':>2} | {'paper: input  backbone  MirrorNet    Δp':<39} | "
        f"{'ours: input  backbone  MirrorNet    Δp  MirrorNet-input  s/epoch  seeds'}"
    )
    for c in t["cells"]:
        p = c["paper"]
        paper = (
            f"{p['input_acc']:11.1f} {p['backbone_acc']:9.1f} {p['mirrornet_acc']:10.1f} {p['delta_p']:5.1f}"
            if p
            else f"{'(not in the paper)':>38}"
        )
        if not c["seeds_done"]:
            ours = "(not finished)"
        else:

            def f(v, w):
                return f"{v:{w}.2f}" if v is not None else f"{'-':>{w}}"

            spread = f"±{c['delta_p_spread'] / 2:.1f}" if c["delta_p_spread"] is not None else ""
            ours = (
                f"{f(c['input_acc'], 10)} {f(c['backbone_acc'], 9)} {f(c['mirrornet_acc'], 10)} "
                f"{f(c['delta_p'], 5)}{spread} {f(c['mirrornet_minus_input'], 15)} "
                f"{f(c['seconds_per_epoch'], 8)}  {len(c['seeds_done'])}"
            )
        print(f"{c['paper_name'] or c['model']:<11}{c['recipe']:<12}{c['channels']:>2} | {paper:<39} | {ours}")
    for name, r in sorted({(c["recipe"], c["flags"]) for c in t["cells"]}):
        print(f"  recipe {name}: mirrorc compile {r}")


def main() -> None:
    from mirrorc.train.grid import add_grid_arguments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        default="vgg6,vgg7_paper,vgg11,vgg16",
        help=f"examples/make_models.py builders ({', '.join(MODELS)})",
    )
    ap.add_argument("--channels", default="1,2,3,4")
    ap.add_argument(
        "--recipe",
        action="append",
        default=None,
        metavar="'NAME=FLAGS'",
        help="a recipe: name=`mirrorc compile` flags; repeatable  [default: " + "; ".join(DEFAULT_RECIPES) + "]",
    )
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--limit-train", type=int, default=10000, help="train on the first N images (0 = all)")
    ap.add_argument("--seeds", type=int, default=1, help="runs per cell, seeds 0..N-1")
    ap.add_argument("--fast", action="store_true", help="channels_last + bf16 autocast (mirrorc compile --fast)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--data-dir", default=None, help="default: $MIRRORC_DATA")
    ap.add_argument("--out", default="build/table3", help="the runs' build directories")
    ap.add_argument(
        "--json-out", default=None, help="write the table's JSON here  [default: results/table3.json via record.py]"
    )
    ap.add_argument("--print-only", action="store_true", help="print the table from finished runs, run nothing")
    add_grid_arguments(ap, "the compiles")
    args = ap.parse_args()
    args.limit_train = args.limit_train or None

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"table3: --models: unknown {', '.join(unknown)} (known: {', '.join(MODELS)})")
    recipes = [parse_recipe(r) for r in (args.recipe or DEFAULT_RECIPES)]
    if len({n for n, _ in recipes}) != len(recipes):
        raise SystemExit("table3: --recipe: two recipes have the same name")
    channels = [int(c) for c in args.channels.split(",")]
    seeds = list(range(args.seeds))

    def write() -> dict:
        t = table(collect(args, recipes, models, channels, seeds), args, recipes, models, channels, seeds)
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(t, indent=2))
        else:
            from record import write_results

            write_results(
                "table3", "the paper's Table III on CIFAR-10: input, backbone, MirrorNet, Δp per model, recipe, C", t
            )
        return t

    if not args.print_only:
        from mirrorc.errors import MirrorcError
        from mirrorc.train.grid import check_ray, run_tasks

        try:
            check_ray(args.ray, args.device)
        except MirrorcError as e:
            raise SystemExit(f"table3: {e}") from None
        base = Path(args.out) / schedule_key(args)
        jobs, names = [], []
        for m in models:
            model_path = base / "models" / f"{m}.onnx"
            if not model_path.exists():
                import onnx

                model_path.parent.mkdir(parents=True, exist_ok=True)
                onnx.save(MODELS[m](), model_path)
            for s in seeds:
                # the baseline goes with the first unfinished run of (model, seed): decided here, so the
                # runs depend on nothing but their arguments and may run in any order
                needs_baseline = not any(
                    r["seed"] == s and r["original_acc"] is not None
                    for r in collect(args, recipes, [m], channels, seeds)
                )
                for name, flags in recipes:
                    for c in channels:
                        build = base / m / name / f"C{c}-s{s}"
                        if (build / RESULT).exists():
                            continue
                        jobs.append((model_path, build, c, s, flags, args, needs_baseline))
                        names.append(f"{m} {name} C={c} seed {s}")
                        needs_baseline = False
        run_tasks(
            run_one,
            jobs,
            ray=args.ray,
            device=args.device,
            desc="table3",
            names=names,
            on_result=lambda i, result: print_table(write(), file=sys.stderr),  # progress
        )
    print_table(write())


if __name__ == "__main__":
    main()
