"""`mirrorc profile`: fit a Performance Emulator device profile on this target (mirrorc.profile)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mirrorc.cli.common import echo_json, user_errors


def register(main: click.Group) -> None:
    @main.command("profile")
    @click.option("--tee", type=click.Choice(["sim", "optee"]), default="sim", help="Where the secure world runs.")
    @click.option(
        "-o", "--output", type=click.Path(path_type=Path), default=None, help="Write the profile JSON to this file."
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
    @user_errors
    def profile_cmd(tee: str, output: Path | None, as_json: bool) -> None:
        """Measure the secure world's layer and transfer costs and fit a device profile
        (usable as `mirrorc partition --device FILE`)."""
        from mirrorc.outdir import atomic_file
        from mirrorc.profile import calibrate

        profile = calibrate(tee)
        if output is not None:
            with atomic_file(output) as tmp:
                Path(tmp).write_text(json.dumps(profile, indent=2) + "\n")
        if as_json:
            echo_json(profile)
            return
        for key, slope, unit in (
            ("conv2d_us", "per_workload", "MAC"),
            ("dense_us", "per_workload", "MAC"),
            ("context_switch_us", "per_kb", "KB"),
        ):
            fit = profile[key]
            click.echo(f"{key:<18} {fit[slope]:.4g} us/{unit} + {fit['base']:.4g} us")
        if output is not None:
            click.echo(f"profile written to {output}")
