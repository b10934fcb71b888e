"""`mirrorc inspect`: what the compiler core sees in a classifier — its layers in the paper's
notation with params and MACs, and the stages and taps the CPM would be built on."""

from __future__ import annotations

import click

from mirrorc.clikit import echo_json, user_errors


def inspect_model(path: str, *, channels: int | None = None) -> dict:
    """The inspect report as a dict. With `channels`, the CPM is built too (backbone weights kept)
    and its size is reported next to the backbone's."""
    from mirrorc import layers as L
    from mirrorc.pipeline import analyze, build_mirrornet
    from passes.base import to_proto

    graph, info = analyze(path)
    all_layers = L.layers(to_proto(graph))  # (our exporter writes big weights once; gs's copies them 4x)
    stage_of = info["stage_of"]
    tensors = graph.tensors()
    compute = [dict(layer.to_dict(), stage=stage_of[layer.name]) for layer in L.compute_layers(all_layers)]
    stages = []
    for k in range(1, info["num_stages"] + 1):
        names = [n for n, s in stage_of.items() if s == k]
        tot = L.totals(all_layers, names)
        entry = {"index": k, "nodes": len(names), "layers": [c["name"] for c in compute if c["stage"] == k],
                 "params": tot.params, "macs": tot.macs, "tap": None}
        if k <= len(info["tap_tensors"]):
            t = tensors[info["tap_tensors"][k - 1]]
            entry["tap"] = {"index": k, "tensor": t.name, "producer": t.inputs[0].op, "shape": list(t.shape[1:])}
        stages.append(entry)
    total = L.totals(all_layers)
    report = {"source": info["source"], "input": info["input"], "num_classes": info["num_classes"],
              "logits": info["logits"], "layers": compute, "totals": {"params": total.params, "macs": total.macs},
              "stages": stages, "timings": info["timings"]}
    if channels is not None:
        model, minfo = build_mirrornet(path, channels=channels, init="keep")
        mlayers = L.layers(model)
        cpm = [n.name for n in model.graph.node if minfo["node_world"][n.name] == "secure"]
        ct = L.totals(mlayers, cpm)
        cpm_layers = [dict(layer.to_dict(), stage=minfo["node_stage"][layer.name])
                      for layer in L.compute_layers(mlayers) if layer.name in set(cpm)]
        report["cpm"] = {"channels": channels, "dense_width": minfo["dense_width"], "params": ct.params,
                         "macs": ct.macs, "macs_vs_backbone": ct.macs / max(total.macs, 1),
                         "layers": cpm_layers, "taps": minfo["taps"]}
    return report


def _print_report(r: dict) -> None:
    from mirrorc.layers import fmt_count

    click.echo(f"model: {r['source']['file']}  (sha256 {r['source']['sha256'][:12]})")
    click.echo(f"input: {r['input']['name']} {r['input']['shape']}   classes: {r['num_classes']}   "
               f"logits: {r['logits']}")
    click.echo(f"params: {fmt_count(r['totals']['params'])}   MACs: {fmt_count(r['totals']['macs'])} per sample")
    click.echo("")
    click.echo(f"{'stage':>5}  {'layer':<28} {'notation':<34} {'params':>9} {'MACs':>9}")
    for layer in r["layers"]:
        click.echo(f"{layer['stage']:>5}  {layer['name'][:28]:<28} {layer['notation']:<34} "
                   f"{fmt_count(layer['params']):>9} {fmt_count(layer['macs']):>9}")
    click.echo("")
    click.echo(f"stages and taps ({len(r['stages'])} stages, {len(r['stages']) - 1} taps):")
    for s in r["stages"]:
        head = f"  stage {s['index']:>2}: {len(s['layers'])} layer(s), {fmt_count(s['macs'])} MACs"
        if s["tap"]:
            t = s["tap"]
            click.echo(f"{head} -> tap {t['index']} = '{t['tensor']}' after {t['producer']} {t['shape']}")
        else:
            click.echo(f"{head} -> logits '{r['logits']}'")
    if "cpm" in r:
        c = r["cpm"]
        click.echo("")
        click.echo(f"CPM at C={c['channels']}: params {fmt_count(c['params'])}, MACs {fmt_count(c['macs'])} "
                   f"({100 * c['macs_vs_backbone']:.3g}% of the backbone), "
                   f"dense width {c['dense_width'] or 'n/a (no hidden dense layer)'}")
        for layer in c["layers"]:
            click.echo(f"{layer['stage']:>5}  {layer['name'][:28]:<28} {layer['notation']:<34} "
                       f"{fmt_count(layer['params']):>9} {fmt_count(layer['macs']):>9}")
        for t in c["taps"]:
            click.echo(f"  tap {t['index']}: {t['shape']} = {t['bytes']} bytes to the secure world")


def register(main: click.Group) -> None:
    @main.command("inspect")
    @click.argument("model", type=click.Path(dir_okay=False))
    @click.option("--channels", "-c", type=click.IntRange(min=1), default=None,
                  help="Also build the CPM with C channels and report its size.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @user_errors
    def inspect_cmd(model, channels, as_json):
        """Layers (paper notation, params, MACs), stages and taps of an ONNX classifier."""
        report = inspect_model(model, channels=channels)
        if as_json:
            echo_json(report)
        else:
            _print_report(report)
