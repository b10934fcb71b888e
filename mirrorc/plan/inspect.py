"""What the compiler core sees in a classifier (`mirrorc inspect`): its layers in the paper's
notation with params and MACs, and the stages and taps the CPM would be built on."""

from __future__ import annotations

from mirrorc.pipeline import analyze, build_mirrornet
from mirrorc.plan import layers as L
from passes.base import to_proto


def inspect_model(path: str, *, channels: int | None = None) -> dict:
    """The inspect report as a dict. With `channels`, the CPM is built too (backbone weights kept)
    and its size is reported next to the backbone's."""
    graph, info = analyze(path)
    all_layers = L.layers(to_proto(graph))  # (our exporter writes big weights once; gs's copies them 4x)
    stage_of = info["stage_of"]
    tensors = graph.tensors()
    compute = [dict(layer.to_dict(), stage=stage_of[layer.name]) for layer in L.compute_layers(all_layers)]
    stages = []
    for k in range(1, info["num_stages"] + 1):
        names = [n for n, s in stage_of.items() if s == k]
        tot = L.totals(all_layers, names)
        entry = {
            "index": k,
            "nodes": len(names),
            "layers": [c["name"] for c in compute if c["stage"] == k],
            "params": tot.params,
            "macs": tot.macs,
            "tap": None,
        }
        if k <= len(info["tap_tensors"]):
            t = tensors[info["tap_tensors"][k - 1]]
            entry["tap"] = {"index": k, "tensor": t.name, "producer": t.inputs[0].op, "shape": list(t.shape[1:])}
        stages.append(entry)
    total = L.totals(all_layers)
    report = {
        "source": info["source"],
        "input": info["input"],
        "num_classes": info["num_classes"],
        "logits": info["logits"],
        "layers": compute,
        "totals": {"params": total.params, "macs": total.macs},
        "stages": stages,
        "timings": info["timings"],
    }
    if channels is not None:
        model, minfo = build_mirrornet(path, channels=channels, init="keep")
        mlayers = L.layers(model)
        cpm = [n.name for n in model.graph.node if minfo["node_world"][n.name] == "secure"]
        ct = L.totals(mlayers, cpm)
        cpm_layers = [
            dict(layer.to_dict(), stage=minfo["node_stage"][layer.name])
            for layer in L.compute_layers(mlayers)
            if layer.name in set(cpm)
        ]
        report["cpm"] = {
            "channels": channels,
            "dense_width": minfo["dense_width"],
            "params": ct.params,
            "macs": ct.macs,
            "macs_vs_backbone": ct.macs / max(total.macs, 1),
            "layers": cpm_layers,
            "taps": minfo["taps"],
        }
    return report
