"""`mirrorc check`: whether a classifier will go all the way (mirrorc.plan.check), before any training."""

from __future__ import annotations

import sys

import click

from mirrorc.cli.common import echo_json, user_errors


def register(main: click.Group) -> None:
    @main.command("check")
    @click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=str))
    @click.option("-C", "--channels", default=2, show_default=True, type=click.IntRange(min=1), help="CPM channels C")
    @click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
    @user_errors
    def check_cmd(model_path: str, channels: int, as_json: bool) -> None:
        """Say whether MODEL goes all the way (partition, training, lowering the CPM to C) and, if
        not, every node and op that stops it, one line each. Exit 0: it goes through; 1: it does
        not; 2: MODEL is not a readable ONNX classifier."""
        from mirrorc.plan.check import check, format_check

        result = check(model_path, channels=channels)
        if as_json:
            echo_json(result)
        else:
            click.echo(format_check(result), nl=False)
        sys.exit(0 if result["goes_through"] else 1)
