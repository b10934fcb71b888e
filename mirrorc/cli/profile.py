"""`mirrorc profile`: fit a Performance Emulator device profile on this target (mirrorc.profile)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mirrorc.cli.common import echo_json, user_errors
from mirrorc.errors import MirrorcError


def register(main: click.Group) -> None:
    @main.command("profile")
    @click.option(
        "--tee",
        type=click.Choice(["sim", "optee"]),
        default="sim",
        help="Where the nodes are timed: sim = a host harness around the model C; optee = inside a calibration "
        "TA on TEE_GetSystemTime (run by the simulator on this host).",
    )
    @click.option(
        "-o", "--output", type=click.Path(path_type=Path), default=None, help="Write the profile JSON to this file."
    )
    @click.option(
        "--models",
        # mirrorc.profile.DEFAULT_MODELS (a test holds them equal)
        default="lenet5,vgg7,sweep32,sweep64,sweep112,sweep56,sweep55,sweep208,sweep13",
        show_default=True,
        help="Models timed, comma-separated: the examples and the layer-shape sweep (mirrorc.profile_sweep).",
    )
    @click.option(
        "-C", "--channels", default="1,2,4", show_default=True, help="CPM widths C swept per model, comma-separated."
    )
    @click.option(
        "--warm",
        is_flag=True,
        help="With --tee sim: time inferences back to back, the CPM's data left in the caches, instead of "
        "cold (as on a device, where the normal world runs between two of them).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
    @user_errors
    def profile_cmd(tee: str, output: Path | None, models: str, channels: str, warm: bool, as_json: bool) -> None:
        """Measure the secure world's layer and transfer costs and fit a device profile
        (usable as `mirrorc partition --device FILE`)."""
        from mirrorc.outdir import atomic_file
        from mirrorc.profile import EVICT_BYTES, calibrate

        try:
            widths = [int(c) for c in channels.split(",")]
        except ValueError:
            raise MirrorcError(f"--channels: '{channels}' is not a comma-separated list of integers") from None
        if any(c < 1 for c in widths):
            raise MirrorcError(f"--channels: every C must be at least 1, got {channels}")
        profile = calibrate(tee, models=models.split(","), channels=widths, evict_bytes=0 if warm else EVICT_BYTES)
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
        for kernel, t in profile["kernels_us"].items():  # what the emulator uses in place of the lines above
            loops = (
                f"{t['per_in_float']:.4g} us/input + {t['per_out_channel']:.4g} us/out channel "
                f"+ {t.get('per_weight', 0):.4g} us/weight"
                if kernel != "dense"
                else f"{t['per_in_float']:.4g} us/input"
            )
            click.echo(
                f"{kernel:<18} {t['per_mac']:.4g} us/MAC + {t['per_out_float']:.4g} us/out float + {loops} "
                f"+ {t.get('per_unaligned_float', 0):.4g} us/unaligned float + {t['base']:.4g} us"
            )
        cold = profile["cold_read_us"]
        click.echo(
            f"{'cold reads':<18} {cold['per_head_float']:.4g} us/float of the first {cold['head_floats']} "
            f"+ {cold['per_float']:.4g} us/float + {cold['per_tap']:.4g} us per tap"
        )
        click.echo(f"{'call_us':<18} {profile['call_us']['base']:.4g} us per inference")
        if output is not None:
            click.echo(f"profile written to {output}")
