"""The secure half of `mirrorc compile`: split the MirrorNet, lower the CPM to C, write the TA.

    fields = build_secure(mirrornet_model, "build/", tee_memory=None)

writes `normal.onnx`, `ta/` (OP-TEE TA sources) and `host/` (C client example) into the build
directory and returns the plan.json fields of docs/ARCHITECTURE.md that concern the two worlds
(uuid, ta_name, input, taps with their commands, logits, single, memory, hashes, guard: the TA's
defences, mirrorc.backend.guard). Each output is
written atomically, so a failure leaves no half-written TA behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx

from mirrorc.backend import guard, ta
from mirrorc.errors import MirrorcError
from mirrorc.outdir import atomic_dir, atomic_file
from mirrorc.pipeline import secure_pipeline
from passes import contract
from passes.lower_c import lower


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_name(model: onnx.ModelProto) -> str:
    """The TA's name: the source model's file name (mirrorc.source), else the graph's name."""
    meta = _metadata(model)
    try:
        source = json.loads(meta.get(contract.META_SOURCE, "{}")).get("file")
    except ValueError:
        source = None
    return ta.ta_name(source or model.graph.name or "model")


def build_secure(
    mirrornet_model: onnx.ModelProto,
    out_dir: str | Path,
    *,
    tee_memory: int | None = None,
    defences: dict | None = None,
    profile: bool = False,
) -> dict:
    """Split `mirrornet_model`, lower its CPM to C and write normal.onnx, ta/ and host/ into `out_dir`;
    returns plan.json's fields. `profile`: the calibration TA of `mirrorc profile --tee optee` (per-node
    timers, backend.ta.write_ta's `profile_steps`), never a release build."""
    out_dir = Path(out_dir)
    meta = _metadata(mirrornet_model)
    if contract.META_TAPS not in meta:
        raise MirrorcError(f"mirrornet model: metadata field '{contract.META_TAPS}' missing (not a mirrorc MirrorNet)")
    try:
        taps = sorted(json.loads(meta[contract.META_TAPS]), key=lambda t: t["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise MirrorcError(f"mirrornet model: metadata field '{contract.META_TAPS}' is malformed ({e})") from None

    name = model_name(mirrornet_model)
    built = secure_pipeline(mirrornet_model, name, tee_memory=tee_memory)
    normal, lowered = built.normal, built.lowered
    assert lowered is not None  # a ta_name was given
    if profile:  # the same C with a timer around every scheduled node
        lowered = lower(built.secure, name, tee_memory, plan=built.plan, profile=True)
    mirrornet_bytes = mirrornet_model.SerializeToString()
    # a calibration TA gets a UUID of its own: installed on a board, it never stands in for the release TA
    uuid = ta.ta_uuid(_sha256(mirrornet_bytes + (b"\0mirrorc profile" if profile else b"")))

    if [t["bytes"] for t in taps] != [4 * f for f in lowered.tap_floats]:
        raise MirrorcError(
            f"mirrornet model: '{contract.META_TAPS}' bytes {[t['bytes'] for t in taps]} disagree with the "
            f"secure graph's tap inputs ({[4 * f for f in lowered.tap_floats]} bytes)"
        )
    k = lowered.num_classes

    normal_bytes = normal.SerializeToString()
    with atomic_file(out_dir / "normal.onnx") as tmp:
        tmp.write_bytes(normal_bytes)
    with atomic_dir(out_dir / "ta") as ta_tmp, atomic_dir(out_dir / "host") as host_tmp:
        memory = ta.write_ta(
            ta_tmp,
            host_tmp,
            name=name,
            uuid=uuid,
            lowered=lowered,
            defences=defences,
            profile_steps=len(built.plan.body) if profile else None,
        )

    hashes = {"mirrornet.onnx": _sha256(mirrornet_bytes), "normal.onnx": _sha256(normal_bytes)}
    for sub in ("ta", "host"):
        for path in sorted((out_dir / sub).rglob("*")):
            if path.is_file():
                hashes[str(path.relative_to(out_dir))] = _sha256(path.read_bytes())

    graph_input = normal.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in graph_input.type.tensor_type.shape.dim]
    return {
        "uuid": str(uuid),
        "ta_name": name,
        "input": {"name": graph_input.name, "shape": dims},
        "taps": [dict(t, command=contract.tap_command(i)) for i, t in enumerate(taps)],
        "logits": {"name": contract.BACKBONE_LOGITS, "shape": [k], "bytes": 4 * k, "command": contract.CMD_FINAL},
        "single": {"command": contract.CMD_SINGLE, "bytes": 4 * (sum(lowered.tap_floats) + k)},
        "memory": memory,
        "hashes": hashes,
        "guard": defences or guard.no_guard(k),
    }


def write_build(
    mirrornet_model: onnx.ModelProto, out_dir: str | Path, model: str, *, defences: dict | None = None
) -> dict:
    """A build directory without training, for the benchmarks and tests that build random-weight
    models: mirrornet.onnx, build_secure's outputs and a plan.json of its fields (`model` names the
    source model; none of compile's emulator or preprocessing entries). Returns the plan."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(mirrornet_model, out_dir / "mirrornet.onnx")
    plan = {"format": contract.PLAN_FORMAT, "model": model, **build_secure(mirrornet_model, out_dir, defences=defences)}
    (out_dir / "plan.json").write_text(json.dumps(plan))
    return plan
