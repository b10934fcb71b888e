"""The compiler core as a library, every step a pass under the PassManager:
load -> canonicalize -> taps (analysis), -> mirror -> annotate -> verify (the annotated
mirrornet.onnx), and the secure pipeline split -> fold_bn -> memplan -> lower_c (the CPM in C).

    model, info = build_mirrornet("lenet5.onnx", channels=2)
    secure = secure_pipeline(model, "lenet5")        # after training, on the trained model

`info` holds what the later stages and reports need: input, num_classes, taps (the contract's
per-tap objects), stage of every backbone node, the CPM's head layers, the options used, and the
time each pass took. Each pass leaves a `PassResult` in its context (`SecureBuild.results`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from passes.annotate import AnnotatePass
from passes.base import PassContext, PassManager, PassResult, to_proto
from passes.canonicalize import CanonicalizePass
from passes.fold_bn import FoldBnPass
from passes.load import LoadPass
from passes.lower_c import LowerCPass, Lowered, MemPlanPass, SecurePlan
from passes.mirror import MirrorPass, normalize_options
from passes.split import SplitPass
from passes.taps import TapsPass
from passes.verify import MIRRORNET_FACTS, VerifyPass


def analyze(path: str | Path) -> tuple[gs.Graph, dict]:
    """The canonical backbone graph and its stages and taps (what `mirrorc inspect` shows)."""
    ctx = PassContext(source=Path(path))
    graph = PassManager([LoadPass(), CanonicalizePass(), TapsPass()]).run(None, ctx)
    return graph, _public(ctx)


def build_mirrornet(
    path: str | Path,
    *,
    channels: int = 2,
    select: str = "first",
    seed: int = 0,
    init: str = "random",
    dense_width: int | None = None,
) -> tuple[onnx.ModelProto, dict]:
    """The annotated, verified mirrornet.onnx for the classifier at `path`, and its info dict."""
    model, ctx = _mirrornet(path, dict(channels=channels, select=select, seed=seed, init=init, dense_width=dense_width))
    return model, _public(ctx)


def _mirrornet(path: str | Path, options: dict) -> tuple[onnx.ModelProto, PassContext]:
    ctx = PassContext(source=Path(path), options=normalize_options(options))
    passes = [LoadPass(), CanonicalizePass(), TapsPass(), MirrorPass(), AnnotatePass(), VerifyPass()]
    return to_proto(PassManager(passes).run(None, ctx)), ctx


@dataclasses.dataclass
class SecureBuild:
    """What the secure pipeline made from a mirrornet."""

    normal: onnx.ModelProto  # the backbone (normal.onnx)
    secure: onnx.ModelProto  # the CPM's graph, BatchNorm folded
    plan: SecurePlan  # its schedule and memory plan
    lowered: Lowered | None  # the C model (None when the pipeline stopped after memplan)
    results: list[PassResult]  # one per pass run in the context, in order


def secure_pipeline(
    mirrornet: onnx.ModelProto,
    ta_name: str | None = None,
    *,
    tee_memory: int | None = None,
    ctx: PassContext | None = None,
) -> SecureBuild:
    """split -> fold_bn -> memplan -> lower_c on a mirrornet (trained or not; not modified): THE
    driver of the secure half, for the secure build and the report. With `ta_name` None it stops
    after memplan (the report's memory estimate); `tee_memory` bounds the TA's bytes. `ctx`
    continues a context (build_mirrornet's passes then these); a fresh one starts from the facts a
    mirrornet.onnx carries."""
    if ctx is None:
        ctx = PassContext(facts=set(MIRRORNET_FACTS))
    passes = [SplitPass(), FoldBnPass(), MemPlanPass()]
    if ta_name is not None:
        passes.append(LowerCPass(ta_name, tee_memory))
    secure = PassManager(passes).run(mirrornet, ctx)
    return SecureBuild(ctx.info["normal"], secure, ctx.info["secure_plan"], ctx.info.get("lowered"), ctx.results)


def compile_to_c(
    path: str | Path,
    ta_name: str,
    *,
    tee_memory: int | None = None,
    channels: int = 2,
    select: str = "first",
    seed: int = 0,
    init: str = "random",
    dense_width: int | None = None,
) -> tuple[onnx.ModelProto, SecureBuild]:
    """Load to lowered C in one pass context, the CPM's weights as the mirror pass drew them
    (untrained): the mirrornet and its secure build, whose `results` hold all ten passes."""
    model, ctx = _mirrornet(path, dict(channels=channels, select=select, seed=seed, init=init, dense_width=dense_width))
    return model, secure_pipeline(model, ta_name, tee_memory=tee_memory, ctx=ctx)


def _public(ctx: PassContext) -> dict:
    info = ctx.info
    out = {
        "source": info.get("source"),
        "input": info.get("input"),
        "num_classes": info.get("num_classes"),
        "logits": info.get("logits"),
        "logits_in_source": info.get("logits_in_source"),  # same numbers in the source file (for checks)
        "batch_relaxed": info.get("batch_relaxed"),  # the source's fixed batch, made symbolic (or None)
        "num_stages": info.get("num_stages"),
        "tap_tensors": info.get("taps"),
        "stage_of": info.get("stage_of"),
        "timings": dict(ctx.timings),
    }
    if "taps_meta" in info:
        out.update(
            taps=info["taps_meta"],
            options=info["options"],
            dense_width=info["dense_width"],
            cpm_head=info["cpm_head"],
            node_world=info["node_world"],
            node_stage=info["node_stage"],
        )
    return out
