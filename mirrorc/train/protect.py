"""Protection strategies (`mirrorc compile --protect`, shown by `mirrorc partition --report`): how a
MirrorNet is trained so that a stolen backbone is worth little to a thief who retrains it.

joint            (the default) backbone and CPM trained together, with a backbone penalty of 0.3: the
                 loss adds 0.3 * -log(1 - p_backbone(right class)), so the backbone alone answers
                 wrongly and a copy of normal.onnx is useless as it is (LeNet-5 at C = 2: backbone
                 0.2% on MNIST, 0.7% on Fashion-MNIST, 3.0% on CIFAR-10, results/table2.json). Cheap
                 in the TEE, but the stolen backbone is a trained network: fine-tuning it on a few
                 hundred labels beats training from scratch.
paper            the paper's recipe: the same joint training with plain cross-entropy on the MirrorNet's
                 logits; the backbone alone stays a good model (Table II: Δp 4 to 19 points here).
random-backbone  the backbone keeps its seeded random initial weights and only the CPM learns, on a
                 wider C: every trained weight is in the TEE, so what a thief copies is a random
                 initialisation, no better than the one he would draw himself. The price is TEE
                 memory and secure-world time (about a third of LeNet-5's MACs at C = 8).
public-backbone  the model given is a *public* pretrained network (one anybody can download); its weights
                 are kept, frozen, as the backbone, and only the CPM learns the owner's private task.
                 normal.onnx is then bit for bit the public model: a thief copies nothing he did not
                 have, and all the owner's training is in the TEE. What it costs is how much a narrow CPM
                 reading C channels of public features loses against fine-tuning the whole public
                 model on the private data (the unprotected baseline under this strategy).

What each strategy measured (cost, a thief's head start) is not here: benchmarks/attacks.py writes it
to results/protection.json and the partition report reads it from there (mirrorc.plan.report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirrorc.errors import MirrorcError


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    freeze_backbone: bool
    # C when -C is not given: a fixed count, or a fraction of the widest tapped feature map
    channels: int | None = None
    channels_fraction: float | None = None
    # ... but never fewer than this many (nor more than the widest map): a narrow network's eighth is too few
    channels_floor: int = 1
    # weight of the backbone penalty (mirrorc.train.loop) when --backbone-penalty is not given
    backbone_penalty: float = 0.0
    # the backbone's starting weights (passes.mirror.INIT_MODES) when the strategy decides them, else None
    init: str | None = None

    @property
    def ships_given_weights(self) -> bool:
        """normal.onnx is the given (public) model untouched: frozen and kept, so a thief copies nothing he
        could not download (mirrorc.attack.thief counts the public model as a start without theft)."""
        return self.freeze_backbone and self.init == "keep"

    def starting_weights(self, requested: str | None) -> str:
        """The backbone's starting weights: the strategy's own, else `requested` (--init), else random."""
        if self.init is not None and requested not in (None, self.init):
            other = "public-backbone" if self.init == "random" else "random-backbone"
            raise MirrorcError(
                f"--init {requested}: --protect {self.name} starts the backbone from --init {self.init} "
                f"(--protect {other} is the frozen backbone with --init {requested})"
            )
        return self.init or requested or "random"

    def default_channels(self, model_path: str | Path) -> int:
        """C for this strategy when -C is not given (the fraction is of the widest tapped feature map)."""
        if self.channels is not None:
            return self.channels
        from mirrorc.pipeline import analyze

        graph, info = analyze(model_path)
        tensors = graph.tensors()
        widths = [
            tensors[name].shape[1]
            for name in info["tap_tensors"]
            if len(tensors[name].shape or ()) == 4 and isinstance(tensors[name].shape[1], int)
        ]
        if not widths:
            return 2
        widest = max(widths)
        return min(widest, max(self.channels_floor, round(self.channels_fraction * widest)))


STRATEGIES = {
    "joint": Strategy(
        "joint",
        "backbone and CPM trained together, the backbone penalised so that alone it answers wrongly",
        freeze_backbone=False,
        channels=2,
        backbone_penalty=0.3,
    ),
    "paper": Strategy(
        "paper",
        "backbone and CPM trained together with plain cross-entropy (the paper's MirrorNet)",
        freeze_backbone=False,
        channels=2,
    ),
    "random-backbone": Strategy(
        "random-backbone",
        "backbone left at its seeded random weights, only the CPM trained (all learning in the TEE)",
        freeze_backbone=True,
        channels_fraction=0.5,
        init="random",
    ),
    "public-backbone": Strategy(
        "public-backbone",
        "the model's own (public, pretrained) weights kept frozen as the backbone, only the CPM trained "
        "on the private data",
        freeze_backbone=True,
        # measured (results/protection_public.json, frontier_cifar10_vgg7_public.json): LeNet-5 costs 2.34
        # points at C = 2 and 0.57 at 8; VGG-7 (widest map 256) is given 32
        channels_fraction=0.125,
        channels_floor=8,
        init="keep",
    ),
}
DEFAULT = "joint"


def describe(strategy: Strategy) -> dict:
    """What the partition report shows of a strategy: what it trains (its measured figures come from
    results/, mirrorc.plan.report.measured_protection)."""
    return {
        "name": strategy.name,
        "summary": strategy.summary,
        "freeze_backbone": strategy.freeze_backbone,
        "backbone_penalty": strategy.backbone_penalty,
        "init": strategy.init or "random",
    }


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise MirrorcError(f"--protect: unknown strategy '{name}' (one of {', '.join(STRATEGIES)})") from None
