"""Joint training of a MirrorNet (backbone + CPM) or of a plain classifier, on an ONNX graph.

The loss is cross-entropy on the trained logits (for a MirrorNet, `mirrornet_logits`, as in the
paper). With the plain loss nothing asks the backbone to be poor, and it is not: LeNet-5 on MNIST
keeps ~91-94% on its own (benchmarks/table2.py). `backbone_penalty` W > 0 adds W * penalty on
`backbone_logits`, so the accuracy gap Δp is chosen rather than hoped for:

- "wrong" (default): -log(1 - softmax(backbone_logits)[y]) pushes the backbone's probability for the
  right class to 0 and stops pulling once it is wrong. MNIST, C=2, W=0.3, 8k images, 3 epochs:
  backbone 0.1%, MirrorNet 96.2% (its arg-min is no better: 0.04%, but the right class is mostly
  ranked 2nd-4th).
- "uniform": cross-entropy to the uniform distribution flattens the backbone's output (logit std
  0.2); same run: backbone 26%, MirrorNet 96.7%. A weaker gap for the same weight.

Adam, seeded: the same seed, data and model give the same weights. A checkpoint is written after
every epoch; `resume` continues from it.

Where it runs is mirrorc.train.distributed's: `device` (on CUDA with automatic mixed precision: bf16
where the GPU has it, else fp16 with a GradScaler, as torch.amp documents) and, inside a process
group, DistributedDataParallel: each rank trains on its part of every global batch, rank 0 alone
writes checkpoints and logs, the epoch figures are summed over the ranks. On CPU in one process
nothing changes: the same weights, bit for bit.

`fit` is the one training loop of mirrorc: `train` here, the attacks (mirrorc.attack.thief) and the
probe trainer (mirrorc.attack.defense) each bring their own batch order, loss, optimiser and schedule
to it. What is trainable is the module's (OnnxModule(trainable=...)), and a frozen BatchNorm keeps its
statistics there.
"""

from __future__ import annotations

import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from mirrorc.errors import MirrorcError
from passes.mirror import is_cpm

if TYPE_CHECKING:
    import torch

    # for annotations inside functions where `torch` is a local (require_torch)
    from torch import Tensor
    from torch import dtype as TorchDtype
    from torch.nn import Module

TORCH_HINT = (
    "training needs torch: install the CPU build first (pip install torch==2.13.0 "
    "--index-url https://download.pytorch.org/whl/cpu), then pip install 'mirrorc[train]'"
)


def require_torch() -> ModuleType:
    try:
        import torch
    except ModuleNotFoundError:
        raise MirrorcError(TORCH_HINT) from None
    # the cores this process may run on, not torch's guess; MIRRORC_THREADS lowers it on a shared machine
    torch.set_num_threads(int(os.environ.get("MIRRORC_THREADS") or len(os.sched_getaffinity(0)) or 1))
    return torch


PENALTY_KINDS = ("wrong", "uniform")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant", or "cosine": decays to 0 over all the batches of the run
    seed: int = 0
    backbone_penalty: float = 0.0
    penalty_kind: str = "wrong"  # "wrong": -log(1 - p_y); "uniform": cross-entropy to the uniform distribution
    val_fraction: float = 0.1
    fast: bool = False  # channels_last + bf16 autocast: ~3x on conv-heavy models on recent x86 CPUs
    freeze_backbone: bool = False  # train only the CPM (mirrorc.train.protect's random-backbone strategy)
    device: str = "cpu"  # cpu, auto, cuda, cuda:N (mirrorc.train.distributed.resolve_device); the CLI says auto

    def check(self) -> None:
        if self.epochs < 0:
            raise MirrorcError(f"--epochs: must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise MirrorcError(f"--batch-size: must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise MirrorcError(f"--lr: must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise MirrorcError(f"--lr-schedule: one of {', '.join(LR_SCHEDULES)}, not '{self.lr_schedule}'")
        if self.backbone_penalty < 0:
            raise MirrorcError(f"--backbone-penalty: must be >= 0, got {self.backbone_penalty}")
        if self.penalty_kind not in PENALTY_KINDS:
            raise MirrorcError(f"--penalty-kind: one of {', '.join(PENALTY_KINDS)}, not '{self.penalty_kind}'")
        if self.freeze_backbone and self.backbone_penalty > 0:
            raise MirrorcError(
                "--backbone-penalty: the backbone is frozen (random- or public-backbone), nothing to penalise"
            )
        if not 0 <= self.val_fraction < 1:
            raise MirrorcError(f"validation fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class EpochStats:
    epoch: int
    loss: float
    train_acc: float  # of the trained logits, on the batches as they were seen
    val_acc: float | None  # the trained logits (for a MirrorNet: the whole MirrorNet)
    val_backbone_acc: float | None  # the backbone alone (None for a plain model)
    seconds: float


@dataclass
class TrainResult:
    model: onnx.ModelProto
    history: list[EpochStats] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    @property
    def last(self) -> EpochStats | None:
        return self.history[-1] if self.history else None


def logits_tensor(model: onnx.ModelProto) -> str:
    """The name of a classifier's logits: its first output, or the input of a trailing Softmax
    (through Identity nodes), which is what cross-entropy wants."""
    producer = {o: n for n in model.graph.node for o in n.output}
    name = model.graph.output[0].name
    while name in producer:
        node = producer[name]
        if node.op_type in ("Softmax", "LogSoftmax"):
            return node.input[0]
        if node.op_type != "Identity":
            break
        name = node.input[0]
    return model.graph.output[0].name


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, validation) index split of n training samples."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_val = int(round(n * fraction))
    if fraction > 0:
        n_val = max(1, min(n_val, n - 1))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass
class FitTotals:
    """What one `fit` call saw: summed loss over samples, correct predictions of the scored output."""

    loss: float = 0.0
    correct: int = 0
    seen: int = 0


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def fit(
    module: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: Iterable[torch.Tensor],
    loss_of: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    forward: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
    scored: str | None = None,
    after_step: Callable[[dict[str, torch.Tensor], torch.Tensor], None] | None = None,
    device: torch.device | None = None,
    scaler: torch.amp.GradScaler | None = None,
    on_batch: Callable[[int, float], None] | None = None,
) -> FitTotals:
    """The training loop: for each index batch of `batches`, forward (x[idx], default `module`),
    `loss_of(outputs, y[idx])`, one optimiser step, then one scheduler step. `after_step(outputs, y[idx])`
    runs after the update (the probe trainer's adversary learns there); `scored` names the output whose
    arg-max is counted as correct; `on_batch(images, loss)` follows each step (the progress bar).
    Batches go to `device` (a CUDA one: gathered by DataLoader workers into pinned memory, `gathered`);
    `scaler` is fp16's loss scaling.
    The module is in train() mode; BatchNorm nodes whose scale and bias are frozen stay in inference
    mode (mirrorc.train.interpreter)."""
    forward = forward or module
    totals = FitTotals()
    module.train()
    on_gpu = device is not None and device.type == "cuda"
    # on CUDA, worker processes gather the next batches into pinned memory while the GPU trains;
    # on the CPU the batch is indexed here, as it always was
    pairs = gathered(x, y, batches, workers=LOADER_WORKERS, pin=True) if on_gpu else ((x[i], y[i]) for i in batches)
    for xb, yb in pairs:
        if on_gpu:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        out = forward(xb)
        loss = loss_of(out, yb)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(out, yb)
        totals.loss += float(loss.detach()) * len(yb)
        if scored is not None:
            totals.correct += int((out[scored].detach().argmax(1) == yb).sum())
        totals.seen += len(yb)
        if on_batch is not None:
            on_batch(len(yb), float(loss.detach()))
    return totals


LOADER_WORKERS = 2  # processes gathering batches for a GPU (the data are in memory: gathering is cheap)


def gathered(
    x: torch.Tensor, y: torch.Tensor, batches: Iterable[torch.Tensor], *, workers: int, pin: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x[idx], y[idx]) for each index batch, through a torch DataLoader: `workers` processes index the
    batches ahead of the training, and with `pin` a thread copies them into pinned memory, so the copy
    to the GPU can overlap the step (`non_blocking`)."""
    from torch.utils.data import DataLoader, Dataset

    class Rows(Dataset):
        """Whole batches by their index tensor (batch_size=None: the sampler yields the batches)."""

        def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x[idx], y[idx]

    loader = DataLoader(Rows(), sampler=batches, batch_size=None, num_workers=workers, pin_memory=pin)
    yield from loader


def train(
    model: onnx.ModelProto,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    *,
    logits: str | None = None,
    backbone_logits: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    fingerprint: str = "",
    progress_desc: str = "train",
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train `model` on (x, y) and return a copy with the trained weights.

    `logits` is the tensor the loss is computed on (default: the model's logits, see logits_tensor);
    `backbone_logits`, when given, is reported per epoch and is what `backbone_penalty` acts on.
    `fingerprint` identifies model and data: a checkpoint made for another one is refused."""
    torch = require_torch()
    import torch.nn.functional as F

    from mirrorc.cli.common import progress
    from mirrorc.outdir import atomic_file
    from mirrorc.train.distributed import rank_device, resolve_device, shard, sum_across, world
    from mirrorc.train.interpreter import OnnxModule

    config.check()
    device = rank_device(resolve_device(config.device))
    rank, ranks = world()
    if rank != 0:
        log = None  # rank 0 speaks for all
    if backbone_logits is None and config.backbone_penalty > 0:
        raise MirrorcError("--backbone-penalty: the model has no backbone_logits output (not a MirrorNet)")
    logits = logits or logits_tensor(model)
    outputs = [logits] + ([backbone_logits] if backbone_logits else [])

    torch.manual_seed(config.seed)
    if config.freeze_backbone and backbone_logits is None:
        raise MirrorcError("freeze_backbone: the model has no backbone_logits output (not a MirrorNet)")
    module = OnnxModule(model, outputs=outputs, trainable=is_cpm if config.freeze_backbone else None).to(device)
    train_idx, val_idx = split_validation(len(y), config.val_fraction, config.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    if config.fast:
        # Module.to takes memory_format (documented); the overloads in torch's stubs leave it out
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(trainable_parameters(module), lr=config.lr)
    steps = config.epochs * -(-len(train_idx) // config.batch_size)
    # LambdaLR keeps a constant schedule a no-op; the cosine factor reaches 0 at the last batch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        (lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
        if config.lr_schedule == "cosine" and steps
        else (lambda step: 1.0),
    )

    history: list[EpochStats] = []
    start_epoch = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if resume and ckpt and ckpt.exists():
        state = load_checkpoint(ckpt)
        if state["fingerprint"] != fingerprint:
            raise MirrorcError(f"{ckpt}: checkpoint belongs to another model or dataset; remove it to start afresh")
        # more epochs may be asked for on resume, and on another device; every other option must match
        same = {k: v for k, v in asdict(config).items() if k not in ("epochs", "device")}
        if {k: v for k, v in state.get("config", {}).items() if k not in ("epochs", "device")} != same or state.get(
            "outputs"
        ) != outputs:
            raise MirrorcError(
                f"{ckpt}: checkpoint was made with different options "
                f"({state.get('config')}); remove it or use the same options"
            )
        try:
            module.load_state_dict(state["module"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = [EpochStats(**h) for h in state["history"]]
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise MirrorcError(
                f"{ckpt}: checkpoint does not fit the model ({first}); remove it to start afresh"
            ) from None
        start_epoch = state["epoch"]
        if log:
            log(f"{progress_desc}: resumed from {ckpt} after epoch {start_epoch}")

    def batches_of(indices: np.ndarray) -> Iterator[Tensor]:
        for s in range(0, len(indices), 1000):
            yield torch.from_numpy(indices[s : s + 1000])

    # mixed precision: bf16 on CPU with --fast; on CUDA always, fp16 (loss-scaled) where bf16 is missing
    autocast: tuple[str, TorchDtype] | None = ("cpu", torch.bfloat16) if config.fast else None
    scaler = None
    if device.type == "cuda":
        autocast = ("cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        scaler = torch.amp.GradScaler("cuda") if autocast[1] == torch.float16 else None
    net: Module = module
    if ranks > 1:
        import warnings

        from passes.upstream import upstream_nodes

        # DDP must be told when a trainable weight gets no gradient (one only backbone_logits uses,
        # without a penalty on them); telling it needlessly costs a graph traversal per step
        in_loss = [logits] + ([backbone_logits] if backbone_logits and config.backbone_penalty > 0 else [])
        feeding = {i for n in upstream_nodes(model.graph, in_loss) for i in n.input}
        unused = any(p.requires_grad and name not in feeding for name, p in module.named_onnx_parameters())
        # a weight with a size-1 dimension (conv1 of a 1-channel input) has two valid stride layouts
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        # DDP broadcasts rank 0's weights now and averages the gradients at every step
        net = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused
        )

    def forward(xb: Tensor, mixed: bool = True, through: Module = net) -> dict[str, Tensor]:
        if config.fast:
            xb = xb.contiguous(memory_format=torch.channels_last)
        if mixed and autocast is not None:
            with torch.autocast(autocast[0], dtype=autocast[1]):
                out = through(xb)
            return {k: v.float() for k, v in out.items()}
        return through(xb)

    def evaluate(indices: np.ndarray) -> tuple[float | None, float | None]:
        if len(indices) == 0:
            return None, None
        module.eval()
        hits = {name: 0 for name in outputs}
        with torch.no_grad():
            for idx in batches_of(shard(indices, rank, ranks)):  # each rank scores its part
                # validated as it is exported and deployed: float32, the plain module
                out = forward(xt[idx].to(device), mixed=False, through=module)
                for name in outputs:
                    hits[name] += int((out[name].argmax(1).cpu() == yt[idx]).sum())
        total = dict(zip(outputs, sum_across([float(hits[name]) for name in outputs])))
        return (total[logits] / len(indices), total[backbone_logits] / len(indices) if backbone_logits else None)

    def loss_of(out: dict[str, Tensor], yb: Tensor) -> Tensor:
        loss = F.cross_entropy(out[logits], yb)
        if config.backbone_penalty > 0:
            assert backbone_logits is not None  # a penalty without backbone_logits was refused above
            loss = loss + config.backbone_penalty * backbone_penalty(out[backbone_logits], yb, config.penalty_kind)
        return loss

    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        # the order of epoch e depends only on (seed, e): a resumed run sees the same batches; each
        # rank takes its part of every global batch (a tail batch smaller than the ranks is dropped)
        order = train_idx[np.random.default_rng([config.seed, epoch]).permutation(len(train_idx))]
        torch.manual_seed(config.seed * 100003 + epoch + 7919 * rank)  # dropout masks, if the model has any
        global_batches = [order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)]
        batches = [torch.from_numpy(shard(b, rank, ranks)) for b in global_batches if len(b) >= ranks]
        bar = progress(
            total=sum(len(b) for b in global_batches if len(b) >= ranks),
            desc=f"{progress_desc} {epoch + 1}/{config.epochs}",
            unit="img",
            unit_scale=True,
            leave=False,
            disable=rank != 0,
        )

        def on_batch(images: int, loss: float, bar: Any = bar) -> None:
            bar.update(images * ranks)  # the ranks' parts are equal to within one image
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        totals = fit(
            net,
            xt,
            yt,
            batches,
            loss_of,
            optimizer,
            scheduler=scheduler,
            forward=forward,
            scored=logits,
            device=device,
            scaler=scaler,
            on_batch=on_batch,
        )
        bar.close()
        loss_sum, correct, seen = sum_across([totals.loss, float(totals.correct), float(totals.seen)])
        val_acc, val_backbone = evaluate(val_idx)
        stats = EpochStats(
            epoch + 1,
            loss_sum / max(seen, 1),
            correct / max(seen, 1),
            val_acc,
            val_backbone,
            time.perf_counter() - began,
        )
        history.append(stats)
        postfix = {"loss": f"{stats.loss:.4f}", "acc": f"{stats.train_acc:.4f}"}
        if val_acc is not None:
            postfix["val"] = f"{val_acc:.4f}"
        if val_backbone is not None:
            postfix["val_backbone"] = f"{val_backbone:.4f}"
        if log:
            log(
                f"{progress_desc} epoch {stats.epoch}/{config.epochs}: "
                + " ".join(f"{k} {v}" for k, v in postfix.items())
                + f" ({stats.seconds:.1f}s)"
            )
        if ckpt and rank == 0:
            with atomic_file(ckpt) as tmp:
                torch.save(
                    {
                        "epoch": epoch + 1,
                        "module": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "history": [asdict(h) for h in history],
                        "config": asdict(config),
                        "outputs": outputs,
                        "fingerprint": fingerprint,
                    },
                    tmp,
                )
    module = module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # as above
    return TrainResult(module.write_back(), history, asdict(config))


# What a checkpoint holds (written by `train` after each epoch) and the type of each entry.
CHECKPOINT_FIELDS = {
    "epoch": int,
    "module": dict,
    "optimizer": dict,
    "scheduler": dict,
    "history": list,
    "config": dict,
    "outputs": list,
    "fingerprint": str,
}


def _unpickler_reason(e: BaseException) -> str:
    """The line of torch's weights-only refusal that says what was refused (its other lines advise
    loading the file with the full unpickler, which is what must not happen here)."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    for line in str(e).splitlines():
        line = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if line and not line.startswith(advice):
            return f"refused by the weights-only unpickler: {line[:160]}"
    return type(e).__name__


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `train`, loaded without running any code it might carry: torch's
    weights-only unpickler admits tensors and plain containers, numbers and strings, nothing that
    executes; then every field is checked before the caller uses any of it."""
    torch = require_torch()
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it did not write
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        raise MirrorcError(f"{path}: not a mirrorc checkpoint ({_unpickler_reason(e)}); remove it") from None
    if not isinstance(state, dict):
        raise MirrorcError(f"{path}: not a mirrorc checkpoint (holds a {type(state).__name__}); remove it")
    for key, kind in CHECKPOINT_FIELDS.items():
        value = state.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MirrorcError(
                f"{path}: not a mirrorc checkpoint (field {key!r} is not of type {kind.__name__}); remove it"
            )
    if state["epoch"] < 0 or not all(isinstance(h, dict) for h in state["history"]):
        raise MirrorcError(f"{path}: not a mirrorc checkpoint (bad 'epoch' or 'history'); remove it")
    return state


def backbone_penalty(backbone_logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The term that makes the backbone alone a poor classifier (see the module docstring)."""
    import torch

    log_p = torch.log_softmax(backbone_logits, 1)
    if kind == "uniform":  # cross-entropy to uniform: minimal when every class is equally likely
        return -log_p.mean()
    p_right = log_p.gather(1, y[:, None]).squeeze(1).exp()
    return -torch.log1p(-p_right.clamp(max=1 - 1e-6)).mean()


def same_init(original: onnx.ModelProto, mirrornet: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `original` whose initializers take the MirrorNet's backbone values where names and
    shapes agree, so the unprotected baseline starts from the same weights as the MirrorNet."""
    from onnx import numpy_helper

    source = {t.name: t for t in mirrornet.graph.initializer if not is_cpm(t.name)}
    out = onnx.ModelProto()
    out.CopyFrom(original)
    copied = 0
    for init in out.graph.initializer:
        twin = source.get(init.name)
        if twin is not None and list(twin.dims) == list(init.dims) and twin.data_type == init.data_type:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(twin), init.name))
            copied += 1
    return out
