"""CPM Strategy Generator (MirrorNet paper Sec. IV-D): build the mirrornet for each candidate channel
count C, estimate each with the Performance Emulator and the TEE memory plan, and rank them.

Ranking: candidates that fit the TEE memory first, then by predicted secure-world latency in the
chosen mode. Latency alone always favours the smallest C; the paper picks among the fitting
candidates by the accuracy gap after training (a larger C protects better), so the table shows all
of them rather than one answer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from mirrorc.errors import MirrorcError
from mirrorc.plan import emulator
from mirrorc.plan.report import build_report

MODES = ("single", "streaming")


def _default_build(path, channels, select, seed):
    from mirrorc.pipeline import build_mirrornet

    kwargs = {"channels": channels, "seed": seed, "init": "keep"}
    if select is not None:
        kwargs["select"] = select
    return build_mirrornet(path, **kwargs)


def candidates(
    path: str | os.PathLike,
    channels: Iterable[int] = (1, 2, 3, 4),
    device: emulator.Device | str | os.PathLike | None = None,
    *,
    tee_memory: int | str | None = None,
    select: str | None = None,
    seed: int = 0,
    mode: str = "single",
    build: Callable | None = None,
) -> list[dict]:
    """One dict per C, ranked (see module doc). A C that cannot be built (e.g. more channels than a
    tap has) is kept, last, with its error. `build(path, channels, select, seed)` returns the mirrornet
    (or `(mirrornet, info)`); it defaults to `mirrorc.pipeline.build_mirrornet`."""
    if mode not in MODES:
        raise MirrorcError(f"strategy mode '{mode}': expected one of {', '.join(MODES)}")
    channels = list(dict.fromkeys(int(c) for c in channels))
    if not channels or any(c < 1 for c in channels):
        raise MirrorcError(f"--channels: candidates must be positive integers, got {channels}")
    dev = device if isinstance(device, emulator.Device) else emulator.load_device(device)
    build = build or _default_build
    out = []
    for c in channels:
        try:
            built = build(path, c, select, seed)
        except MirrorcError as e:
            out.append({"channels": c, "error": str(e)})
            continue
        model = built[0] if isinstance(built, tuple) else built
        r = build_report(model, dev, tee_memory=tee_memory)
        out.append(
            {
                "channels": c,
                "latency_us": r["latency_us"][mode],
                "latency_streaming_us": r["latency_us"]["streaming"],
                "latency_single_us": r["latency_us"]["single"],
                "cpm_macs": r["totals"]["cpm_macs"],
                "cpm_params": r["totals"]["cpm_params"],
                "cpm_backbone_mac_ratio": r["totals"]["cpm_backbone_mac_ratio"],
                "bytes_per_inference": r["transfer"]["single"]["bytes"],
                "tee_memory": r["memory"]["total"],
                "tee_limit": r["memory"]["limit"],
                "fits": r["memory"]["fits"],
            }
        )
    ok = sorted((x for x in out if "error" not in x), key=lambda x: (not x["fits"], x["latency_us"], x["channels"]))
    ranked = ok + [x for x in out if "error" in x]
    for rank, x in enumerate(ranked, 1):
        x["rank"] = rank
    return ranked


def format_candidates(ranked: list[dict], mode: str = "single") -> str:
    from mirrorc.plan.layers import fmt_count
    from mirrorc.plan.report import fmt_bytes, fmt_ratio, text_table

    rows = [
        [
            "rank",
            "C",
            "single ms",
            "streaming ms",
            "CPM MACs",
            "CPM/backbone",
            "CPM params",
            "bytes/inf",
            "TEE memory",
            "fits",
        ]
    ]
    for x in ranked:
        if "error" in x:
            rows.append([str(x["rank"]), str(x["channels"]), "-", "-", "-", "-", "-", "-", "-", x["error"]])
            continue
        rows.append(
            [
                str(x["rank"]),
                str(x["channels"]),
                f"{x['latency_single_us'] / 1000:.3f}",
                f"{x['latency_streaming_us'] / 1000:.3f}",
                fmt_count(x["cpm_macs"]),
                fmt_ratio(x["cpm_backbone_mac_ratio"]),
                fmt_count(x["cpm_params"]),
                str(x["bytes_per_inference"]),
                fmt_bytes(x["tee_memory"]),
                "yes" if x["fits"] else f"NO (limit {fmt_bytes(x['tee_limit'])})",
            ]
        )
    note = (
        f"ranked by memory fit, then predicted {mode} latency; a larger C protects better "
        f"(accuracy gap, paper Table III), so pick the largest C whose cost is acceptable"
    )
    return "\n".join(text_table(rows, right=set(range(9))) + [note]) + "\n"
