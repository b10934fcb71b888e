"""`mirrorc attack`: measure what a thief who steals the normal world gets (mirrorc.attack.thief)."""

from __future__ import annotations

import os

import click

from mirrorc.attack.names import ALL_ATTACKS
from mirrorc.cli.common import echo_json, user_errors
from mirrorc.errors import MirrorcError


def _budgets(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MirrorcError(f"--budget: '{text}' is not a comma-separated list of image counts") from None
    if not values or any(v <= 0 for v in values):
        raise MirrorcError(f"--budget: '{text}' needs positive image counts")
    return values


def register(main: click.Group) -> None:
    @main.command("attack")
    @click.argument("build_dir", type=click.Path(file_okay=False, path_type=str))
    @click.option("--data", "data", required=True, help="dataset name (mnist, fashion-mnist, cifar10) or path")
    @click.option(
        "--data-dir",
        default=lambda: os.environ.get("MIRRORC_DATA", "."),
        show_default="$MIRRORC_DATA",
        help="folder holding the datasets",
    )
    @click.option(
        "--budget",
        "budget",
        default="600,3000",
        show_default=True,
        help="labelled images (and oracle queries) per attack, comma-separated; drawn from the training split",
    )
    @click.option("--seeds", default=3, show_default=True, type=click.IntRange(1, 100), help="seeds per budget")
    @click.option("--epochs", default=20, show_default=True, type=click.IntRange(1), help="epochs per training run")
    @click.option(
        "--min-steps",
        default=500,
        show_default=True,
        type=click.IntRange(1),
        help="at least this many optimizer steps per run (so from-scratch converges on small budgets)",
    )
    @click.option(
        "--lr-grid",
        default="3e-4,1e-3,3e-3",
        show_default=True,
        help="learning rates tried on the attacker's validation part",
    )
    @click.option(
        "--attacks",
        default=",".join(ALL_ATTACKS),
        show_default=True,
        help="which attacks to run, comma-separated; 'extract' (not by default: it spends (K-1)*~17 TA "
        "queries per image) recovers the CPM's logits by binary search on the backbone logits and clones the CPM",
    )
    @click.option(
        "--threads",
        default=0,
        show_default=True,
        type=click.IntRange(0),
        help="torch threads for training (0: torch's default; 1 is faster on a busy machine)",
    )
    @click.option(
        "--device",
        default="auto",
        show_default=True,
        help="where the attacks train: auto (a CUDA GPU when there is one), cpu, cuda or cuda:N",
    )
    @click.option(
        "--ray",
        "ray_address",
        default=None,
        metavar="auto|ADDRESS",
        help="run the grid's trainings as Ray tasks (one CPU and one torch thread each): auto joins this "
        "machine's Ray cluster or starts a local one; needs pip install 'mirrorc[ray]'. Same results as without",
    )
    @click.option(
        "--save",
        "save_path",
        default=None,
        type=click.Path(dir_okay=False),
        help="also write the full report as JSON to this file",
    )
    @click.option("--json", "as_json", is_flag=True, help="print the full report as JSON")
    @user_errors
    def attack_cmd(
        build_dir: str,
        data: str,
        data_dir: str,
        budget: str,
        seeds: int,
        epochs: int,
        min_steps: int,
        lr_grid: str,
        attacks: str,
        threads: int,
        device: str,
        ray_address: str | None,
        save_path: str | None,
        as_json: bool,
    ) -> None:
        """Steal the normal world of BUILD_DIR and measure every attack against training from scratch.

        The attacker holds normal.onnx (architecture, weights, tapped channels), a labelled budget from
        the training split and label-only queries to the protected model. The last line, the head
        start, is what stealing the backbone is worth over not stealing it."""
        from mirrorc.attack import thief as atk

        budgets = _budgets(budget)
        try:
            grid = tuple(float(v) for v in lr_grid.split(",") if v.strip())
        except ValueError:
            raise MirrorcError(f"--lr-grid: '{lr_grid}' is not a comma-separated list of numbers") from None
        if not grid or any(v <= 0 for v in grid):
            raise MirrorcError(f"--lr-grid: '{lr_grid}' needs positive learning rates")
        if threads:
            import torch

            torch.set_num_threads(threads)
        from mirrorc.train.distributed import resolve_device

        resolve_device(device)  # fail on a bad --device or --ray before any work
        if ray_address:
            from mirrorc.train.grid import check_ray

            check_ray(ray_address, device)
        view = atk.load_view(build_dir)  # fail on a bad build before reading the dataset
        from mirrorc.train.data import load_dataset

        dataset = load_dataset(data, data_dir=data_dir, input_shape=view.input_shape)
        schedule = atk.Schedule(epochs=epochs, min_steps=min_steps, lr_grid=grid, device=device)
        report = atk.run(
            build_dir,
            dataset,
            budgets=budgets,
            seeds=seeds,
            schedule=schedule,
            attacks=tuple(a.strip() for a in attacks.split(",") if a.strip()),
            ray=ray_address,
        )
        if save_path:
            import json

            from mirrorc.outdir import atomic_file

            with atomic_file(save_path) as tmp:
                tmp.write_text(json.dumps(report, indent=1))
        if as_json:
            echo_json(report)
            return
        table, head = atk.format_report(report)
        click.echo(table)
        click.secho(head, bold=True)
