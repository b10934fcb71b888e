"""`mirrorc compile`: build, train and write the deployment (mirrorc.compile)."""

from __future__ import annotations

import click

from mirrorc.cli.common import echo_json, user_errors
from mirrorc.train.protect import STRATEGIES
from mirrorc.train.protect import get as get_strategy


def _log(message: str) -> None:
    click.echo(message, err=True)


def _resume_command() -> str:
    """The command line that was run, with --resume (how to continue after Ctrl-C)."""
    import shlex
    import sys

    args = sys.argv[1:]
    return shlex.join(["mirrorc", *args, *([] if "--resume" in args else ["--resume"])])


def _rate(spec: str) -> tuple[int, int]:
    """--rate-limit RATE or RATE/BURST as (rate, burst); burst 0 = one second's worth."""
    from mirrorc.errors import MirrorcError

    rate, _, burst = spec.partition("/")
    if not rate.isdigit() or not (burst.isdigit() or burst == ""):
        raise MirrorcError(f"--rate-limit {spec!r}: expected RATE or RATE/BURST (whole labels per second)")
    return int(rate), int(burst or 0)


def register(main: click.Group) -> None:
    @main.command("compile")
    @click.argument("model", type=click.Path(path_type=str))
    @click.option(
        "--data",
        required=True,
        help="mnist, fashion-mnist, cifar10, or a path (IDX directory, "
        "train/ test/ image folders or a tarball of them, .npz)",
    )
    @click.option("--data-dir", default=None, help="folder holding the named datasets  [default: $MIRRORC_DATA]")
    @click.option(
        "--protect",
        default="joint",
        show_default=True,
        type=click.Choice(list(STRATEGIES)),
        help="protection strategy: joint = backbone and CPM trained together, the backbone penalised "
        "so that alone it is useless; paper = the paper's plain recipe (the backbone alone stays good); "
        "random-backbone = the backbone keeps its random weights, only a wider CPM learns (a stolen "
        "backbone is worth no more than a fresh init; costs TEE memory and time: see `mirrorc partition "
        "--report --protect`); public-backbone = MODEL is a public pretrained network, kept frozen as "
        "the backbone, only the CPM learns the private task (a stolen backbone is the public model)",
    )
    @click.option(
        "-C",
        "--channels",
        default=None,
        type=click.IntRange(1),
        help="CPM channels C  [default: the strategy's: 2 for joint, half the widest tapped feature "
        "map for random-backbone]",
    )
    @click.option(
        "-o",
        "--output",
        "out_dir",
        default="build",
        show_default=True,
        type=click.Path(file_okay=False),
        help="build directory (written atomically)",
    )
    @click.option("--epochs", default=10, show_default=True, type=click.IntRange(0))
    @click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
    @click.option("--lr", default=1e-3, show_default=True, type=float, help="Adam learning rate")
    @click.option(
        "--lr-schedule",
        default="constant",
        show_default=True,
        type=click.Choice(["constant", "cosine"]),
        help="cosine: the learning rate decays to 0 over the run (the baseline gets the same schedule)",
    )
    @click.option(
        "--backbone-penalty",
        default=None,
        type=click.FloatRange(0),
        help="weight W of the term W * -log(1 - p_backbone(right class)) that makes the backbone alone "
        "wrong (a larger accuracy gap); 0 = plain cross-entropy  [default: the strategy's: 0.3 for "
        "joint, 0 for paper and random-backbone]",
    )
    @click.option(
        "--penalty-kind",
        default="wrong",
        show_default=True,
        type=click.Choice(["wrong", "uniform"]),
        help="wrong: -log(1 - p_y), makes the backbone's answer wrong; uniform: cross-entropy to the "
        "uniform distribution, makes its output uninformative",
    )
    @click.option(
        "--select",
        default=None,
        help="which backbone channels feed the CPM (compiler-core option; default: its default)",
    )
    @click.option("--seed", default=0, show_default=True, type=int, help="seeds CPM init, data order and training")
    @click.option(
        "--init",
        default=None,
        type=click.Choice(["random", "keep"]),  # passes.mirror.INIT_MODES (not imported: the CLI starts light)
        help="backbone's starting weights: random = trained from scratch (the paper); keep = the model's "
        "own trained weights, fine-tuned with the CPM added (original.onnx starts from them too)  "
        "[default: random; keep under --protect public-backbone]",
    )
    @click.option(
        "--val-fraction",
        default=0.1,
        show_default=True,
        type=click.FloatRange(0, 1, max_open=True),
        help="part of the training set held out for validation",
    )
    @click.option("--limit-train", default=None, type=click.IntRange(1), help="train on the first N images only")
    @click.option("--tee-memory", default=None, help="TEE memory limit (e.g. 16M) for the report and the TA")
    @click.option(
        "--query-budget",
        default=0,
        show_default=True,
        type=click.IntRange(0),
        help="labels the TA answers over its lifetime, counted in GP persistent storage across sessions and "
        "reboots (caps model extraction through the label oracle); 0 = no budget",
    )
    @click.option(
        "--session-cap",
        default=2,  # guard.SESSION_CAP (not imported here: it pulls in onnx; tests/test_ta_access.py checks)
        show_default=True,
        type=click.IntRange(0),
        help="sessions one client identity (login type + client UUID) may hold in the TA at once; 0 = no cap",
    )
    @click.option(
        "--allow-client",
        default="",
        help="only this client may open a TA session: public|user|group|application, alone or with :UUID "
        "(user/group also :UID/:GID); default anyone",
    )
    @click.option(
        "--rate-limit",
        default="0",
        show_default=True,
        help="labels per second the TA answers over every session, RATE or RATE/BURST; 0 = no limit",
    )
    @click.option("--no-baseline", is_flag=True, help="do not train original.onnx (the unprotected comparison)")
    @click.option(
        "--fast",
        is_flag=True,
        help="channels_last + bf16 autocast (faster for wide conv nets on CPUs with bf16 support; slightly less exact)",
    )
    @click.option("--resume", is_flag=True, help="continue from the per-epoch checkpoints of an interrupted run")
    @click.option(
        "--device",
        default="auto",
        show_default=True,
        help="where to train: auto (a CUDA GPU when there is one), cpu, cuda or cuda:N; CUDA trains in mixed precision",
    )
    @click.option(
        "--nproc",
        default=1,
        show_default=True,
        type=click.IntRange(1),
        help="train with N local processes (DistributedDataParallel; the global batch and lr unchanged); "
        "across machines run the same command under torchrun instead (docs/ARCHITECTURE.md)",
    )
    @click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
    @user_errors
    def compile_cmd(
        model: str,
        data: str,
        data_dir: str | None,
        protect: str,
        channels: int | None,
        out_dir: str,
        epochs: int,
        batch_size: int,
        lr: float,
        lr_schedule: str,
        backbone_penalty: float | None,
        penalty_kind: str,
        select: str | None,
        seed: int,
        init: str | None,
        val_fraction: float,
        limit_train: int | None,
        tee_memory: str | None,
        query_budget: int,
        session_cap: int,
        allow_client: str,
        rate_limit: str,
        no_baseline: bool,
        fast: bool,
        resume: bool,
        device: str,
        nproc: int,
        as_json: bool,
    ) -> None:
        """Compile MODEL (ONNX classifier) into a MirrorNet deployment in OUTPUT: train it on DATA
        (backbone and CPM jointly, or the CPM alone under --protect random-backbone), then write
        mirrornet.onnx, original.onnx, normal.onnx, ta/, host/, plan.json and the report."""
        import functools

        from mirrorc.backend.guard import access
        from mirrorc.compile import compile_model
        from mirrorc.train.distributed import run_local
        from mirrorc.train.loop import TrainConfig

        if backbone_penalty is None:
            backbone_penalty = get_strategy(protect).backbone_penalty
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            seed=seed,
            backbone_penalty=backbone_penalty,
            penalty_kind=penalty_kind,
            val_fraction=val_fraction,
            fast=fast,
            device=device,
        )
        run = functools.partial(
            compile_model,
            model,
            out_dir,
            data=data,
            data_dir=data_dir,
            channels=channels,
            protect=protect,
            select=select,
            seed=seed,
            init=init,
            config=config,
            limit_train=limit_train,
            baseline=not no_baseline,
            tee_memory=tee_memory,
            query_budget=query_budget,
            access=access(session_cap, allow_client, *_rate(rate_limit)),
            resume=resume,
            log=None if as_json else _log,
        )
        try:
            summary = run_local(nproc, device, run)
        except KeyboardInterrupt:
            _log(f"mirrorc: interrupted; the finished epochs are checkpointed, resume with: {_resume_command()}")
            raise SystemExit(130) from None
        if not summary:  # a rank other than 0 under torchrun: rank 0 reports
            return
        if as_json:
            echo_json(summary)
            return
        click.echo(f"wrote {summary['build']}/: {', '.join(summary['files'])}")
        if summary["val_mirrornet_acc"] is None:  # no epoch ran, or no validation split
            click.echo("validation: none (no epoch trained or no validation split)")
            return
        line = f"validation: MirrorNet {summary['val_mirrornet_acc']}%, backbone alone {summary['val_backbone_acc']}%"
        if summary["val_original_acc"] is not None:
            line += f", unprotected {summary['val_original_acc']}%"
        click.echo(line)
