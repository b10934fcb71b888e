"""The compiler core as a library: load -> canonicalize -> taps (analysis) and
-> mirror -> annotate -> verify (the annotated mirrornet.onnx).

    model, info = build_mirrornet("lenet5.onnx", channels=2)

`info` holds what the later stages and reports need: input, num_classes, taps (the contract's
per-tap objects), stage of every backbone node, the CPM's head layers, the options used, and the
time each pass took.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from passes.annotate import AnnotatePass
from passes.base import PassContext, PassManager, to_proto
from passes.canonicalize import CanonicalizePass
from passes.load import LoadPass
from passes.mirror import MirrorPass, normalize_options
from passes.taps import TapsPass
from passes.verify import VerifyPass


def analyze(path: str | Path) -> tuple[gs.Graph, dict]:
    """The canonical backbone graph and its stages and taps (what `mirrorc inspect` shows)."""
    ctx = PassContext(source=Path(path))
    graph = PassManager([LoadPass(), CanonicalizePass(), TapsPass()]).run(None, ctx)
    return graph, _public(ctx)


def build_mirrornet(path: str | Path, *, channels: int = 2, select: str = "first", seed: int = 0,
                    init: str = "random", dense_width: int | None = None) -> tuple[onnx.ModelProto, dict]:
    """The annotated, verified mirrornet.onnx for the classifier at `path`, and its info dict."""
    options = normalize_options({"channels": channels, "select": select, "seed": seed, "init": init,
                                 "dense_width": dense_width})
    ctx = PassContext(source=Path(path), options=options)
    passes = [LoadPass(), CanonicalizePass(), TapsPass(), MirrorPass(), AnnotatePass(), VerifyPass()]
    model = to_proto(PassManager(passes).run(None, ctx))
    return model, _public(ctx)


def _public(ctx: PassContext) -> dict:
    info = ctx.info
    out = {
        "source": info.get("source"),
        "input": info.get("input"),
        "num_classes": info.get("num_classes"),
        "logits": info.get("logits"),
        "logits_in_source": info.get("logits_in_source"),  # same numbers in the source file (for checks)
        "num_stages": info.get("num_stages"),
        "tap_tensors": info.get("taps"),
        "stage_of": info.get("stage_of"),
        "timings": dict(ctx.timings),
    }
    if "taps_meta" in info:
        out.update(taps=info["taps_meta"], options=info["options"], dense_width=info["dense_width"],
                   cpm_head=info["cpm_head"], node_world=info["node_world"], node_stage=info["node_stage"])
    return out
