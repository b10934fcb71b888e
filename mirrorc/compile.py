"""`mirrorc compile`: build the MirrorNet (compiler core), train it, train the unprotected baseline the
same way from the same initial weights, and write the build directory atomically (mirrornet.onnx,
original.onnx, report.txt/json, training.json and, through mirrorc.backend.secure_build, normal.onnx, ta/,
host/ and plan.json).

Per-epoch checkpoints live beside the build, in `.<build>.checkpoints/`, so an interrupted compile
leaves the build directory untouched yet `--resume` can pick up where it stopped; they are removed
once the build is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from mirrorc.errors import MirrorcError
from mirrorc.outdir import atomic_dir
from mirrorc.train.loop import TrainConfig, logits_tensor, require_torch, same_init, train
from passes import contract


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.checkpoints"


@contextlib.contextmanager
def _no_empty_dir(path: Path) -> Iterator[None]:
    """On failure, remove `path` if it is an empty directory: checkpoints worth resuming stay, an
    empty leftover beside the build does not."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            path.rmdir()  # only succeeds when empty
        raise


def compile_model(
    model_path: str | Path,
    out_dir: str | Path,
    *,
    data: str,
    data_dir: str | None = None,
    channels: int | None = None,
    protect: str = "joint",
    select: str | None = None,
    seed: int = 0,
    init: str | None = None,
    config: TrainConfig | None = None,
    limit_train: int | None = None,
    baseline: bool = True,
    tee_memory: str | int | None = None,
    query_budget: int = 0,
    access: dict | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Compile `model_path` into `out_dir` with the protection strategy `protect` (mirrorc.train.protect;
    `channels` defaults to the strategy's C); returns a summary (what `--json` prints). `init`: "random"
    trains the backbone from scratch (the paper), "keep" starts it, and original.onnx, from the
    model's own weights (fine-tuning a trained model); None = the strategy's own (random but for
    public-backbone). The TA's defences (mirrorc.backend.guard): the backbone-logit range check always,
    a lifetime budget of `query_budget` labels when > 0, and the session-open and rate defences `access`
    (guard.access(); None: its defaults, a per-client session cap)."""
    from mirrorc.backend import guard
    from mirrorc.pipeline import build_mirrornet
    from mirrorc.train import protect as strategies
    from mirrorc.train.data import load_dataset

    require_torch()  # fail before any work if training is impossible
    if query_budget < 0:
        raise MirrorcError(f"--query-budget: {query_budget} is negative (0 = no budget)")
    from mirrorc.train.distributed import join_from_env, resolve_device, world

    strategy = strategies.get(protect)
    init = strategy.starting_weights(init)
    config = replace(
        config or TrainConfig(seed=seed, backbone_penalty=strategy.backbone_penalty),
        freeze_backbone=strategy.freeze_backbone,
    )
    config.check()
    resolve_device(config.device)  # a bad --device fails before any work
    join_from_env(config.device)  # under torchrun; a no-op otherwise
    main_rank = world()[0] == 0
    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise MirrorcError(f"{model_path}: model file not found")
    if channels is None:
        channels = strategy.default_channels(model_path)
    tee_bytes = None
    if tee_memory is not None:
        from mirrorc.plan.report import parse_size

        tee_bytes = parse_size(tee_memory)

    options: dict[str, Any] = {"channels": channels, "seed": seed, "init": init}
    if select is not None:
        options["select"] = select
    initial, info = build_mirrornet(model_path, **options)
    num_classes = contract.num_classes(initial, str(model_path))
    input_shape = tuple(d.dim_value or 1 for d in initial.graph.input[0].type.tensor_type.shape.dim)
    dataset = load_dataset(
        data, data_dir=data_dir, input_shape=input_shape, limit_train=limit_train, num_classes=num_classes
    )

    ckpts = checkpoint_dir(out_dir)
    if main_rank and not resume:  # rank 0 alone writes checkpoints and the build
        shutil.rmtree(ckpts, ignore_errors=True)
    # no mkdir: the first checkpoint written creates the directory (atomic_file), and a failure
    # before then must not leave an empty one beside the build

    def fingerprint(model: onnx.ModelProto) -> str:
        # a checkpoint only resumes the same model on the same data
        h = hashlib.sha256(model.SerializeToString())
        h.update(json.dumps([data, limit_train, dataset.preprocessing.get("train_images")]).encode())
        return h.hexdigest()

    with _no_empty_dir(ckpts):
        trained = train(
            initial,
            dataset.x_train,
            dataset.y_train,
            config,
            logits=contract.MIRRORNET_LOGITS,
            backbone_logits=contract.BACKBONE_LOGITS,
            checkpoint=ckpts / "mirrornet.pt",
            resume=resume,
            fingerprint=fingerprint(initial),
            progress_desc="mirrornet",
            log=log,
        )
        original = None
        if baseline:
            # same_init copies the MirrorNet's backbone: the source's own weights under init="keep"
            source = same_init(onnx.load(str(model_path)), initial)
            # same loss as the paper's MirrorNet, no penalty: the unprotected model as its owner would train it
            base_config = TrainConfig(**{**trained.config, "backbone_penalty": 0.0, "freeze_backbone": False})
            original = train(
                source,
                dataset.x_train,
                dataset.y_train,
                base_config,
                logits=logits_tensor(source),
                checkpoint=ckpts / "original.pt",
                resume=resume,
                fingerprint=fingerprint(source),
                progress_desc="original",
                log=log,
            )

        if not main_rank:
            return {}
        with atomic_dir(out_dir) as tmp:
            mirrornet_bytes = trained.model.SerializeToString()
            (tmp / "mirrornet.onnx").write_bytes(mirrornet_bytes)
            if original is not None:
                (tmp / "original.onnx").write_bytes(original.model.SerializeToString())
            training = {
                "data": data,
                "protect": strategy.name,
                "channels": channels,
                "init": init,
                "preprocessing": dataset.preprocessing,
                "classes": dataset.classes,
                "config": trained.config,
                "limit_train": limit_train,
                "mirrornet": [vars(h) for h in trained.history],
                "original": [vars(h) for h in original.history] if original else None,
            }
            (tmp / "training.json").write_text(json.dumps(training, indent=2))
            report = _write_report(trained.model, tmp, tee_bytes, training, info.get("batch_relaxed"))
            defences = guard.logit_range(trained.model, dataset.x_train, query_budget=query_budget)
            defences.update(access if access is not None else guard.access())
            _write_secure_part(trained.model, tmp, tee_bytes, report, model_path, dataset.preprocessing, defences)
    shutil.rmtree(ckpts, ignore_errors=True)

    last = trained.last
    return {
        "build": str(out_dir),
        "model": str(model_path),
        "protect": strategy.name,
        "channels": channels,
        "init": init,
        "data": data,
        "train_images": int(len(dataset.y_train)),
        "epochs": config.epochs,
        "val_mirrornet_acc": _pct(last.val_acc if last else None),
        "val_backbone_acc": _pct(last.val_backbone_acc if last else None),
        "val_original_acc": _pct(original.last.val_acc if original and original.last else None),
        "preprocessing": dataset.preprocessing,
        "files": sorted(p.name for p in out_dir.iterdir()),
    }


def _pct(v: float | None) -> float | None:
    return None if v is None else round(100.0 * v, 2)


def _write_report(
    model: onnx.ModelProto, tmp: Path, tee_bytes: int | None, training: dict, batch_relaxed: int | None = None
) -> dict:
    from mirrorc.plan.report import build_report, format_report

    report = build_report(model, tee_memory=tee_bytes)
    report["batch_relaxed"] = batch_relaxed  # the source's fixed batch, made symbolic by canonicalize
    last = training["mirrornet"][-1] if training["mirrornet"] else None
    report["training"] = {
        "data": training["data"],
        "protect": training["protect"],
        "init": training["init"],
        "preprocessing": training["preprocessing"],
        "config": training["config"],
        "last_epoch": last,
    }
    (tmp / "report.json").write_text(json.dumps(report, indent=2))
    prep = training["preprocessing"]
    lines = [format_report(report).rstrip(), ""]
    if batch_relaxed is not None:
        lines += [f"Input: the source fixes the batch at {batch_relaxed}; relaxed to any batch (N)", ""]
    lines += [
        "Training",
        f"  protection: {training['protect']}, C = {training['channels']}",
        "  initial weights: "
        + ("the model's own (--init keep)" if training["init"] == "keep" else "random, from scratch (--init random)"),
        f"  data: {training['data']} ({prep.get('train_images')} training images before the validation split)",
        "  preprocessing: " + "; ".join(prep.get("steps", [])),
        f"  mean {prep.get('mean')} std {prep.get('std')} (feed deployed inputs the same way)",
    ]
    if last:
        lines.append(
            f"  after {last['epoch']} epochs: validation MirrorNet {100 * last['val_acc']:.2f}%"
            f", backbone alone {100 * last['val_backbone_acc']:.2f}%"
            if last["val_acc"] is not None
            else f"  after {last['epoch']} epochs (no validation split)"
        )
    (tmp / "report.txt").write_text("\n".join(lines) + "\n")
    return report


def _write_secure_part(
    model: onnx.ModelProto,
    tmp: Path,
    tee_bytes: int | None,
    report: dict,
    model_path: Path,
    preprocessing: dict,
    defences: dict | None = None,
) -> dict:
    """THE call site for the secure world: split, lower the CPM to C, write ta/, host/, normal.onnx;
    plan.json combines its fields with the emulator's figures."""
    from mirrorc.backend.secure_build import build_secure

    fields = build_secure(model, tmp, tee_memory=tee_bytes, defences=defences)
    # preprocessing: how inputs must be prepared (mirrorc run applies it to images)
    plan = {"format": contract.PLAN_FORMAT, "model": model_path.name, **fields, "preprocessing": preprocessing}
    plan["emulator"] = {"device": report.get("device"), "latency_us": report.get("latency_us")}
    contract.validate_plan(plan, tmp / "plan.json")  # what the runtime will check when it loads it
    (tmp / "plan.json").write_text(json.dumps(plan, indent=2))
    return plan
