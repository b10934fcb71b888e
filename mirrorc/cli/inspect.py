"""`mirrorc inspect`: print what mirrorc.plan.inspect finds in a classifier."""

from __future__ import annotations

import click

from mirrorc.cli.common import echo_json, user_errors


def _print_report(r: dict) -> None:
    from mirrorc.plan.layers import fmt_count

    click.echo(f"model: {r['source']['file']}  (sha256 {r['source']['sha256'][:12]})")
    click.echo(
        f"input: {r['input']['name']} {r['input']['shape']}   classes: {r['num_classes']}   logits: {r['logits']}"
    )
    click.echo(f"params: {fmt_count(r['totals']['params'])}   MACs: {fmt_count(r['totals']['macs'])} per sample")
    click.echo("")
    click.echo(f"{'stage':>5}  {'layer':<28} {'notation':<34} {'params':>9} {'MACs':>9}")
    for layer in r["layers"]:
        click.echo(
            f"{layer['stage']:>5}  {layer['name'][:28]:<28} {layer['notation']:<34} "
            f"{fmt_count(layer['params']):>9} {fmt_count(layer['macs']):>9}"
        )
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
        click.echo(
            f"CPM at C={c['channels']}: params {fmt_count(c['params'])}, MACs {fmt_count(c['macs'])} "
            f"({100 * c['macs_vs_backbone']:.3g}% of the backbone), "
            f"dense width {c['dense_width'] or 'n/a (no hidden dense layer)'}"
        )
        for layer in c["layers"]:
            click.echo(
                f"{layer['stage']:>5}  {layer['name'][:28]:<28} {layer['notation']:<34} "
                f"{fmt_count(layer['params']):>9} {fmt_count(layer['macs']):>9}"
            )
        for t in c["taps"]:
            click.echo(f"  tap {t['index']}: {t['shape']} = {t['bytes']} bytes to the secure world")


def register(main: click.Group) -> None:
    @main.command("inspect")
    @click.argument("model", type=click.Path(path_type=str))
    @click.option(
        "--channels",
        "-c",
        type=click.IntRange(min=1),
        default=None,
        help="Also build the CPM with C channels and report its size.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @user_errors
    def inspect_cmd(model: str, channels: int | None, as_json: bool) -> None:
        """Layers (paper notation, params, MACs), stages and taps of an ONNX classifier."""
        from mirrorc.plan.inspect import inspect_model

        report = inspect_model(model, channels=channels)
        if as_json:
            echo_json(report)
        else:
            _print_report(report)
