"""A candidate `--protect` training strategy against the attacks of mirrorc.attack.thief: train the MirrorNet
while an adversary keeps training *fresh* CPMs of the same shape (probes) on the taps and the backbone
logits, and the backbone is pushed to make those probes fail.

Why: the replace-CPM attack (a fresh CPM trained on a small labelled budget) is the strongest attack
that respects the TEE; it works because the taps carry features that any small CPM can read. Here
every probe starts from random weights and lives `probe_steps` steps (a short-lived attacker); the
real CPM keeps learning for the whole run. The backbone is trained to raise the current probe's loss (weight
`probe_weight`) through the taps and the backbone logits: features that a trained CPM reads but a fresh
one does not learn quickly. The probe's loss is pushed towards chance (cross-entropy capped at
log K), so the backbone cannot "win" by blowing up the probe's logits.

It is measured, not assumed. On a LeNet-5 MirrorNet (C = 2, 3 epochs on 20,000 MNIST images, head
start at 600 labels, one seed) it did NOT meet the target (head start <= 2 at <= 0.5 accuracy cost):
plain training gave MirrorNet 96.65%, head start +4.68; probe_weight 0.1 gave 96.45%, +4.86 (no
effect); 0.3 gave 91.16%, +2.70; 1.0 gave 91.92%, +0.66. The head start only falls when the whole
MirrorNet gets worse, so it is not offered as a `--protect` strategy of `mirrorc compile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from mirrorc.errors import MirrorcError
from mirrorc.train.loop import TrainConfig, backbone_penalty, fit, trainable_parameters
from passes import contract


@dataclass
class ProbeConfig(TrainConfig):
    """mirrorc.train.loop's options (val_fraction and fast unused here) and the probes'."""

    epochs: int = 5
    probe_weight: float = 1.0
    probe_steps: int = 200  # a probe is re-drawn at random after this many steps
    probe_lr: float = 3e-3


def secure_part(mirrornet: onnx.ModelProto) -> onnx.ModelProto:
    """The CPM as a model of (mirrorc_tap1..n, backbone_logits), from passes.split."""
    from passes.split import split

    _normal, secure = split(mirrornet)
    return secure


def train_against_probes(
    mirrornet: onnx.ModelProto,
    x: np.ndarray,
    y: np.ndarray,
    config: ProbeConfig,
    *,
    progress_desc: str = "train+probes",
) -> onnx.ModelProto:
    """Joint MirrorNet training (cross-entropy on mirrornet_logits, optional backbone penalty as in
    mirrorc.train.loop) with the adversarial fresh-CPM probes described in the module docstring."""
    import torch
    import torch.nn.functional as F

    from mirrorc.attack.thief import reinitialize
    from mirrorc.cli.common import progress
    from mirrorc.train.interpreter import OnnxModule

    meta = {p.key: p.value for p in mirrornet.metadata_props}
    if contract.META_TAPS not in meta:
        raise MirrorcError("train_against_probes: model has no mirrorc.taps metadata (not a MirrorNet)")
    import json

    taps = [t["selected"] for t in json.loads(meta[contract.META_TAPS])]
    num_classes = contract.num_classes(mirrornet)
    torch.manual_seed(config.seed)
    main = OnnxModule(mirrornet, outputs=[contract.MIRRORNET_LOGITS, contract.BACKBONE_LOGITS, *taps])
    secure = secure_part(mirrornet)
    probe_inputs = [i.name for i in secure.graph.input]  # taps then backbone_logits, by the contract

    def fresh_probe(k: int) -> tuple[OnnxModule, torch.optim.Optimizer]:
        probe = OnnxModule(
            reinitialize(secure, lambda n: True, seed=config.seed * 7919 + k), outputs=[contract.MIRRORNET_LOGITS]
        )
        return probe, torch.optim.Adam(probe.parameters(), lr=config.probe_lr)

    opt = torch.optim.Adam(trainable_parameters(main), lr=config.lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    chance = math.log(num_classes)
    # the probe, its optimiser and the features it read, re-drawn every probe_steps steps
    current: dict[str, Any] = {"step": 0}

    def loss_of(out: dict[str, torch.Tensor], yb: torch.Tensor) -> torch.Tensor:
        if current["step"] % config.probe_steps == 0:
            current["probe"], current["opt"] = fresh_probe(current["step"] // config.probe_steps)
        loss = F.cross_entropy(out[contract.MIRRORNET_LOGITS], yb)
        if config.backbone_penalty > 0:
            loss = loss + config.backbone_penalty * backbone_penalty(
                out[contract.BACKBONE_LOGITS], yb, config.penalty_kind
            )
        current["feeds"] = [out[name] for name in probe_inputs]
        # the backbone pushes the current probe's loss up, to chance and no further
        adversarial = torch.clamp(
            F.cross_entropy(current["probe"](*current["feeds"])[contract.MIRRORNET_LOGITS], yb), max=chance
        )
        return loss - config.probe_weight * adversarial

    def probe_learns(out: dict[str, torch.Tensor], yb: torch.Tensor) -> None:
        # the probe learns on what it sees, like an attacker would
        probe_opt = current["opt"]
        probe_opt.zero_grad(set_to_none=True)
        probe_loss = F.cross_entropy(
            current["probe"](*[f.detach() for f in current["feeds"]])[contract.MIRRORNET_LOGITS], yb
        )
        probe_loss.backward()
        probe_opt.step()
        current["step"] += 1

    for epoch in progress(range(config.epochs), desc=progress_desc, unit="epoch"):
        order = torch.from_numpy(np.random.default_rng([config.seed, epoch]).permutation(len(xt)))
        batches = (order[s : s + config.batch_size] for s in range(0, len(xt), config.batch_size))
        fit(main, xt, yt, batches, loss_of, opt, after_step=probe_learns)
    main.eval()
    return main.write_back()
