"""CPM Strategy Generator (MirrorNet paper Sec. IV-D, widened to what a mirrorc user chooses between):
every protection strategy (`mirrorc.train.protect.STRATEGIES`) at its own default C and at the C
values asked for, with every tap selection, estimated with the Performance Emulator under a device
profile and the TEE memory plan, beside the protection that strategy measured (results/, by
`mirrorc.plan.report.measured_protection`).

Ranking: candidates that fit the TEE memory first, then by predicted secure-world latency in the
chosen mode. Latency alone always favours the smallest C, and it cannot tell the strategies apart
(they train the same mirrornet differently), so each row also says whether it is Pareto-optimal on
(latency, the thief's head start at the smallest label budget measured): among the rows that fit and
whose figures were measured at that row's own strategy, C and tap selection, none is both faster
(or as fast) and leaves the thief a smaller (or equal) head start."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mirrorc.errors import MirrorcError
from mirrorc.plan import emulator
from mirrorc.plan.report import build_report, measured_on, measured_protection, smallest_budget_head_start
from mirrorc.train import protect
from passes.mirror import SELECT_MODES

MODES = ("single", "streaming")
DEFAULT_CHANNELS = (1, 2, 3, 4)

# build(path, channels, select, seed) -> mirrornet, or (mirrornet, info)
Build = Callable[[str | os.PathLike, int, str, int], Any]


def _default_build(path: str | os.PathLike, channels: int, select: str, seed: int) -> Any:
    from mirrorc.pipeline import build_mirrornet

    return build_mirrornet(os.fspath(path), channels=channels, select=select, seed=seed, init="keep")


def names_of(text: str | None, known: Iterable[str], field: str, what: str) -> list[str]:
    """A comma-separated choice among `known` (all of them when `text` is None), or one error line."""
    known = list(known)
    if text is None:
        return known
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise MirrorcError(f"{field}: unknown {what} '{(unknown or [text])[0]}' (one of {', '.join(known)})")
    return list(dict.fromkeys(names))


def _head_start_points(text: str) -> float | None:
    """The mean of a head start as attacks.py writes it (`+5.81 ± 0.18`), or None."""
    m = re.match(r"\s*([+-]?\d+(?:\.\d+)?)", text)
    return float(m.group(1)) if m else None


def _figures(measured: dict, channels: int, select: str) -> dict | None:
    """The measured row that speaks for a candidate: at its C and tap selection if measured, else the
    nearest C; labelled with the model, C and selection it was measured at."""
    if not measured["rows"]:
        return None
    row = min(
        measured["rows"],
        key=lambda r: (abs(int(r["C"]) - channels), r.get("select", "first") != select),
    )
    budget, head_start = smallest_budget_head_start(row) or (None, None)
    exact = int(row["C"]) == channels and row.get("select", "first") == select
    return {
        "on": measured_on(measured),
        "model": measured["model"],
        "dataset": row["dataset"],
        "match": measured["match"],
        "C": int(row["C"]),
        "select": row.get("select", "first"),
        "this_configuration": exact,
        "cost": row["cost"],
        "backbone": row.get("backbone"),
        "delta_p": row.get("delta_p"),
        "budget": budget,
        "head_start": head_start,
        "head_start_points": _head_start_points(head_start) if head_start else None,
        "file": measured["file"],
        "command": measured["command"],
    }


def _mark_pareto(rows: list[dict]) -> None:
    """`pareto`: True/False for rows that fit and carry a head start measured at their own configuration,
    None for the rest (nothing to compare them on)."""
    comparable = []
    for x in rows:
        fig = x.get("measured")
        ok = x.get("fits") and fig and fig["this_configuration"] and fig["head_start_points"] is not None
        x["pareto"] = None
        if ok:
            comparable.append(x)
    for x in comparable:
        lat, hs = x["latency_us"], x["measured"]["head_start_points"]
        x["pareto"] = not any(
            y["latency_us"] <= lat
            and y["measured"]["head_start_points"] <= hs
            and (y["latency_us"] < lat or y["measured"]["head_start_points"] < hs)
            for y in comparable
        )


def candidates(
    path: str | os.PathLike,
    channels: Iterable[int] = DEFAULT_CHANNELS,
    device: emulator.Device | str | os.PathLike | None = None,
    *,
    strategies: Iterable[str] | None = None,
    selects: Iterable[str] | None = None,
    tee_memory: int | str | None = None,
    seed: int = 0,
    mode: str = "single",
    build: Build | None = None,
) -> list[dict]:
    """One dict per (strategy, C, tap selection), ranked (see module doc). C runs over `channels` plus
    each strategy's default C (`default_channels: true` on that row). A (C, selection) that cannot be
    built (e.g. more channels than a tap has) is kept, last, with its error. `build(path, channels,
    select, seed)` returns the mirrornet (or `(mirrornet, info)`); it defaults to
    `mirrorc.pipeline.build_mirrornet`. The strategies train the same mirrornet, so each (C,
    selection) is built and estimated once."""
    if mode not in MODES:
        raise MirrorcError(f"strategy mode '{mode}': expected one of {', '.join(MODES)}")
    asked = list(dict.fromkeys(int(c) for c in channels))
    if not asked or any(c < 1 for c in asked):
        raise MirrorcError(f"--channels: candidates must be positive integers, got {asked}")
    chosen = [protect.get(name) for name in (strategies if strategies is not None else protect.STRATEGIES)]
    select_modes = names_of(None if selects is None else ",".join(selects), SELECT_MODES, "--select", "tap selection")
    dev = device if isinstance(device, emulator.Device) else emulator.load_device(device)
    build = build or _default_build
    model_name = Path(path).stem

    estimates: dict[tuple[int, str], dict] = {}

    def estimate(c: int, select: str) -> dict:
        """The report's figures for one mirrornet, or its build error."""
        if (c, select) not in estimates:
            try:
                built = build(path, c, select, seed)
            except MirrorcError as e:
                estimates[c, select] = {"error": str(e)}
                return estimates[c, select]
            model = built[0] if isinstance(built, tuple) else built
            r = build_report(model, dev, tee_memory=tee_memory)
            estimates[c, select] = {
                "latency_us": r["latency_us"][mode],
                "latency_single_us": r["latency_us"]["single"],
                "latency_streaming_us": r["latency_us"]["streaming"],
                "cpm_macs": r["totals"]["cpm_macs"],
                "cpm_params": r["totals"]["cpm_params"],
                "backbone_macs": r["totals"]["backbone_macs"],
                "cpm_backbone_mac_ratio": r["totals"]["cpm_backbone_mac_ratio"],
                "bytes_per_inference": r["transfer"]["single"]["bytes"],
                "tee_memory": r["memory"]["total"],
                "tee_limit": r["memory"]["limit"],
                "fits": r["memory"]["fits"],
            }
        return estimates[c, select]

    out = []
    measured: dict[str, dict] = {}
    for strategy in chosen:
        default_c = strategy.default_channels(os.fspath(path))
        for c in dict.fromkeys([default_c, *asked]):
            for select in select_modes:
                est = estimate(c, select)
                row = {"strategy": strategy.name, "channels": c, "select": select, "default_channels": c == default_c}
                if "error" not in est and strategy.name not in measured:
                    # the strategy's figures from the results file nearest to this model (one lookup each)
                    measured[strategy.name] = measured_protection(strategy.name, model_name, est["backbone_macs"])
                if "error" not in est:
                    row["measured"] = _figures(measured[strategy.name], c, select)
                out.append({**row, **est})
    order = {name: i for i, name in enumerate(protect.STRATEGIES)}
    ok = sorted(
        (x for x in out if "error" not in x),
        key=lambda x: (
            not x["fits"],
            x["latency_us"],
            order[x["strategy"]],
            x["channels"],
            SELECT_MODES.index(x["select"]),
        ),
    )
    _mark_pareto(ok)
    ranked = ok + [x for x in out if "error" in x]
    for rank, x in enumerate(ranked, 1):
        x["rank"] = rank
    return ranked


def format_candidates(ranked: list[dict], mode: str = "single") -> str:
    from mirrorc.plan.layers import fmt_count
    from mirrorc.plan.report import fmt_bytes, fmt_ratio, text_table

    header = ["rank", "strategy", "C", "select", "single ms", "streaming ms", "CPM/backbone", "CPM MACs"]
    header += ["TEE memory", "fits", "pareto", "measured protection"]
    rows = [header]
    sources: dict[str, str] = {}
    for x in ranked:
        c = f"{x['channels']}{'*' if x.get('default_channels') else ''}"
        if "error" in x:
            rows.append([str(x["rank"]), x["strategy"], c, x["select"], *["-"] * 7, x["error"]])
            continue
        fig = x["measured"]
        if fig is None:
            measured = "none measured"
        else:
            sources[fig["file"]] = fig["command"]
            measured = (
                f"{fig['on']}, C = {fig['C']} {fig['select']}: cost {fig['cost']:+.2f}, backbone alone "
                f"{_num(fig['backbone'])}%, Δp {_num(fig['delta_p'])}, head start @{fig['budget']} {fig['head_start']}"
            )
        rows.append(
            [
                str(x["rank"]),
                x["strategy"],
                c,
                x["select"],
                f"{x['latency_single_us'] / 1000:.3f}",
                f"{x['latency_streaming_us'] / 1000:.3f}",
                fmt_ratio(x["cpm_backbone_mac_ratio"]),
                fmt_count(x["cpm_macs"]),
                fmt_bytes(x["tee_memory"]),
                "yes" if x["fits"] else f"NO (limit {fmt_bytes(x['tee_limit'])})",
                {True: "yes", False: "no", None: "-"}[x["pareto"]],
                measured,
            ]
        )
    notes = [
        f"ranked by TEE memory fit, then predicted {mode} latency; * = the strategy's default C",
        "pareto: not beaten on both predicted latency and measured head start (lower is better) by another "
        "row that fits; '-' = no head start measured at this row's strategy, C and selection",
        "cost = unprotected - MirrorNet accuracy (points), head start = best attack - training from scratch "
        "at the smallest label budget measured (points)",
    ]
    notes += [f"measured: {file} (`{command}`)" for file, command in sources.items()]
    return "\n".join(text_table(rows, right={0, 2, 4, 5, 6, 7, 8}) + notes) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
