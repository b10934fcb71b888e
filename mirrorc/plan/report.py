"""The partition report: what runs where, what crosses the world boundary, and what the secure world
costs (time from the Performance Emulator, memory from a liveness plan) for one `mirrornet.onnx`.

`build_report(model, device)` reads a mirrornet that follows docs/ARCHITECTURE.md (node metadata
`mirrorc.world`/`mirrorc.stage`, model metadata `mirrorc.taps`, `cpm/` names) and returns a plain
dict (the `--json` form); `format_report(report)` renders it as aligned text."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import onnx

from mirrorc.errors import MirrorcError
from mirrorc.pipeline import secure_pipeline
from mirrorc.plan import emulator
from mirrorc.plan import layers as L
from mirrorc.train.protect import get as get_strategy
from passes import contract
from passes.lower_c import SecurePlan, first_touch_floats, fuse_epilogues
from passes.memplan import MemoryPlan

FINAL_NODES = ("cpm/final_add", "cpm/argmax")  # run by the final command whatever their stage says


def parse_size(text: str | int, field: str = "--tee-memory") -> int:
    """Bytes from `123`, `64K`, `16M`, `1G` (binary units, as the TEE's 16 MB is 16 MiB)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]i?[bB]?|[bB])?\s*", str(text))
    if not m:
        raise MirrorcError(f"{field}: '{text}' is not a size (e.g. 16777216, 512K, 16M)")
    unit = (m.group(2) or "b")[0].lower()
    return int(float(m.group(1)) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit])


def _meta(node) -> dict:
    return {p.key: p.value for p in node.metadata_props}


def _as_the_c_runs(
    secure: list[tuple[int, onnx.NodeProto]], all_layers: list[L.Layer], shapes: L.Shapes, plan: SecurePlan
) -> dict[int, L.Layer]:
    """The secure nodes' layers as the generated C runs them (node index -> Layer): a Conv's ReLU and
    GlobalAveragePool epilogues run inside its kernel (passes.lower_c.fuse_epilogues), so they have no
    time of their own (a fitted profile's conv terms hold them), and a conv with a fused global average
    pool is the conv_gap kernel. The ArgMax to the label is not a step (its time is in the profile's
    fixed cost per inference), as in `mirrorc.profile.step_layers`. A node's inputs that are neither a
    secure node's outputs nor weights came from the normal world (`Layer.tap_in_floats`); the arena
    lines each writes first are the secure build's memory plan's (`plan`)."""
    run, fused = fuse_epilogues(list(secure), {contract.LABEL})  # each fused Conv writes its chain's end
    own = {t for _, node in secure for t in node.output}
    fresh = {nd.name: f for (_, nd), f in zip(plan.body, first_touch_floats(plan), strict=True)}
    kept = [(i, node) for i, node in run if contract.LABEL not in node.output]
    taps = emulator.first_reads(
        [(t, shapes.sample_floats(t)) for t in node.input if t and t not in own and t not in shapes.const]
        for _, node in kept
    )
    marked = emulator.first_of_kind(
        [
            emulator.as_run(all_layers[i], fused.get(node.output[0]), cold, fresh.get(node.name, 0))
            for (i, node), cold in zip(kept, taps, strict=True)
        ]
    )
    return {i: x for (i, _), x in zip(kept, marked)}


def _model_meta(model: onnx.ModelProto, where: str) -> tuple[int, int, list[dict]]:
    meta = {p.key: p.value for p in model.metadata_props}
    for key in (contract.META_CHANNELS, contract.META_NUM_CLASSES, contract.META_TAPS):
        if key not in meta:
            raise MirrorcError(f"{where}: not a mirrornet: model metadata '{key}' is missing")
    try:
        taps = json.loads(meta[contract.META_TAPS])
        taps = sorted(taps, key=lambda t: int(t["index"]))
        for t in taps:
            t["bytes"] = int(t["bytes"])
        return int(meta[contract.META_CHANNELS]), contract.num_classes(model, where), taps
    except (ValueError, KeyError, TypeError) as e:
        raise MirrorcError(f"{where}: model metadata 'mirrorc.taps'/'mirrorc.channels' is malformed: {e}") from None


def _floats_of(shapes: L.Shapes, name: str) -> int:
    """Elements in one sample of tensor `name` (the batch dimension dropped)."""
    shape = shapes.shape.get(name)
    if shape is None or any(d is None for d in shape[1:]):
        raise MirrorcError(f"report: shape of secure tensor '{name}' is unknown")
    n = 1
    for d in shape[1:]:
        n *= d
    return n


def _layer_row(layer: L.Layer) -> dict:
    return {"name": layer.name, "notation": layer.notation, "macs": layer.macs, "params": layer.params}


def _secure_memory(mp: MemoryPlan, model, secure, shapes: L.Shapes, taps, num_classes, node_layers) -> dict:
    """Weights after BatchNorm folding, and the arena and per-session carry exactly as the C lowering
    will lay them out: the secure pipeline's memory plan of the split, BN-folded secure graph
    (schedule per docs/ARCHITECTURE.md, liveness, in-place steps, conv scratch)."""
    nodes = model.graph.node
    producer = {o: i for i, node in enumerate(nodes) for o in node.output if o}

    readers: dict[str, int] = {}
    for node in nodes:
        for x in node.input:
            readers[x] = readers.get(x, 0) + 1
    weights = 0
    for i, node in secure:
        if node.op_type != "BatchNormalization":
            weights += 4 * node_layers[i].params
            continue
        # As passes/fold_bn and lower_c store it: folded into a Conv that only it reads (adding a
        # bias if the Conv had none), else a per-channel scale and shift.
        src = producer.get(node.input[0])
        conv = nodes[src] if src is not None else None
        if conv is not None and conv.op_type == "Conv" and readers.get(node.input[0]) == 1:
            if len(conv.input) < 3 or not conv.input[2]:
                weights += 4 * node_layers[src].oc
        else:
            weights += 4 * 2 * shapes.shape[node.input[1]][0]
    return {
        "weights": weights,
        "arena": 4 * max(1, mp.arena_floats),
        "carry": 4 * max(1, mp.carry_floats),
        "input_buffer": sum(t["bytes"] for t in taps) + 4 * num_classes,
    }


def build_report(
    model: L.ModelLike, device: emulator.Device | str | os.PathLike | None = None, tee_memory: int | str | None = None
) -> dict:
    """The partition report of a mirrornet (ModelProto, gs.Graph or path) on `device` (a
    `emulator.Device`, a profile name or a .json path; default rpi3b-optee). `tee_memory` overrides
    the device's TEE memory limit.

    Keys: `stages` (per stage: backbone and CPM layers in paper notation with MACs, `cpm_params`,
    the `tap` whose bytes CPM stage s reads (tap s-1), `secure_us` = that switch + the stage's CPM);
    `final` (the logits' switch and the final nodes); `totals` (backbone/CPM MACs and params, their
    ratio, taps); `transfer` (switches and bytes per inference, streaming and single-invoke);
    `latency_us` (compute, streaming, single); `memory` (bytes: weights, arena, carry, input_buffer,
    ta_overhead, total, limit; `fits`, `over_bytes`); `warnings`. Times in microseconds."""
    where = os.fspath(model) if isinstance(model, (str, os.PathLike)) else "mirrornet"
    dev = device if isinstance(device, emulator.Device) else emulator.load_device(device)
    model = L.as_model(model)
    channels, num_classes, taps = _model_meta(model, where)
    shapes = L.Shapes(model)
    all_layers = L.layers(model, shapes)
    nodes = list(model.graph.node)
    world, stage = {}, {}
    for i, node in enumerate(nodes):
        meta = _meta(node)
        if meta.get(contract.META_WORLD) not in contract.WORLDS:
            raise MirrorcError(f"{where}: node '{node.name}': 'mirrorc.world' metadata is missing or not normal|secure")
        world[i] = meta[contract.META_WORLD]
        if contract.META_STAGE in meta:
            try:
                stage[i] = int(meta[contract.META_STAGE])
            except ValueError:
                raise MirrorcError(f"{where}: node '{node.name}': 'mirrorc.stage' is not an integer") from None
    backbone = [i for i in world if world[i] == "normal" and not nodes[i].name.startswith("mirrorc/")]
    secure = [(i, nodes[i]) for i in world if world[i] == "secure"]
    plan = secure_pipeline(model).plan
    timed = _as_the_c_runs(secure, all_layers, shapes, plan)
    cpm_layers = list(timed.values())  # predict() skips "other" unless the profile times them

    # Per stage: CPM stage s reads M_{s-1}, so the tap that crosses for it is tap s-1.
    tap_by_index = {int(t["index"]): t for t in taps}
    stage_rows = []
    for s in sorted({stage[i] for i in backbone + [i for i, _ in secure] if i in stage}):
        bb = [all_layers[i] for i in backbone if stage.get(i) == s]
        cpm = [timed[i] for i, node in secure if i in timed and stage.get(i) == s and node.name not in FINAL_NODES]
        tap = tap_by_index.get(s - 1)
        compute_us = sum(dev.layer_us(x) for x in cpm)
        stage_rows.append(
            {
                "stage": s,
                "backbone": [_layer_row(x) for x in bb if x.kind != "other"],
                "backbone_macs": sum(x.macs for x in bb),
                "cpm": [_layer_row(x) for x in cpm if x.kind != "other"],
                "cpm_macs": sum(x.macs for x in cpm),
                "cpm_params": sum(x.params for x in cpm),
                "tap": None if tap is None else {k: tap[k] for k in ("index", "tensor", "shape", "bytes")},
                "secure_us": compute_us + (dev.switch_us(tap["bytes"]) if tap else 0.0),
            }
        )
    logits_bytes = 4 * num_classes
    final_idx = [i for i, node in secure if node.name in FINAL_NODES or i not in stage]
    final = {
        "bytes": logits_bytes,
        "nodes": [nodes[i].name for i in final_idx],
        # the profile's fixed cost per inference is charged once, here
        "secure_us": dev.switch_us(logits_bytes)
        + sum(dev.layer_us(timed[i]) for i in final_idx if i in timed)
        + dev.call_us,
    }

    prediction = emulator.predict(dev, cpm_layers, [t["bytes"] for t in taps] + [logits_bytes])
    mem = _secure_memory(plan.memory, model, secure, shapes, taps, num_classes, all_layers)
    mem["ta_overhead"] = dev.ta_overhead_bytes
    mem["total"] = mem["weights"] + mem["arena"] + mem["carry"] + mem["input_buffer"] + mem["ta_overhead"]
    limit = parse_size(tee_memory) if tee_memory is not None else dev.tee_memory_bytes
    mem.update(limit=limit, fits=mem["total"] <= limit, over_bytes=max(0, mem["total"] - limit))
    warnings = []
    if not mem["fits"]:
        warnings.append(
            f"secure-world plan needs {mem['total']} bytes, over the TEE limit of {limit} by {mem['over_bytes']}"
        )

    bb_tot = L.totals([all_layers[i] for i in backbone])
    cpm_tot = L.totals([all_layers[i] for i, _ in secure])
    return {
        "format": 1,
        "model": model.graph.name,
        "source": json.loads({p.key: p.value for p in model.metadata_props}.get(contract.META_SOURCE, "null")),
        "channels": channels,
        "num_classes": num_classes,
        "device": {"name": dev.name, "path": dev.path, "tee_memory_bytes": dev.tee_memory_bytes},
        "stages": stage_rows,
        "final": final,
        "totals": {
            "backbone_macs": bb_tot.macs,
            "backbone_params": bb_tot.params,
            "cpm_macs": cpm_tot.macs,
            "cpm_params": cpm_tot.params,
            "cpm_backbone_mac_ratio": cpm_tot.macs / bb_tot.macs if bb_tot.macs else None,
            "taps": len(taps),
        },
        "transfer": {
            mode: {"switches": prediction[mode]["switches"], "bytes": prediction[mode]["bytes"]}
            for mode in ("streaming", "single")
        },
        "latency_us": {
            "compute": prediction["compute_us"],
            "streaming": prediction["streaming"]["total_us"],
            "single": prediction["single"]["total_us"],
        },
        "memory": mem,
        "warnings": warnings,
    }


def text_table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(cell.rjust(w) if c in right else cell.ljust(w) for c, (cell, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]


def fmt_bytes(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def fmt_ratio(ratio: float | None) -> str:
    """A ratio as a percentage with enough digits to tell small CPMs apart (0.0039%)."""
    if ratio is None:
        return "n/a"
    return f"{ratio:.2%}" if ratio >= 1e-3 else f"{ratio * 100:.2g}%"


def format_report(report: dict) -> str:
    """The report as aligned text."""
    r, f = report, L.fmt_count
    lines = [
        f"mirrornet '{r['model']}'  C={r['channels']}  classes={r['num_classes']}  device={r['device']['name']}",
        "",
    ]
    rows = [["stage", "backbone layer", "MACs", "CPM layer", "MACs", "CPM params", "tap in", "bytes", "secure ms"]]
    for s in r["stages"]:
        bb, cpm = s["backbone"] or [None], s["cpm"] or [None]
        for j in range(max(len(bb), len(cpm))):
            b = bb[j] if j < len(bb) else None
            c = cpm[j] if j < len(cpm) else None
            first = j == 0
            rows.append(
                [
                    str(s["stage"]) if first else "",
                    b["notation"] if b else "",
                    f(b["macs"]) if b else "",
                    c["notation"] if c else ("-" if first else ""),
                    f(c["macs"]) if c else "",
                    f(s["cpm_params"]) if first and s["cpm"] else "",
                    f"tap{s['tap']['index']} {'x'.join(map(str, s['tap']['shape']))}" if first and s["tap"] else "",
                    str(s["tap"]["bytes"]) if first and s["tap"] else "",
                    f"{s['secure_us'] / 1000:.3f}" if first and (s["tap"] or s["cpm"]) else "",
                ]
            )
    fin = r["final"]
    rows.append(
        [
            "final",
            "",
            "",
            ", ".join(fin["nodes"]),
            "",
            "",
            f"logits {r['num_classes']}",
            str(fin["bytes"]),
            f"{fin['secure_us'] / 1000:.3f}",
        ]
    )
    lines += text_table(rows, right={2, 4, 5, 7, 8})
    t, m, lat, tr = r["totals"], r["memory"], r["latency_us"], r["transfer"]
    ratio = fmt_ratio(t["cpm_backbone_mac_ratio"])
    summary = [
        ["backbone", f"{f(t['backbone_macs'])} MACs, {f(t['backbone_params'])} params"],
        ["CPM", f"{f(t['cpm_macs'])} MACs ({ratio} of the backbone), {f(t['cpm_params'])} params"],
        [
            "streaming",
            f"{tr['streaming']['switches']} world switches, {tr['streaming']['bytes']} bytes, "
            f"predicted {lat['streaming'] / 1000:.3f} ms",
        ],
        [
            "single-invoke",
            f"{tr['single']['switches']} world switch, {tr['single']['bytes']} bytes, "
            f"predicted {lat['single'] / 1000:.3f} ms",
        ],
        ["CPM compute", f"predicted {lat['compute'] / 1000:.3f} ms"],
        [
            "TEE memory",
            f"{fmt_bytes(m['total'])} of {fmt_bytes(m['limit'])}: weights {fmt_bytes(m['weights'])}, "
            f"arena {fmt_bytes(m['arena'])}, carry {fmt_bytes(m['carry'])}, "
            f"input buffer {fmt_bytes(m['input_buffer'])}, TA overhead {fmt_bytes(m['ta_overhead'])}",
        ],
    ]
    if r.get("protection"):
        p = r["protection"]
        summary += [["protection", f"{p['name']}: {p['summary']}"], ["  measured", format_measured(p["measured"])]]
    lines += [""] + text_table(summary, right=set())
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines) + "\n"


# Measured figures live in results/<table>.json at the top of the repo (written by benchmarks/record.py),
# not in code: the report quotes the file and the command that made it.
PROTECTION_RESULTS = "protection"  # benchmarks/attacks.py --baseline --results protection
SCHEDULE_RESULTS = "protection_lr_schedule"  # the same strategies under --lr-schedule cosine


def results_dir() -> Path:
    """Where measured figures are read from: $MIRRORC_RESULTS, else results/ beside mirrorc/."""
    override = os.environ.get("MIRRORC_RESULTS")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "results"


def load_results(name: str) -> dict | None:
    """results/<name>.json as written by benchmarks/record.py, or None when there is none."""
    path = results_dir() / f"{name}.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MirrorcError(f"{path}: not a readable results file ({e})") from None
    for key in ("command", "figures"):
        if not isinstance(results, dict) or key not in results:
            raise MirrorcError(f"{path}: field '{key}' missing (a results file has command, date, machine, figures)")
    return results


# The row format of benchmarks/attacks.py (`_result_row`): any results file whose rows have these keys
# holds measured protection figures (protection.json for LeNet-5 / MNIST, frontiers on other models).
ATTACK_ROW_KEYS = ("dataset", "protect", "C", "cost", "head_start")
# How a results file's model relates to the one asked about, best first.
MATCHES = ("same model", "nearest size", "other model")


def protection_sources() -> list[dict]:
    """Every results/*.json holding benchmarks/attacks.py rows, protection.json (the reference table)
    first, then by name: `{"file", "results", "rows", "setup"}`. protection.json must be well formed;
    another file that is not a results file or has rows of another format is some other table."""
    folder = results_dir()
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    names.sort(key=lambda name: name != PROTECTION_RESULTS)
    sources = []
    for name in names:
        where = folder / f"{name}.json"
        if name == PROTECTION_RESULTS:  # the reference table: a broken one is an error
            results = load_results(name)
            rows = _rows(results, where) if results is not None else []
        else:
            try:
                results = load_results(name)
            except MirrorcError:
                continue
            figures = results["figures"] if results is not None else None
            found = figures.get("rows") if isinstance(figures, dict) else None
            rows = found if isinstance(found, list) and all(_is_attack_row(r) for r in found) else []
        if results is None or not rows:
            continue
        setup = results["figures"].get("setup", {}) if isinstance(results["figures"], dict) else {}
        sources.append({"file": str(where), "results": results, "rows": rows, "setup": setup})
    return sources


def _is_attack_row(row: object) -> bool:
    return isinstance(row, dict) and all(key in row for key in ATTACK_ROW_KEYS)


def measured_protection(strategy: str, model: str | None = None, backbone_macs: int | None = None) -> dict:
    """What was measured for a protection strategy: the MirrorNet's cost and the thief's head start, from
    the results file of benchmarks/attacks.py that best matches `model` (a model name, the file stem
    attacks.py records as `setup.model`): measured on that model, else on the model nearest in size
    (`setup.backbone_macs` against `backbone_macs`, by ratio), else the reference protection.json;
    between files of the same model, the one with more rows for the strategy.
    `model`, `dataset`, `match` (one of MATCHES, None when no model was asked about) say where the
    figures come from: a figure measured on another model is labelled so, never passed off as this
    model's. `{"results": <dir>, "searched": [files], "rows": []}` when nothing was measured for it."""
    penalty = get_strategy(strategy).backbone_penalty
    sources = protection_sources()
    found: dict = {"results": str(results_dir()), "searched": [s["file"] for s in sources], "rows": []}
    best: tuple | None = None
    for order, source in enumerate(sources):
        # the reference build: the strategy's own penalty, scored against an unprotected baseline
        rows = [
            r
            for r in source["rows"]
            if r.get("protect") == strategy and r.get("cost") is not None and float(r.get("penalty", 0.0)) == penalty
        ]
        if not rows:
            continue
        macs = source["setup"].get("backbone_macs")
        distance = math.inf
        if model is not None and str(source["setup"].get("model")) == model:
            match: str | None = "same model"
        elif model is not None and backbone_macs and isinstance(macs, int) and macs > 0:
            match, distance = "nearest size", abs(math.log(macs / backbone_macs))
        else:
            match = "other model" if model is not None else None
        # between files of one model, the one measured at more configurations of this strategy
        key = (MATCHES.index(match) if match else 0, distance, -len(rows) if model is not None else 0, order)
        if best is None or key < best[0]:
            best = (key, source, rows, match)
    if best is None:
        return found
    _, source, rows, match = best
    results = source["results"]
    found.update(
        rows=rows,
        model=str(source["setup"].get("model", "?")),
        dataset=", ".join(dict.fromkeys(str(r["dataset"]) for r in rows)),
        match=match,
        backbone_macs=source["setup"].get("backbone_macs"),
        file=source["file"],
        command=results["command"],
        date=results.get("date"),
        transcribed=results.get("transcribed"),
        setup=source["setup"],
    )
    schedule = load_results(SCHEDULE_RESULTS)
    if schedule is not None and schedule["figures"].get("setup", {}).get("model") == found["model"]:
        found["lr_schedule"] = [
            r for r in _rows(schedule, results_dir() / f"{SCHEDULE_RESULTS}.json") if r.get("protect") == strategy
        ]
    return found


def smallest_budget_head_start(row: dict) -> tuple[int, str] | None:
    """(budget, head start text) at the smallest label budget a measured row has, or None."""
    head_start = row.get("head_start")
    if not isinstance(head_start, dict):
        return None
    budgets = [int(b) for b in head_start if str(b).isdigit()]
    return (min(budgets), str(head_start[str(min(budgets))])) if budgets else None


def measured_on(measured: dict) -> str:
    """Where a strategy's figures were measured, as the tables print it: `measured on lenet5/mnist`,
    plus how that model relates to the one asked about when it is another."""
    text = f"measured on {measured['model']}/{measured['dataset']}"
    if measured.get("match") == "nearest size":
        return text + " (nearest in backbone MACs)"
    if measured.get("match") == "other model":
        return text + " (another model)"
    return text


def _rows(results: dict, where: Path) -> list[dict]:
    rows = results["figures"].get("rows") if isinstance(results["figures"], dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MirrorcError(f"{where}: field 'figures.rows' is not a list of rows")
    return rows


def format_measured(measured: dict) -> str:
    """One line of what was measured for a strategy, or why there is nothing to show."""
    if not measured["rows"]:
        if not measured.get("searched"):
            return f"no measured figures (no results of benchmarks/attacks.py in {measured['results']})"
        return f"no measured figures for this strategy in {', '.join(measured['searched'])}"
    setup = measured["setup"]
    parts = []
    for r in measured["rows"]:
        budget, hs = smallest_budget_head_start(r) or ("?", "-")
        alone = f"{r['backbone']:.2f}" if isinstance(r.get("backbone"), (int, float)) else "-"
        side = "below" if r["cost"] >= 0 else "above"
        parts.append(
            f"{setup.get('model', '?')} / {r['dataset']}, C = {r['C']}, "
            f"{setup.get('compile_epochs', '?')} epochs: MirrorNet {abs(r['cost']):.2f} points {side} the "
            f"unprotected model, backbone alone {alone}%, head start @{budget} labels {hs} points"
        )
    line = "; ".join(parts)
    if measured.get("match") in ("nearest size", "other model"):
        line = f"{measured_on(measured)}, not this model: " + line
    line += f" (`{measured['command']}`, {measured['file']}"
    line += ", transcribed, not re-measured)" if measured.get("transcribed") else ")"
    schedule = [r for r in measured.get("lr_schedule", []) if r.get("cost") is not None]
    if schedule:
        line += (
            f"; with --lr-schedule {schedule[0].get('lr_schedule', 'cosine')} for both models the cost is "
            + " and ".join(f"{r['cost']:.2f} at C = {r['C']}" for r in schedule)
        )
    return line
