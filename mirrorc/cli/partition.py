"""`mirrorc partition`: what the mirror puts in each world and what the secure world costs
(mirrorc.plan.report), or the ranked CPM strategies (mirrorc.plan.strategy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mirrorc.cli.common import echo_json, user_errors
from mirrorc.errors import MirrorcError
from mirrorc.train.protect import STRATEGIES
from passes import contract


def _channel_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MirrorcError(f"--channels: '{text}' is not an integer or a comma-separated list of integers") from None
    if not values or any(v < 1 for v in values):
        raise MirrorcError(f"--channels: '{text}' needs positive channel counts")
    return values


def _is_mirrornet(model) -> bool:
    return any(p.key == contract.META_TAPS for p in model.metadata_props)


def register(main: click.Group) -> None:
    @main.command("partition")
    @click.argument("model_path", metavar="MODEL", type=click.Path(path_type=str))
    @click.option(
        "--report",
        "want_report",
        is_flag=True,
        help="print the partition report (the default when --strategies is not given)",
    )
    @click.option(
        "--strategies",
        is_flag=True,
        help="rank protection strategy x C x tap selection by TEE memory fit and predicted latency, "
        "beside each strategy's measured protection",
    )
    @click.option(
        "-C",
        "--channels",
        default=None,
        help="CPM channels C (report; default: the strategy's) or candidates, comma-separated "
        "(--strategies; default 1,2,3,4, plus each strategy's default C)",
    )
    @click.option(
        "--protect",
        default=None,
        metavar="|".join(STRATEGIES),
        help="report the plan of this protection strategy (its default C, and what it measured)  [default: "
        "joint]; with --strategies, the strategies to rank, comma-separated  [default: all]",
    )
    @click.option(
        "--select",
        default=None,
        help="which backbone channels each tap sends: first, spread or random (the mirror pass's modes); "
        "with --strategies, comma-separated  [default: all]",
    )
    @click.option("--seed", default=0, show_default=True, type=int, help="seed of the mirror pass")
    @click.option(
        "--device",
        default="rpi3b-optee",
        show_default=True,
        help="device profile: a bundled name or a profile .json path",
    )
    @click.option(
        "--tee-memory",
        default=None,
        metavar="BYTES|16M",
        help="TEE memory limit (overrides the device profile's); a plan over it is flagged",
    )
    @click.option(
        "--mode",
        type=click.Choice(["single", "streaming"]),
        default="single",
        show_default=True,
        help="which invocation mode's latency ranks the strategies (both are shown)",
    )
    @click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
    @user_errors
    def partition_cmd(
        model_path: str,
        want_report: bool,
        strategies: bool,
        channels: str | None,
        protect: str | None,
        select: str | None,
        seed: int,
        device: str,
        tee_memory: str | None,
        mode: str,
        as_json: bool,
    ) -> None:
        """Mirror MODEL and report the partition: per stage the backbone and CPM layers in the paper's
        notation, their MACs, the bytes each tap sends to the secure world and the emulator's latency;
        then TEE memory, world switches and bytes per inference (streaming and single-invoke).

        MODEL is the original classifier, or an existing mirrornet.onnx (then reported as it is)."""
        from mirrorc.plan import emulator, report, strategy
        from mirrorc.plan.layers import as_model
        from mirrorc.train import protect as protection

        dev = emulator.load_device(device)
        limit = report.parse_size(tee_memory) if tee_memory is not None else None
        wanted = _channel_list(channels)
        if strategies and want_report:
            raise MirrorcError("--report and --strategies: choose one")
        if strategies:
            ranked = strategy.candidates(
                model_path,
                wanted or strategy.DEFAULT_CHANNELS,
                dev,
                strategies=strategy.names_of(protect, STRATEGIES, "--protect", "strategy"),
                selects=None if select is None else select.split(","),
                tee_memory=limit,
                seed=seed,
                mode=mode,
            )
            if as_json:
                echo_json({"device": dev.name, "device_path": dev.path, "mode": mode, "candidates": ranked})
            else:
                click.echo(strategy.format_candidates(ranked, mode), nl=False)
            return
        if wanted is not None and len(wanted) != 1:
            raise MirrorcError(f"--channels: the report takes one channel count, got '{channels}'")
        model = as_model(model_path)
        chosen = protection.get(protect or protection.DEFAULT)
        given_mirrornet = _is_mirrornet(model)
        if given_mirrornet:
            if wanted is not None or select is not None or protect:
                raise MirrorcError(
                    f"{model_path}: already a mirrornet; -C/--select/--protect only apply to an original model"
                )
        else:
            from mirrorc.pipeline import build_mirrornet

            kwargs: dict[str, Any] = {
                "seed": seed,
                "init": "keep",
                "channels": wanted[0] if wanted is not None else chosen.default_channels(model_path),
            }
            if select is not None:
                kwargs["select"] = select
            built = build_mirrornet(model_path, **kwargs)
            model = built[0] if isinstance(built, tuple) else built
        rep = report.build_report(model, dev, tee_memory=limit)
        if not given_mirrornet:
            measured = report.measured_protection(
                chosen.name, Path(model_path).stem, backbone_macs=rep["totals"]["backbone_macs"]
            )
            rep["protection"] = {**protection.describe(chosen), "measured": measured}
        if as_json:
            echo_json(rep)
            for w in rep["warnings"]:  # the text report carries its warnings itself
                click.echo(f"mirrorc: warning: {w}", err=True)
        else:
            click.echo(report.format_report(rep), nl=False)
