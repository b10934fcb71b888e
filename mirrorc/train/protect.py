"""Protection strategies (`mirrorc compile --protect`, shown by `mirrorc partition --report`): how a
MirrorNet is trained so that a stolen backbone is worth little to a thief who retrains it.

joint            the paper's construction: backbone and CPM trained together (with `--backbone-penalty`
                 the backbone alone answers wrongly). Cheap in the TEE, but the stolen backbone is a
                 trained network: fine-tuning it on a few hundred labels beats training from scratch.
random-backbone  the backbone keeps its seeded random initial weights and only the CPM learns, on a
                 wider C: every trained weight is in the TEE, so what a thief copies is a random
                 initialisation, no better than the one he would draw himself. The price is TEE
                 memory and secure-world time (about a third of LeNet-5's MACs at C = 8).

Each strategy carries what was measured for it on the reference build (LeNet-5 on MNIST), with the
command that measured it, so the partition report can show the measured cost beside the predicted
one. Rerun the command to check them."""

from __future__ import annotations

from dataclasses import dataclass, field

from mirrorc.errors import MirrorcError

@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    freeze_backbone: bool
    # C when -C is not given: a fixed count, or a fraction of the widest tapped feature map
    channels: int | None = None
    channels_fraction: float | None = None
    measured: dict = field(default_factory=dict)

    def default_channels(self, model_path) -> int:
        """C for this strategy when -C is not given (the fraction is of the widest tapped feature map)."""
        if self.channels is not None:
            return self.channels
        from mirrorc.pipeline import analyze

        graph, info = analyze(model_path)
        tensors = graph.tensors()
        widths = [tensors[name].shape[1] for name in info["tap_tensors"]
                  if len(tensors[name].shape or ()) == 4 and isinstance(tensors[name].shape[1], int)]
        return max(1, round(self.channels_fraction * max(widths))) if widths else 2


# Measured through `mirrorc compile` and `mirrorc attack` on LeNet-5 / MNIST (full training set, 10
# epochs, one training seed, 3 attack seeds); cost = unprotected - MirrorNet test accuracy (points),
# head start = best attack - from scratch at 600 labelled images (points, mean ± sd over the seeds).
BENCH = ("python benchmarks/attacks.py --out /tmp/ab --datasets mnist --protects joint,random-backbone "
         "--channels default --penalties 0 --selects first --budgets 600,3000 --seeds 3 --baseline --compile-epochs 10")
STRATEGIES = {
    "joint": Strategy(
        "joint", "backbone and CPM trained together (the paper's MirrorNet)", freeze_backbone=False, channels=2,
        measured={"model": "LeNet-5", "data": "mnist", "channels": 2, "epochs": 10, "cost": 0.15,
                  "head_start_600": "+7.06 ± 0.18", "command": BENCH}),
    "random-backbone": Strategy(
        "random-backbone", "backbone left at its seeded random weights, only the CPM trained (all learning in the TEE)",
        freeze_backbone=True, channels_fraction=0.5,
        measured={"model": "LeNet-5", "data": "mnist", "channels": 8, "epochs": 10, "cost": 0.46,
                  "head_start_600": "+0.71 ± 1.17", "command": BENCH,
                  # mirrorc compile ... --lr-schedule cosine [-C 16], then mirrorc evaluate (one seed each)
                  "note": "with --lr-schedule cosine for both models the cost is 0.61 at C = 8 and 0.38 at C = 16 "
                          "(CPM 72% of the backbone's MACs)"}),
}
DEFAULT = "joint"


def describe(strategy: Strategy) -> dict:
    """What the partition report shows of a strategy: what it trains and what it measured."""
    return {"name": strategy.name, "summary": strategy.summary, "freeze_backbone": strategy.freeze_backbone,
            "measured": strategy.measured}


def format_measured(measured: dict) -> str:
    m = measured
    if m.get("cost") is None:
        return "not measured"
    return (f"{m['model']} / {m['data']}, C = {m['channels']}, {m['epochs']} epochs: MirrorNet {m['cost']:.2f} points "
            f"below the unprotected model, head start @600 labels {m['head_start_600']} points (`{m['command']}`)"
            + (f"; {m['note']}" if m.get("note") else ""))


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise MirrorcError(f"--protect: unknown strategy '{name}' (one of {', '.join(STRATEGIES)})") from None
