"""The label oracle's leak: recover the CPM's logits through the TA, then clone the CPM (issue 13).

The TA returns argmax(L + cpm(taps)), and the caller chooses both the backbone logits L and the taps.
With L = (c0 at the reference class 0, v at class j, "low" everywhere else), the label is j exactly
when v - c0 > cpm_0 - cpm_j, so a binary search on s = v - c0 recovers every difference
cpm_j - cpm_0 of an input to `eps` in ceil(log2(span / eps)) queries: (K - 1) * that per input.
Every query is a real TA call through mirrorc.tee.runtime.ProtectedModel (the simulator here).

When the TA refuses backbone logits outside the range seen in training (the plan's `guard`), the
search stays inside it: s spans [lo_j - hi_0, hi_j - lo_0], a difference outside that span is only
bounded ("censored"), and "low" is each class's lowest allowed logit, which may no longer keep a
third class from winning ("confused" searches).

Against the TA's other defences the search behaves as an attacker would: a rate-limit refusal is waited
out (backoff from RATE_WAIT_S, doubling to RATE_WAIT_MAX_S, then the same query again); a spent query
budget ends the recovery, which keeps the inputs completed before it.

The clone is a fresh CPM of the secure graph's shape (mirrornet.onnx with every cpm/* initializer
re-drawn, thief.reinitialize) behind the stolen backbone, trained by L2 on the recovered differences
(its own cpm_logits minus their class-0 entry); scored by onnxruntime on the test split.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import onnx

from mirrorc.attack import thief
from mirrorc.errors import MirrorcError
from mirrorc.tee import teec
from passes import contract
from passes.mirror import is_cpm

# Without a range check, the search spans +-SPAN/2 around 0 and the other classes sit at -SUPPRESS.
SPAN = 128.0
SUPPRESS = 1e4
DEFAULT_EPS = 1e-3
CLONE_LR = 1e-3  # Adam on an L2 regression of logits: no grid needed to converge
# The wait after a rate-limit refusal, doubled while refused: the attacker does not know the rate.
RATE_WAIT_S = 0.005
RATE_WAIT_MAX_S = 0.5


@dataclass
class Recovered:
    """Per input, cpm_j - cpm_0 for every class j (column 0 is 0), and how it was obtained."""

    differences: np.ndarray  # float32 [N, K]; N = the inputs completed (fewer once a budget is spent)
    queries: int  # TA calls spent
    refused: int  # calls the TA refused
    censored: np.ndarray  # bool [N, K]: the difference lies outside what the search could reach
    confused: np.ndarray  # bool [N, K]: a third class won some query of the search
    eps: float  # the precision each search reached (half its final interval)
    rate_limited: int = 0  # of `refused`: rate-limit refusals, waited out and asked again
    budget_spent: bool = False  # the TA's query budget ended the recovery

    @property
    def answered(self) -> int:
        """TA calls that returned a label."""
        return self.queries - self.refused


def logit_bounds(plan: dict, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The backbone logits the TA accepts per class: the plan's guard range, else (-SUPPRESS, +SUPPRESS)."""
    guard = plan.get("guard") or {}
    if guard.get("range_check"):
        return np.asarray(guard["logit_min"], np.float64), np.asarray(guard["logit_max"], np.float64)
    return np.full(num_classes, -SUPPRESS), np.full(num_classes, SUPPRESS)


def recover(deployed: object, x: np.ndarray, eps: float = DEFAULT_EPS) -> Recovered:
    """Binary-search every cpm_j - cpm_0 of every input in `x` through the deployed TA.

    `deployed` is a mirrorc.tee.runtime.ProtectedModel; the taps come from its own backbone (the stolen
    normal world), the logits are chosen here."""
    from mirrorc.tee.runtime import ProtectedModel

    if not isinstance(deployed, ProtectedModel):
        raise MirrorcError("extract: needs a mirrorc.tee.runtime.ProtectedModel to query")
    k = deployed.num_classes
    lo, hi = logit_bounds(deployed.plan, k)
    guarded = bool((deployed.plan.get("guard") or {}).get("range_check"))
    outputs = deployed.backbone_outputs(x)
    n = outputs[0].shape[0]
    diffs = np.zeros((n, k), np.float32)
    censored = np.zeros((n, k), bool)
    confused = np.zeros((n, k), bool)
    queries = refused = rate_limited = 0
    worst_eps = 0.0
    wait = RATE_WAIT_S
    budget_spent = False

    def ask(taps: list[np.ndarray], logits: np.ndarray) -> int | None:
        """The TA's label; -1 if it refused these logits; None once the query budget is spent."""
        nonlocal queries, refused, rate_limited, wait
        while True:
            queries += 1
            try:
                label = deployed.query(taps, logits)
                wait = RATE_WAIT_S
                return label
            except teec.TeecError as e:
                refused += 1
                if e.result == contract.TA_ERROR_QUERY_BUDGET:
                    return None
                if e.result != contract.TA_ERROR_RATE_LIMIT:
                    return -1
            rate_limited += 1
            time.sleep(wait)
            wait = min(2 * wait, RATE_WAIT_MAX_S)

    done = 0
    for i in range(n):
        taps = [o[i] for o in outputs[:-1]]
        for j in range(1, k):
            # s = v - c0: label j iff s > cpm_0 - cpm_j; the reachable s for these bounds
            s_lo, s_hi = (lo[j] - hi[0], hi[j] - lo[0]) if guarded else (-SPAN / 2, SPAN / 2)
            steps = max(1, math.ceil(math.log2((s_hi - s_lo) / eps)))
            a, b = s_lo, s_hi  # invariant: label(a) != j (unless censored), label(b) == j
            flipped_low = flipped_high = False
            for _ in range(steps):
                s = (a + b) / 2
                logits = lo.copy()
                if guarded:  # class j's and class 0's logits, each inside its range
                    v = min(max(s + lo[0], lo[j]), hi[j])
                    logits[j], logits[0] = v, min(max(v - s, lo[0]), hi[0])
                else:  # near 0, where float32 keeps eps
                    logits[j], logits[0] = s, 0.0
                label = ask(taps, logits.astype(np.float32))
                if label is None:
                    budget_spent = True
                    break
                if label == j:
                    b, flipped_high = s, True
                else:
                    a, flipped_low = s, True
                    confused[i, j] |= label not in (0, j)
            if budget_spent:
                break
            censored[i, j] = not (flipped_low and flipped_high)
            worst_eps = max(worst_eps, (b - a) / 2)
            diffs[i, j] = -(a + b) / 2  # threshold = cpm_0 - cpm_j
        if budget_spent:
            break
        done = i + 1
    return Recovered(
        diffs[:done],
        queries,
        refused,
        censored[:done],
        confused[:done],
        worst_eps,
        rate_limited=rate_limited,
        budget_spent=budget_spent,
    )


def train_clone(
    view: thief.AttackerView,
    x: np.ndarray,
    differences: np.ndarray,
    known: np.ndarray | None = None,
    *,
    seed: int,
    steps: int,
    lr: float = CLONE_LR,
    batch: int = 64,
) -> onnx.ModelProto:
    """A fresh CPM behind the stolen backbone, trained so that its cpm_j - cpm_0 match `differences`
    (L2 over the entries `known` marks, bool [N, K], default all); returns mirrornet.onnx with the
    clone's weights."""
    import torch

    from mirrorc.train.interpreter import OnnxModule
    from mirrorc.train.loop import fit, trainable_parameters

    mask = np.ones(differences.shape, bool) if known is None else known
    start = thief.reinitialize(view.mirrornet, is_cpm, seed=4000 + seed)
    torch.manual_seed(seed)
    module = OnnxModule(start, outputs=[contract.CPM_LOGITS], trainable=is_cpm)
    opt = torch.optim.Adam(trainable_parameters(module), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)

    k = differences.shape[1]

    def l2_on_differences(out: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        cpm = out[contract.CPM_LOGITS]
        value, weight = target[:, :k], target[:, k:]  # recovered differences, 1 where recovered
        return (weight * (cpm - cpm[:, :1] - value) ** 2).sum() / weight.sum().clamp(min=1.0)

    fit(
        module,
        torch.from_numpy(np.ascontiguousarray(x, np.float32)),
        torch.from_numpy(np.concatenate([differences, mask], axis=1).astype(np.float32)),
        thief.cycling_batches(len(x), batch, steps, seed),
        l2_on_differences,
        opt,
        scheduler=sched,
    )
    module.eval()
    return module.write_back()


def run_extract(
    view: thief.AttackerView,
    x_pool: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    seed: int,
    schedule: thief.Schedule,
    eps: float = DEFAULT_EPS,
) -> thief.Result:
    """Recover the CPM differences of `x_pool` through the build's TA (simulator), train the clone,
    score it. The Result's `extra` holds the queries spent and the recovery's figures."""
    from mirrorc.tee.runtime import ProtectedModel

    if not (view.build_dir / "plan.json").is_file():
        raise MirrorcError(f"{view.build_dir}: extract needs the deployed TA (plan.json, normal.onnx, ta/)")
    with ProtectedModel(view.build_dir, tee="sim", mode="single") as deployed:
        started = time.perf_counter()
        rec = recover(deployed, x_pool, eps)
        recovery_seconds = time.perf_counter() - started
    # a censored or confused search says nothing exact: the clone learns from the clean ones only
    known = ~(rec.censored | rec.confused)
    known[:, 0] = True  # cpm_0 - cpm_0 = 0 by definition
    usable = known[:, 1:].any(axis=1)
    if not usable.any():
        spent = " before the query budget was spent" if rec.budget_spent else " inside the TA's logit range"
        raise MirrorcError(f"extract: no CPM logit difference could be recovered{spent}")
    clone = train_clone(
        view,
        x_pool[: len(usable)][usable],
        rec.differences[usable],
        known[usable],
        seed=seed,
        steps=schedule.steps(int(usable.sum())),
    )
    result = thief.Result("extract", len(x_pool), seed, thief.accuracy(clone, contract.LABEL, x_test, y_test), CLONE_LR)
    result.extra.update(
        queries=rec.queries,
        answered=rec.answered,
        refused=rec.refused,
        rate_limited=rec.rate_limited,
        budget_spent=rec.budget_spent,
        inputs_completed=len(rec.differences),
        recovery_seconds=recovery_seconds,
        eps=rec.eps,
        inputs_recovered=int(known.all(axis=1).sum()),
        differences_recovered=int(known[:, 1:].sum()),
        censored=int(rec.censored.sum()),
        confused=int(rec.confused.sum()),
    )
    return result
