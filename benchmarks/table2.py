"""Reproduce the MirrorNet paper's Table II: LeNet-5 protected with C = 1..4 on MNIST, Fashion-MNIST and
CIFAR-10; test accuracy of the unprotected network, the BackboneNet alone and the MirrorNet, and Δp.
Our row is printed beside the paper's.

    MIRRORC_DATA=/work/shared/datasets python benchmarks/table2.py [--epochs 5] [--limit-train N] \
        [--channels 1,2,3,4] [--datasets mnist,fashion-mnist,cifar10] [--penalty 1.0] [--out results.json] \
        [--device auto] [--ray auto|ADDRESS]

Every cell goes through the same code as `mirrorc compile` + `mirrorc evaluate` (compile_model, then
evaluate() by onnxruntime on the written ONNX files). The unprotected network ("input network") is
trained once per dataset, from the C = 1 MirrorNet's initial backbone weights, with the same loss,
epochs and data. `--penalty W` adds, per dataset, rows with `--backbone-penalty W` at the channel
counts of `--penalty-channels` (default 2). Results are appended to `--out` as they come, and cells
already there are not recomputed, so an interrupted run can be continued. The cells are independent
compiles (mirrorc.train.grid): one after another by default, as Ray tasks on this machine with
`--ray auto` (one CPU and one torch thread each; the cells' models and builds are in a local temporary
folder, so a Ray cluster of several machines does not fit here). `--device` is where they train.
"""

from __future__ import annotations

import argparse
import builtins
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import write_results  # noqa: E402

from examples.make_models import lenet5  # noqa: E402

# Table II of the paper: input network accuracy, then per C (BackboneNet, MirrorNet, Δp)
PAPER = {
    "mnist": (98.7, {1: (62.2, 98.4, 36.2), 2: (54.4, 98.3, 43.9), 3: (53.5, 98.6, 45.1), 4: (40.5, 98.2, 57.7)}),
    "fashion-mnist": (
        89.2,
        {1: (57.1, 88.8, 31.7), 2: (55.1, 88.2, 33.1), 3: (53.3, 88.1, 34.8), 4: (51.5, 89.2, 37.7)},
    ),
    "cifar10": (62.8, {1: (39.6, 62.7, 23.1), 2: (37.0, 62.5, 25.5), 3: (36.7, 62.8, 26.1), 4: (35.8, 63.1, 27.3)}),
}
NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR-10"}


def lenet5_for(dataset: str, work: Path) -> Path:
    """LeNet-5 as in the paper's Fig. 3: 28x28 grey for (Fashion-)MNIST, 32x32 RGB for CIFAR-10."""
    import onnx

    from examples.make_models import _Builder

    path = work / f"lenet5-{dataset}.onnx"
    if dataset != "cifar10":
        onnx.save(lenet5(), path)
        return path
    b = _Builder(0)
    x = b.pool(b.op("Relu", b.conv("input", 3, 6, 5, pad=0)))  # 32 -> 28 -> 14
    x = b.pool(b.op("Relu", b.conv(x, 6, 16, 5, pad=0)))  # 14 -> 10 -> 5
    x = b.op("Flatten", x, axis=1)
    x = b.op("Relu", b.dense(x, 400, 120))
    x = b.op("Relu", b.dense(x, 120, 84))
    x = b.op("Softmax", b.dense(x, 84, 10), axis=1)
    onnx.save(b.model("lenet5_cifar", [3, 32, 32], x, "probabilities", 10), path)
    return path


def run_cell(model: Path, dataset: str, channels: int, penalty: float, args, work: Path, baseline: bool) -> dict:
    from mirrorc.compile import compile_model
    from mirrorc.evaluate import evaluate, model_input_shape
    from mirrorc.train.data import load_dataset
    from mirrorc.train.loop import TrainConfig

    build = work / f"{dataset}-C{channels}-W{penalty:g}"
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        backbone_penalty=penalty,
        penalty_kind=args.penalty_kind,
        fast=False,
        device=args.device,
    )
    began = time.perf_counter()
    compile_model(
        model,
        build,
        data=dataset,
        data_dir=args.data_dir,
        channels=channels,
        seed=args.seed,
        config=config,
        limit_train=args.limit_train,
        baseline=baseline,
        log=lambda m: print("   ", m, file=sys.stderr, flush=True),
    )
    data = load_dataset(
        dataset, data_dir=args.data_dir, input_shape=model_input_shape(build / "mirrornet.onnx"), limit_train=1
    )
    result = evaluate(build, data.x_test, data.y_test, split_check=False)
    result.update(
        dataset=dataset,
        channels=channels,
        penalty=penalty,
        penalty_kind=args.penalty_kind,
        epochs=args.epochs,
        limit_train=args.limit_train,
        seconds=round(time.perf_counter() - began, 1),
    )
    return result


def main():
    from mirrorc.train.grid import add_grid_arguments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="mnist,fashion-mnist,cifar10")
    ap.add_argument("--channels", default="1,2,3,4")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--penalty", type=float, default=None, help="also run --backbone-penalty W rows")
    ap.add_argument("--penalty-channels", default="2")
    ap.add_argument("--penalty-kind", default="wrong", choices=["wrong", "uniform"])
    ap.add_argument("--data-dir", default=None, help="default: $MIRRORC_DATA")
    ap.add_argument("--out", default="table2-results.json")
    ap.add_argument("--print-only", action="store_true", help="print the table from --out, run nothing")
    add_grid_arguments(ap, "the cells", " on this machine")
    args = ap.parse_args()

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else []
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    channels = [int(c) for c in args.channels.split(",")]
    cells = [(d, c, 0.0) for d in datasets for c in channels]
    if args.penalty:
        cells += [(d, int(c), args.penalty) for d in datasets for c in args.penalty_channels.split(",")]

    def done(d, c, w):
        return find(results, d, c, w, args)

    if not args.print_only:
        from mirrorc.errors import MirrorcError
        from mirrorc.train.grid import check_ray, run_tasks

        try:
            check_ray(args.ray, args.device)
        except MirrorcError as e:
            raise SystemExit(f"table2: {e}") from None
        with tempfile.TemporaryDirectory(prefix="mirrorc-table2-") as tmp:
            work = Path(tmp)
            todo = [cell for cell in cells if not done(*cell)]
            # the unprotected network once per dataset, with its first MirrorNet to run: decided here,
            # so a cell depends on nothing but its arguments and the cells may run in any order
            with_baseline = set()
            for d, c, w in todo:
                has = any(
                    r["dataset"] == d
                    and r.get("original_acc") is not None
                    and r["epochs"] == args.epochs
                    and r["limit_train"] == args.limit_train
                    for r in results
                )
                if not has and not any(b[0] == d for b in with_baseline):
                    with_baseline.add((d, c, w))
            models = {d: lenet5_for(d, work) for d in {d for d, _, _ in todo}}

            def finished(i: int, result: dict) -> None:
                results.append(result)
                out.write_text(json.dumps(results, indent=2))
                print_table(results, cells, args, file=sys.stderr)  # progress

            run_tasks(
                run_cell,
                [(models[d], d, c, w, args, work, (d, c, w) in with_baseline) for d, c, w in todo],
                ray=args.ray,
                device=args.device,
                desc="table2",
                names=[f"{d} C={c} penalty={w:g}" for d, c, w in todo],
                on_result=finished,
            )
    print_table(results, cells, args)
    if not args.print_only:  # --print-only measures nothing, so it records nothing
        write_results(
            "table2",
            "Table II, LeNet-5: test accuracy (%) of the unprotected network, the backbone alone "
            "and the MirrorNet, and Δp, beside the paper's",
            {
                "setup": {
                    "epochs": args.epochs,
                    "limit_train": args.limit_train,
                    "seed": args.seed,
                    "penalty_kind": args.penalty_kind,
                },
                "rows": [table_row(results, d, c, w, args) for d, c, w in cells],
            },
        )


def table_row(results, d, c, w, args) -> dict:
    """One printed row as results/table2.json holds it: ours (None when not run) and the paper's."""
    r = find(results, d, c, w, args)
    base = next(
        (
            x["original_acc"]
            for x in results
            if x["dataset"] == d
            and x.get("original_acc") is not None
            and x["epochs"] == args.epochs
            and x["limit_train"] == args.limit_train
        ),
        None,
    )
    p_in, p_rows = PAPER[d]
    pb, pm, pd = p_rows.get(c, (None, None, None)) if w == 0 else (None, None, None)
    return {
        "dataset": d,
        "C": c,
        "penalty": w,
        "input": base,
        "backbone": r and r["backbone_acc"],
        "mirrornet": r and r["mirrornet_acc"],
        "delta_p": r and r["delta_p"],
        "paper": {"input": p_in, "backbone": pb, "mirrornet": pm, "delta_p": pd} if pb is not None else None,
    }


def find(results, d, c, w, args):
    """The result for one cell (the penalty kind only matters when there is a penalty)."""
    kind = args.penalty_kind if w else None
    return next(
        (
            r
            for r in results
            if (r["dataset"], r["channels"], r["penalty"], r["epochs"], r["limit_train"])
            == (d, c, w, args.epochs, args.limit_train)
            and (r.get("penalty_kind", "wrong") if r["penalty"] else None) == kind
        ),
        None,
    )


def print_table(results, cells, args, file=None) -> None:
    print = functools.partial(builtins.print, file=file or sys.stdout)
    print(
        f"\nTable II, LeNet-5 (ours: {args.epochs} epochs, "
        f"{'all' if args.limit_train is None else args.limit_train} training images, seed {args.seed}; "
        "test accuracy by onnxruntime on the full test set)"
    )
    print(f"penalty kind: {args.penalty_kind}")
    print(
        f"{'dataset':<13}{'C':>2} {'W':>4} | {'paper: input  backbone  MirrorNet   Δp':<40}| "
        f"{'ours: input  backbone  MirrorNet   Δp   MirrorNet-input'}"
    )
    for d, c, w in cells:
        r = find(results, d, c, w, args)
        base = next(
            (
                x["original_acc"]
                for x in results
                if x["dataset"] == d
                and x.get("original_acc") is not None
                and x["epochs"] == args.epochs
                and x["limit_train"] == args.limit_train
            ),
            None,
        )
        p_in, p_rows = PAPER[d]
        pb, pm, pd = p_rows.get(c, (None, None, None))
        paper = (
            f"{p_in:11.1f} {pb:9.1f} {pm:10.1f} {pd:5.1f}"
            if w == 0 and pb is not None
            else f"{'(no penalty in the paper)':>38}"
        )
        if r is None:
            ours = "(not run)"
        else:
            gap = "" if base is None else f"{r['mirrornet_acc'] - base:+8.2f}"
            ours = (
                f"{base if base is not None else float('nan'):10.2f} {r['backbone_acc']:9.2f} "
                f"{r['mirrornet_acc']:10.2f} {r['delta_p']:5.1f} {gap}"
            )
        print(f"{NAMES[d]:<13}{c:>2} {w:>4g} | {paper:<40}| {ours}")


if __name__ == "__main__":
    main()
