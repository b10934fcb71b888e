"""What a thief gets: model-stealing attacks on a MirrorNet build, measured (issue 5).

The attacker's view is the normal world only: `normal.onnx` (architecture and weights of the
backbone, including which channels each tap selects, since those bytes cross the boundary in the
clear), a labelled budget drawn from the *training* split, and label-only queries to the deployed
protected model. Every attack is a real, seeded training run through the ONNX interpreter of
`mirrorc.train.interpreter` (the same source of truth as training): the result is written back to ONNX and
scored by onnxruntime on the test split.

Attacks (test accuracy each):
  as_is         the stolen backbone's own logits (and its prediction histogram)
  finetune_all  every backbone weight trained on the budget
  retrain_head  conv features frozen, the dense head re-initialised and trained
  replace_cpm   backbone frozen, a fresh CPM of the same shape (every cpm/* initializer random,
                never the trained values) trained on the taps + backbone logits
  distill       the stolen backbone fine-tuned on labels queried from the protected model
  scratch       the backbone architecture re-initialised and trained on the same labelled budget
  scratch_oracle  the same, on the distillation's oracle labels
  extract       (only when asked) the CPM's logits recovered through the TA by chosen backbone logits,
                a fresh CPM trained on them behind the stolen backbone (mirrorc.attack.extract); its
                baseline is scratch_oracle, and `extra` holds the TA queries it spent

head start = best attack - its from-scratch baseline on the same labels (the number the product
stands on: how much stealing the backbone is worth over not stealing it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from mirrorc.attack.names import ALL_ATTACKS, LABELLED_ATTACKS, QUERY_ATTACKS
from mirrorc.errors import MirrorcError
from passes import contract
from passes.mirror import is_cpm, torch_uniform

if TYPE_CHECKING:
    import torch

    from mirrorc.train.data import Dataset

DENSE_OPS = ("Gemm", "MatMul")


# --------------------------------------------------------------------------- the attacker's view


@dataclass
class AttackerView:
    """What the thief holds: the normal-world model, plus handles to query the deployed model.

    `mirrornet` is used for two things only: its label output as the oracle (when
    mirrorc.tee.runtime.ProtectedModel is not available) and the *shape* of the CPM for `replace_cpm`
    (every cpm/* initializer is re-drawn before use)."""

    build_dir: Path
    normal: onnx.ModelProto
    normal_source: str
    mirrornet: onnx.ModelProto
    taps: list[dict]
    num_classes: int
    input_name: str
    input_shape: tuple[int, ...]  # without batch


def _load_onnx(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as e:  # a truncated or foreign file
        raise MirrorcError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def backbone_from_mirrornet(mirrornet: onnx.ModelProto) -> onnx.ModelProto:
    """The normal-world part of mirrornet.onnx (passes.split), for builds without normal.onnx.
    The split holds only what normal-world nodes read; that no CPM weight is in it is checked here too."""
    from passes.split import split

    normal, _secure = split(mirrornet)
    leaked = [t.name for t in normal.graph.initializer if is_cpm(t.name)]
    if leaked:
        raise MirrorcError(f"mirrornet.onnx: normal-world part holds CPM weight '{leaked[0]}'")
    return normal


def load_view(build_dir: str | Path) -> AttackerView:
    """Read a build directory written by `mirrorc compile`; raise MirrorcError if it has no trained model."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise MirrorcError(f"{build_dir}: not a build directory")
    mirrornet_path = build_dir / "mirrornet.onnx"
    if not mirrornet_path.is_file():
        raise MirrorcError(f"{build_dir}: no trained model (mirrornet.onnx missing); run `mirrorc compile` first")
    mirrornet = _load_onnx(mirrornet_path)
    meta = _meta(mirrornet)
    if contract.META_TAPS not in meta or contract.META_NUM_CLASSES not in meta:
        raise MirrorcError(f"{mirrornet_path}: no mirrorc.taps/mirrorc.num_classes metadata; not a mirrorc build")
    if meta.get("mirrorc.trained", "1").lower() in ("0", "false", "no"):
        raise MirrorcError(f"{mirrornet_path}: model is not trained (mirrorc.trained={meta['mirrorc.trained']})")
    outputs = {o.name for o in mirrornet.graph.output}
    for needed in contract.OUTPUTS:
        if needed not in outputs:
            raise MirrorcError(f"{mirrornet_path}: output '{needed}' missing (see docs/ARCHITECTURE.md)")

    normal_path = build_dir / "normal.onnx"
    if normal_path.is_file():
        normal, source = _load_onnx(normal_path), "normal.onnx"
        if any(is_cpm(t.name) for t in normal.graph.initializer):
            raise MirrorcError(f"{normal_path}: holds CPM weights; not a valid normal-world model")
    else:
        normal, source = backbone_from_mirrornet(mirrornet), "mirrornet.onnx (normal-world part, passes.split)"
    if contract.BACKBONE_LOGITS not in {o.name for o in normal.graph.output}:
        raise MirrorcError(f"{source}: output 'backbone_logits' missing")

    inp = normal.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    if not dims or any(d <= 0 for d in dims):
        raise MirrorcError(f"{source}: input '{inp.name}' needs a fixed shape after the batch dimension")
    return AttackerView(
        build_dir=build_dir,
        normal=normal,
        normal_source=source,
        mirrornet=mirrornet,
        taps=json.loads(meta[contract.META_TAPS]),
        num_classes=contract.num_classes(mirrornet, str(mirrornet_path)),
        input_name=inp.name,
        input_shape=tuple(dims),
    )


# --------------------------------------------------------------------------- initializers


def _consumers(model: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, int]]:
    """initializer name -> (first node that reads it, input position)."""
    found: dict[str, tuple[onnx.NodeProto, int]] = {}
    for node in model.graph.node:
        for pos, name in enumerate(node.input):
            found.setdefault(name, (node, pos))
    return found


INIT_SCHEMES = ("he", "torch")


def _fan_in(shape: tuple[int, ...], node: onnx.NodeProto | None) -> int:
    """Inputs per output of a layer's weight of `shape`."""
    op = node.op_type if node is not None else ""
    if node is not None and op == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return shape[1] if trans_b else shape[0]
    if op == "MatMul" and len(shape) == 2:
        return shape[0]
    return int(np.prod(shape[1:]))


def _fresh_value(
    shape: tuple[int, ...],
    node: onnx.NodeProto | None,
    pos: int,
    rng: np.random.Generator,
    scheme: str = "he",
    weight_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """A new random value for a parameter, by the role it plays, as a from-scratch training run would
    start: identity BatchNorm, and `scheme` "he" (He-normal weights, zero biases) or "torch"
    (PyTorch's default uniform(+-1/sqrt(fan_in)) for weights and for biases, whose fan-in is that of
    their layer's weight, `weight_shape`: the compiler's own start)."""
    op = node.op_type if node is not None else ""
    if op == "BatchNormalization":
        return (np.ones if pos in (1, 4) else np.zeros)(shape, np.float32)  # scale, var = 1; bias, mean = 0
    if len(shape) <= 1:  # biases and other per-channel offsets
        if scheme == "torch" and pos == 2 and weight_shape:
            return torch_uniform(rng, shape, _fan_in(weight_shape, node))
        return np.zeros(shape, np.float32)
    fan_in = max(_fan_in(shape, node), 1)
    if scheme == "torch":
        return torch_uniform(rng, shape, fan_in)
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape).astype(np.float32)


def reinitialize(
    model: onnx.ModelProto, select: Callable[[str], bool], seed: int, scheme: str = "he"
) -> onnx.ModelProto:
    """A copy of `model` whose float initializers chosen by `select` are drawn afresh (seeded)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)
    users = _consumers(out)
    dims = {t.name: tuple(t.dims) for t in out.graph.initializer}
    for i, init in enumerate(out.graph.initializer):
        if not select(init.name) or init.data_type != onnx.TensorProto.FLOAT:
            continue
        node, pos = users.get(init.name, (None, 0))
        weight = dims.get(node.input[1]) if node is not None and len(node.input) > 1 else None
        value = _fresh_value(tuple(init.dims), node, pos, rng, scheme, weight)
        out.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, init.name))
    return out


def float_initializers(model: onnx.ModelProto) -> list[str]:
    return [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]


def dense_head(model: onnx.ModelProto) -> list[str]:
    """Initializers of the dense head: every Gemm/MatMul after the last convolution, and what they read."""
    nodes = list(model.graph.node)
    last_conv = max((i for i, n in enumerate(nodes) if n.op_type in ("Conv", "ConvTranspose")), default=-1)
    params = set(float_initializers(model))
    head = [name for n in nodes[last_conv + 1 :] if n.op_type in DENSE_OPS for name in n.input if name in params]
    if not head:
        raise MirrorcError("normal.onnx: no dense layer after the last convolution; retrain_head needs one")
    return head


# --------------------------------------------------------------------------- data


@dataclass
class Split:
    """Indices into the training split for one (budget, seed)."""

    labelled: np.ndarray  # the attacker's labelled budget
    pool: np.ndarray  # unlabelled images for the oracle, same size


def draw_budget(n_train: int, budget: int, seed: int) -> Split:
    if budget > n_train:
        raise MirrorcError(f"--budget: {budget} is larger than the training split ({n_train} images)")
    if budget < 10:
        raise MirrorcError(f"--budget: {budget} is too small (at least 10 images)")
    rng = np.random.default_rng([seed, budget])
    return Split(labelled=np.sort(rng.permutation(n_train)[:budget]), pool=np.sort(rng.permutation(n_train)[:budget]))


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) positions in a budget of n: validation is the attacker's own, never the test set."""
    perm = np.random.default_rng([seed, n, 7]).permutation(n)
    n_val = max(1, int(round(n * fraction)))
    return perm[n_val:], perm[:n_val]


# --------------------------------------------------------------------------- training and scoring


@dataclass
class Schedule:
    """How long and how each attack trains. `steps` is max(min_steps, epochs * batches per epoch):
    long enough for a from-scratch run on a small budget to converge."""

    epochs: int = 20
    min_steps: int = 500
    batch: int = 64
    lr_grid: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    val_fraction: float = 0.2
    trial_fraction: float = 0.5  # learning-rate trials run this share of the steps (the final run: all)
    device: str = "cpu"  # where each attack trains (resolve_device; the CLI says auto); float32 everywhere

    def steps(self, n: int) -> int:
        return max(self.min_steps, self.epochs * math.ceil(n / self.batch))


def run_onnx(model: onnx.ModelProto, output: str, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """One output of `model` on `x`, by onnxruntime (the deployment's runtime, not the trainer)."""
    import onnxruntime as ort

    keep = onnx.ModelProto()
    keep.CopyFrom(model)
    if output not in {o.name for o in keep.graph.output}:
        raise MirrorcError(f"model has no output '{output}'")
    del keep.graph.output[:]
    keep.graph.output.extend([o for o in model.graph.output if o.name == output])
    sess = ort.InferenceSession(keep.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run([output], {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def accuracy(model: onnx.ModelProto, output: str, x: np.ndarray, y: np.ndarray) -> float:
    logits = run_onnx(model, output, x)
    pred = logits if logits.ndim == 1 else logits.argmax(axis=1)
    return float((pred == y).mean() * 100.0)


def cycling_batches(n: int, batch: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """`steps` index batches of `batch` drawn from a seeded permutation of n, re-shuffled when a batch
    would run past its end (the attacks train by steps, not epochs)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if cursor + batch > len(order):
            order, cursor = torch.randperm(n, generator=gen), 0
        yield order[cursor : cursor + batch]
        cursor += batch


def train(
    model: onnx.ModelProto,
    output: str,
    trainable: Callable[[str], bool],
    x: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    steps: int,
    batch: int,
    seed: int,
    desc: str = "",
    device: str = "cpu",
) -> onnx.ModelProto:
    """Train the initializers chosen by `trainable` with Adam + cosine decay, cross-entropy on `output`,
    through mirrorc.train.loop's loop (a frozen BatchNorm keeps its statistics); return the model with
    the trained values written back."""
    import torch

    from mirrorc.cli.common import progress
    from mirrorc.train.distributed import resolve_device
    from mirrorc.train.interpreter import OnnxModule
    from mirrorc.train.loop import fit, trainable_parameters

    torch.manual_seed(seed)
    on = resolve_device(device)
    module = OnnxModule(model, outputs=[output], trainable=trainable).to(on)
    params = trainable_parameters(module)
    if not params:
        raise MirrorcError(f"{desc or 'attack'}: nothing to train (no initializer selected)")
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    batches = progress(cycling_batches(len(x), batch, steps, seed), total=steps, desc=desc, leave=False)
    # a Ray task's arrays are read-only views of its object store; torch wants writable memory
    x, y = (a if a.flags.writeable else a.copy() for a in (x, y))
    fit(
        module,
        torch.from_numpy(x),
        torch.from_numpy(y),
        batches,
        lambda out, yb: torch.nn.functional.cross_entropy(out[output], yb),
        opt,
        scheduler=sched,
        device=on,
    )
    module.eval()
    return module.write_back()


@dataclass
class Attack:
    """One trainable attack: which model it starts from, what it trains, which output it scores."""

    name: str
    start: onnx.ModelProto
    output: str
    trainable: Callable[[str], bool]
    labels: str = "true"  # "true" (the budget's own labels) or "oracle"
    # other starting points, chosen between (with the learning rate) on the attacker's validation part
    alternatives: tuple[onnx.ModelProto, ...] = ()


@dataclass
class Result:
    attack: str
    budget: int
    seed: int
    accuracy: float
    lr: float | None = None
    val_accuracy: float | None = None
    extra: dict = field(default_factory=dict)


def fit_and_score(
    attack: Attack,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    schedule: Schedule,
    seed: int,
    budget: int,
) -> Result:
    """Choose the learning rate (and the start, when the attack has alternatives) on a validation part
    of the attacker's own data, retrain on all of it with that choice, score on the test split."""
    fit_idx, val_idx = holdout(len(x), schedule.val_fraction, seed)
    steps = schedule.steps(len(x))
    starts = (attack.start, *attack.alternatives)
    best_start, best_lr, best_val = attack.start, schedule.lr_grid[0], -1.0
    if len(schedule.lr_grid) > 1 or len(starts) > 1:
        for k, start in enumerate(starts):
            for lr in schedule.lr_grid:
                trial = train(
                    start,
                    attack.output,
                    attack.trainable,
                    x[fit_idx],
                    y[fit_idx],
                    lr=lr,
                    steps=max(1, int(schedule.steps(len(fit_idx)) * schedule.trial_fraction)),
                    batch=schedule.batch,
                    seed=seed,
                    desc=f"{attack.name}{f' start {k}' if k else ''} b={budget} s={seed} lr={lr:g}",
                    device=schedule.device,
                )
                val = accuracy(trial, attack.output, x[val_idx], y[val_idx])
                if val > best_val:
                    best_start, best_lr, best_val = start, lr, val
    final = train(
        best_start,
        attack.output,
        attack.trainable,
        x,
        y,
        lr=best_lr,
        steps=steps,
        batch=schedule.batch,
        seed=seed,
        desc=f"{attack.name} b={budget} s={seed}",
        device=schedule.device,
    )
    return Result(
        attack.name,
        budget,
        seed,
        accuracy(final, attack.output, x_test, y_test),
        best_lr,
        best_val if best_val >= 0 else None,
    )


# --------------------------------------------------------------------------- the oracle


def oracle_labels(view: AttackerView, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Labels from the deployed protected model, label-only. Returns (labels, what answered).

    A full build (plan.json, normal.onnx, the TA) is queried by split execution through
    mirrorc.tee.runtime.ProtectedModel; a build without the secure-world part by mirrornet.onnx's
    `label` output in onnxruntime (the golden reference every split execution must match)."""
    if (view.build_dir / "plan.json").is_file() and (view.build_dir / "normal.onnx").is_file():
        from mirrorc.tee.runtime import ProtectedModel

        with ProtectedModel(view.build_dir, tee="sim", mode="single") as deployed:
            labels = np.concatenate(
                [np.asarray(deployed.predict(x[i : i + 500])).reshape(-1) for i in range(0, len(x), 500)]
            )
        return labels.astype(
            np.int64
        ), "mirrorc.tee.runtime.ProtectedModel (split execution, simulated TEE, label only)"
    labels = run_onnx(view.mirrornet, contract.LABEL, x).astype(np.int64)
    return labels, "mirrornet.onnx 'label' output in onnxruntime (no plan.json/normal.onnx in the build)"


# --------------------------------------------------------------------------- the whole measurement


def histogram(pred: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(pred.astype(np.int64), minlength=num_classes)[:num_classes].tolist()


def attacks_for(view: AttackerView, seed: int) -> list[Attack]:
    """The trainable attacks for one seed; every random start is seeded from `seed`."""
    normal = view.normal
    every = set(float_initializers(normal))
    head = set(dense_head(normal))
    cpm = [t for t in float_initializers(view.mirrornet) if is_cpm(t)]
    if not cpm:
        raise MirrorcError("mirrornet.onnx: no cpm/* initializer; replace_cpm has nothing to re-draw")
    fresh_cpm = reinitialize(view.mirrornet, is_cpm, seed=1000 + seed)
    # from scratch as the attacker would: the better (on validation) of He and PyTorch's default draw
    scratch, *others = [reinitialize(normal, lambda n: n in every, seed=2000 + seed, scheme=s) for s in INIT_SCHEMES]
    return [
        Attack("finetune_all", normal, contract.BACKBONE_LOGITS, lambda n: n in every),
        Attack(
            "retrain_head",
            reinitialize(normal, lambda n: n in head, seed=3000 + seed),
            contract.BACKBONE_LOGITS,
            lambda n: n in head,
        ),
        Attack("replace_cpm", fresh_cpm, contract.MIRRORNET_LOGITS, is_cpm),
        Attack("distill", normal, contract.BACKBONE_LOGITS, lambda n: n in every, labels="oracle"),
        Attack("scratch", scratch, contract.BACKBONE_LOGITS, lambda n: n in every, alternatives=tuple(others)),
        Attack(
            "scratch_oracle",
            scratch,
            contract.BACKBONE_LOGITS,
            lambda n: n in every,
            labels="oracle",
            alternatives=tuple(others),
        ),
    ]


def public_copy(protect: str | None) -> bool:
    """Whether a build of strategy `protect` ships a public model as normal.onnx (a thief has it anyway)."""
    from mirrorc.train.protect import STRATEGIES

    strategy = STRATEGIES.get(protect or "")
    return strategy is not None and strategy.ships_given_weights


def head_starts(results: list[Result], public_copy: bool = False) -> dict[int, dict]:
    """Per budget: head start per seed (best attack - the thief's best start without the copy), and which
    attack was best. That start is training from scratch (scratch_oracle for the oracle-label attacks);
    with `public_copy` (normal.onnx is a public model: `public_copy()`) fine-tuning or distilling into
    the public model needs no theft either, so finetune_all and distill are starts he has anyway."""
    out: dict[int, dict] = {}
    for budget in sorted({r.budget for r in results}):
        per_seed, best_names = [], []
        for seed in sorted({r.seed for r in results if r.budget == budget}):
            acc = {r.attack: r.accuracy for r in results if r.budget == budget and r.seed == seed}
            gains: dict[str, float] = {}
            if "scratch" in acc:
                start = max(acc["scratch"], acc.get("finetune_all", 0.0) if public_copy else 0.0)
                gains = {a: acc[a] - start for a in LABELLED_ATTACKS if a in acc}
            if "scratch_oracle" in acc:
                start = max(acc["scratch_oracle"], acc.get("distill", 0.0) if public_copy else 0.0)
                gains.update({a: acc[a] - start for a in ("distill", "extract") if a in acc})
            if not gains:
                continue
            best = max(gains, key=gains.__getitem__)
            per_seed.append(gains[best])
            best_names.append(best)
        if per_seed:
            arr = np.array(per_seed)
            out[budget] = {
                "mean": float(arr.mean()),
                "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                "min": float(arr.min()),
                "max": float(arr.max()),
                "per_seed": per_seed,
                "best_attack": best_names,
            }
    return out


def architecture_key(model: onnx.ModelProto, output: str) -> str:
    """A fingerprint of what computes `output` (ops, wiring, attributes, initializer names and shapes,
    not their values): two builds with the same key train identical from-scratch baselines."""
    import hashlib

    from passes.upstream import upstream_nodes

    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    nodes = upstream_nodes(model.graph, [output])
    parts = [
        f"{node.op_type}|{list(node.input)}|{list(node.output)}|"
        f"{sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in node.attribute)}"
        for node in nodes
    ]
    reached = {output} | {i for node in nodes for i in node.input}
    parts += [f"init|{name}|{shapes[name]}" for name in sorted(reached & shapes.keys())]
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


@dataclass
class Cell:
    """One training of an attack grid: an attack at a budget and seed. `job` is `score_cell`'s
    arguments; cells with equal `key` are one training (the labelled from-scratch baseline, which
    builds of one architecture on the same data share); `extra` is added to its Result."""

    attack: str
    budget: int
    seed: int
    key: tuple
    job: tuple
    extra: dict = field(default_factory=dict)


def scratch_key(normal: onnx.ModelProto, dataset: Dataset, schedule: Schedule) -> tuple:
    """What the labelled from-scratch baseline depends on (architecture, data, schedule): builds with the
    same key share it (a Cell's key is this plus budget and seed; `run_plans`' scratch_cache holds them)."""
    data = (len(dataset.x_train), float(dataset.x_train[:256].sum()), float(dataset.x_test[:256].sum()))
    return ("scratch", architecture_key(normal, contract.BACKBONE_LOGITS), data, repr(schedule))


@dataclass
class Plan:
    """One build's attack grid before any training: its rows in report order (the as-is results,
    known already, and the cells to train) and what the report says beside them."""

    view: AttackerView
    budgets: list[int]
    seeds: int
    schedule: Schedule
    rows: list[Result | Cell]
    oracle: str | None
    mirrornet_acc: float
    as_is_pred: np.ndarray
    y_test: np.ndarray

    def cells(self) -> list[Cell]:
        return [row for row in self.rows if isinstance(row, Cell)]


def score_cell(
    view: AttackerView,
    attack: str,
    x: np.ndarray,
    y: np.ndarray | None,
    x_test: np.ndarray,
    y_test: np.ndarray,
    schedule: Schedule,
    seed: int,
    budget: int,
) -> Result:
    """Train and score one cell; everything random in it is seeded from `seed`, so it gives the same
    Result wherever and whenever it runs (mirrorc.train.grid may run it as a Ray task)."""
    if attack == "extract":
        from mirrorc.attack.extract import run_extract

        return run_extract(view, x, x_test, y_test, seed=seed, schedule=schedule)
    assert y is not None  # every trained attack has labels: the budget's own or the oracle's
    chosen = next(a for a in attacks_for(view, seed) if a.name == attack)
    return fit_and_score(chosen, x, y, x_test, y_test, schedule, seed, budget)


def plan(
    build_dir: str | Path,
    dataset: Dataset,
    *,
    budgets: list[int],
    seeds: int,
    schedule: Schedule | None = None,
    attacks: tuple[str, ...] = ALL_ATTACKS,
) -> Plan:
    """Check the grid and lay out its cells; the oracle's labels are queried here (label-only queries
    to the deployed model, in this process), the trainings are left to `run_plans`."""
    schedule = schedule or Schedule()
    view = load_view(build_dir)
    if tuple(dataset.x_test.shape[1:]) != view.input_shape:
        raise MirrorcError(
            f"--data: images of shape {list(dataset.x_test.shape[1:])} do not fit "
            f"'{view.input_name}' {list(view.input_shape)}"
        )
    unknown = [a for a in attacks if a not in ALL_ATTACKS + QUERY_ATTACKS]
    if unknown:
        choices = ", ".join(ALL_ATTACKS + QUERY_ATTACKS)
        raise MirrorcError(f"--attacks: unknown attack '{unknown[0]}' (choose from {choices})")
    n_train = len(dataset.x_train)
    for b in budgets:
        draw_budget(n_train, b, 0)  # fail on a bad budget before any training
    x_test, y_test = dataset.x_test, dataset.y_test
    scratch = scratch_key(view.normal, dataset, schedule)
    where = str(view.build_dir.resolve())

    as_is_logits = run_onnx(view.normal, contract.BACKBONE_LOGITS, x_test)
    as_is_pred = as_is_logits.argmax(axis=1)
    rows: list[Result | Cell] = []
    oracle_source = None
    # which attacks train and on which labels (a cell draws its own starts from its seed: score_cell)
    trained = {a.name: a.labels == "oracle" for a in attacks_for(view, 0) if a.name in attacks}
    for budget in budgets:
        for seed in range(seeds):
            split = draw_budget(n_train, budget, seed)
            x_lab, y_lab = dataset.x_train[split.labelled], dataset.y_train[split.labelled]
            x_pool = dataset.x_train[split.pool]
            if "as_is" in attacks:
                rows.append(Result("as_is", budget, seed, float((as_is_pred == y_test).mean() * 100)))
            y_oracle, agreement = None, {}
            if any(trained.values()):
                y_oracle, oracle_source = oracle_labels(view, x_pool)
                agreement = {
                    "oracle_agreement_with_truth": float((y_oracle == dataset.y_train[split.pool]).mean() * 100)
                }
            for name, oracle in trained.items():
                x, y = (x_pool, y_oracle) if oracle else (x_lab, y_lab)
                key = scratch if name == "scratch" else (where, name)
                job = (view, name, x, y, x_test, y_test, schedule, seed, budget)
                rows.append(Cell(name, budget, seed, (*key, budget, seed), job, agreement if oracle else {}))
            if "extract" in attacks:
                job = (view, "extract", x_pool, None, x_test, y_test, schedule, seed, budget)
                rows.append(Cell("extract", budget, seed, (where, "extract", budget, seed), job))
    return Plan(
        view=view,
        budgets=budgets,
        seeds=seeds,
        schedule=schedule,
        rows=rows,
        oracle=oracle_source,
        mirrornet_acc=accuracy(view.mirrornet, contract.LABEL, x_test, y_test),
        as_is_pred=as_is_pred,
        y_test=y_test,
    )


def run_plans(
    plans: list[Plan],
    *,
    ray: str | None = None,
    scratch_cache: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Train every cell of `plans` (mirrorc.train.grid: here, or as Ray tasks with `ray`), each shared
    from-scratch baseline once, and return one report per plan. `scratch_cache` (a dict the caller
    keeps) carries those baselines from one call to the next."""
    from mirrorc.train.grid import run_tasks

    cache = scratch_cache if scratch_cache is not None else {}
    index: dict[tuple, int] = {}
    jobs: list[tuple] = []
    names: list[str] = []
    for p in plans:
        for cell in p.cells():
            if cell.key not in index and cell.key not in cache:
                index[cell.key] = len(jobs)
                jobs.append(cell.job)
                names.append(f"{p.view.build_dir.name}: {cell.attack} b={cell.budget} s={cell.seed}")
    device = plans[0].schedule.device if plans else "cpu"
    results = run_tasks(score_cell, jobs, ray=ray, device=device, desc="attacks", names=names, log=log)
    done = {**cache, **{key: results[i] for key, i in index.items()}}
    cache.update({key: result for key, result in done.items() if key[0] == "scratch"})
    return [report(p, done) for p in plans]


def run(
    build_dir: str | Path,
    dataset: Dataset,
    *,
    budgets: list[int],
    seeds: int,
    schedule: Schedule | None = None,
    attacks: tuple[str, ...] = ALL_ATTACKS,
    scratch_cache: dict | None = None,
    ray: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Every attack at every budget and seed. `dataset` is a mirrorc.train.data Dataset; returns a JSON-able dict.

    `scratch_cache` (a dict the caller keeps) lets several builds of the same architecture on the same
    data share the labelled from-scratch baseline, which does not depend on the build's weights.
    `ray` ("auto" or an address) runs the cells as Ray tasks (mirrorc.train.grid): the same results."""
    grid = plan(build_dir, dataset, budgets=budgets, seeds=seeds, schedule=schedule, attacks=attacks)
    return run_plans([grid], ray=ray, scratch_cache=scratch_cache, log=log)[0]


def report(p: Plan, done: dict[tuple, Result]) -> dict:
    """The JSON-able report of a plan whose cells are trained (`done`: cell key -> Result)."""
    from dataclasses import replace

    results = [
        row if isinstance(row, Result) else replace(done[row.key], extra={**done[row.key].extra, **row.extra})
        for row in p.rows
    ]
    schedule, view = p.schedule, p.view
    backbone_acc = float((p.as_is_pred == p.y_test).mean() * 100)
    protect = build_protection(view.build_dir)
    return {
        "build": str(view.build_dir),
        "protect": protect,
        "backbone_source": view.normal_source,
        "oracle": p.oracle,
        "num_classes": view.num_classes,
        "taps": [{"index": t["index"], "tensor": t["tensor"], "channels": t["channels"]} for t in view.taps],
        "mirrornet_accuracy": p.mirrornet_acc,
        "backbone_accuracy": backbone_acc,
        "delta_p": p.mirrornet_acc - backbone_acc,
        "as_is_histogram": histogram(p.as_is_pred, view.num_classes),
        "schedule": {
            "epochs": schedule.epochs,
            "min_steps": schedule.min_steps,
            "batch": schedule.batch,
            "lr_grid": list(schedule.lr_grid),
            "val_fraction": schedule.val_fraction,
            "trial_fraction": schedule.trial_fraction,
        },
        "budgets": p.budgets,
        "seeds": p.seeds,
        "results": [r.__dict__ for r in results],
        "head_start": report_head_starts(results, protect),
    }


def report_head_starts(results: list[Result], protect: str | None) -> dict[str, dict]:
    """A report's `head_start` field (budgets as strings, as JSON keeps them) for a build of `protect`."""
    return {str(b): v for b, v in head_starts(results, public_copy(protect)).items()}


def scratch_results(report: dict, normal: onnx.ModelProto, dataset: Dataset, schedule: Schedule) -> dict:
    """A finished report's from-scratch baselines, keyed as `run_plans`' scratch_cache holds them (a
    Cell's key: scratch_key plus budget and seed), so that builds still to attack can reuse them."""
    key = scratch_key(normal, dataset, schedule)
    return {(*key, r["budget"], r["seed"]): Result(**r) for r in report["results"] if r["attack"] == "scratch"}


def build_protection(build_dir: Path) -> str | None:
    """The protection strategy a build was compiled with (training.json), if it says."""
    try:
        return json.loads((Path(build_dir) / "training.json").read_text()).get("protect", "joint")
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- the text report


def _spread(values: list[float]) -> str:
    arr = np.array(values)
    if len(arr) == 1:
        return f"{arr[0]:6.2f}"
    return f"{arr.mean():6.2f} ± {arr.std(ddof=1):4.2f}"


def signed_spread(values: list[float]) -> str:
    """A gain over seeds as "+mean ± sd" ("+mean" for one seed, "-" for none): the benchmarks' tables."""
    if not values:
        return "-"
    arr = np.array(values)
    return f"{arr.mean():+.2f}" + (f" ± {arr.std(ddof=1):.2f}" if len(arr) > 1 else "")


def format_report(report: dict) -> tuple[str, str]:
    """(table, head-start line): the caller prints the last line in bold."""
    lines = [
        f"build: {report['build']}   backbone from {report['backbone_source']}"
        + (f"   protection {report['protect']}" if report.get("protect") else ""),
        f"MirrorNet {report['mirrornet_accuracy']:.2f}%   backbone alone {report['backbone_accuracy']:.2f}%   "
        f"Δp {report['delta_p']:.2f}",
    ]
    hist = report["as_is_histogram"]
    total = max(sum(hist), 1)
    top = int(np.argmax(hist))
    lines.append(
        "as-is predictions per class (% of test): "
        + " ".join(f"{k}:{100 * c / total:.0f}" for k, c in enumerate(hist))
        + (f"   <- answers class {top} for {100 * hist[top] / total:.0f}%" if hist[top] / total > 0.5 else "")
    )
    if report.get("oracle"):
        lines.append(f"oracle: {report['oracle']}")

    def picked(ch: list[int]) -> str:
        return (
            f"[{', '.join(map(str, ch))}]" if len(ch) <= 8 else f"[{len(ch)} of them: {ch[0]}, {ch[1]}, ..., {ch[-1]}]"
        )

    taps = ", ".join(f"tap{t['index']} {t['tensor']}{picked(t['channels'])}" for t in report["taps"])
    lines.append(f"tapped channels (visible to the attacker): {taps}")
    budgets = report["budgets"]
    width = 17
    lines.append("")
    lines.append(f"{'test accuracy %':<16}" + "".join(f"{'budget ' + str(b):>{width}}" for b in budgets))
    results = report["results"]
    for attack in ALL_ATTACKS + QUERY_ATTACKS:
        row = [[r["accuracy"] for r in results if r["attack"] == attack and r["budget"] == b] for b in budgets]
        if not any(row):
            continue
        lines.append(f"{attack:<16}" + "".join(f"{_spread(v) if v else '-':>{width}}" for v in row))
    spent = [r for r in results if r["attack"] in QUERY_ATTACKS]
    if spent:
        lines.append(
            "TA queries spent by extract: "
            + "; ".join(f"{r['budget']} images, seed {r['seed']}: {r['extra']['queries']}" for r in spent)
        )
    hs = report["head_start"]
    lines.append("")
    parts = []
    for b in budgets:
        h = hs.get(str(b))
        if h:
            best = max(set(h["best_attack"]), key=h["best_attack"].count)
            spread = f" ± {h['std']:.2f} (min {h['min']:.2f}, max {h['max']:.2f})" if len(h["per_seed"]) > 1 else ""
            parts.append(f"{b} images: {h['mean']:+.2f}{spread} [{best}]")
    start = "the better of scratch and the public model" if public_copy(report.get("protect")) else "from scratch"
    head = (
        (f"head start (best attack - {start}, points): " + "; ".join(parts))
        if parts
        else "head start: not measured (needs scratch and at least one attack)"
    )
    return "\n".join(lines), head
