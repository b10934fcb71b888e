"""The contract between the passes, the two worlds and the tools, defined once
(docs/ARCHITECTURE.md, "mirrornet.onnx", "TA protocol", "plan.json").

The passes produce the graph contract, so it lives here (`passes/` imports nothing from `mirrorc`);
the rest of mirrorc imports these names, and the TA header template gets the command IDs from
`ta_command_macros()`, so no number is written twice."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

from passes.errors import MirrorcError

FORMAT_VERSION = "1"  # value of META_VERSION

# Model metadata keys (ModelProto.metadata_props)
META_VERSION = "mirrorc.version"
META_CHANNELS = "mirrorc.channels"
META_NUM_CLASSES = "mirrorc.num_classes"
META_TAPS = "mirrorc.taps"  # JSON list, one object per tap (TAP_FIELDS below)
META_OPTIONS = "mirrorc.options"
META_SOURCE = "mirrorc.source"

# Node metadata keys (NodeProto.metadata_props)
META_WORLD = "mirrorc.world"
META_STAGE = "mirrorc.stage"
NORMAL, SECURE = "normal", "secure"
WORLDS = (NORMAL, SECURE)

# Tensor names
TAP_PREFIX = "mirrorc_tap"
LABEL = "label"
BACKBONE_LOGITS = "backbone_logits"
MIRRORNET_LOGITS = "mirrornet_logits"
CPM_LOGITS = "cpm_logits"
OUTPUTS = (LABEL, BACKBONE_LOGITS, MIRRORNET_LOGITS)  # mirrornet.onnx's outputs, in this order


def tap_name(k: int) -> str:
    """The tensor that crosses to the secure world at tap k (1-based)."""
    return f"{TAP_PREFIX}{k}"


# TA commands (the wire format between host and TA)
CMD_TAP_BASE = 0x100  # TAP(k) = CMD_TAP_BASE + k, k = 0..n-1
CMD_FINAL = 0x200
CMD_SINGLE = 0x201
CMD_DEBUG_FINAL = 0x2FF  # test-only simulator builds (-DMIRRORC_TA_DEBUG_LOGITS)
CMD_PROFILE = 0x2FE  # calibration builds only (-DMIRRORC_TA_PROFILE): the per-node timers of `mirrorc profile`


# TA-defined TEE_Result codes of the defences (GP leaves 0x80000000.. to TAs): a refused call says why
TA_ERROR_LOGIT_RANGE = 0x80000101  # backbone logits outside the range seen in training (plan "guard")
TA_ERROR_QUERY_BUDGET = 0x80000102  # the TA's lifetime query budget is spent (plan "guard")
TA_ERROR_NAMES = {
    TA_ERROR_LOGIT_RANGE: "backbone logits outside the range seen in training (TA range check)",
    TA_ERROR_QUERY_BUDGET: "the TA's query budget is spent (kept in persistent storage)",
}


def tap_command(k: int) -> int:
    """The command that sends tap k (0-based, as the TA counts them)."""
    return CMD_TAP_BASE + k


def ta_command_macros() -> dict[str, str]:
    """The command IDs and TA error codes as C literals, for the TA templates' @CMD_...@ placeholders."""
    return {
        name: f"0x{value:x}u"
        for name, value in (
            ("CMD_PROFILE", CMD_PROFILE),
            ("CMD_TAP_BASE", CMD_TAP_BASE),
            ("CMD_FINAL", CMD_FINAL),
            ("CMD_SINGLE", CMD_SINGLE),
            ("CMD_DEBUG_FINAL", CMD_DEBUG_FINAL),
            ("ERROR_LOGIT_RANGE", TA_ERROR_LOGIT_RANGE),
            ("ERROR_QUERY_BUDGET", TA_ERROR_QUERY_BUDGET),
        )
    }


# plan.json: field -> type; a dict is a nested object, a one-element list a list of such objects.
# `list` alone is a list of anything (shapes hold ints or a symbolic batch name).
PLAN_FORMAT = 1
TAP_FIELDS = {"index": int, "tensor": str, "selected": str, "channels": list, "shape": list, "bytes": int}
PLAN_SCHEMA: dict = {
    "format": int,
    "model": str,
    "uuid": str,
    "ta_name": str,
    "input": {"name": str, "shape": list},
    "taps": [dict(TAP_FIELDS, command=int)],
    "logits": {"name": str, "shape": list, "bytes": int, "command": int},
    "single": {"command": int, "bytes": int},
    "memory": {
        "weights": int,
        "arena": int,
        "state": int,
        "stack": int,
        "session": int,
        "ta_stack_size": int,
        "ta_data_size": int,
        "total": int,
    },
    "hashes": dict,
}
PLAN_OPTIONAL: dict = {"emulator": dict, "preprocessing": dict, "guard": dict}  # written by `mirrorc compile` only
# plan "guard": the TA's defences as compiled (mirrorc.backend.guard)
GUARD_SCHEMA: dict = {"range_check": bool, "logit_min": list, "logit_max": list, "margin": float, "query_budget": int}

_TYPE_NAMES = {
    int: "an integer",
    str: "a string",
    list: "a list",
    dict: "an object",
    bool: "a boolean",
    float: "a number",
}


def _check(value, schema, where: str, path) -> None:
    def fail(what: str) -> MirrorcError:
        return MirrorcError(f"{path}: field '{where}' {what}")

    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise fail(f"must be an object, not {type(value).__name__}")
        for key, sub in schema.items():
            field = f"{where}.{key}" if where else key
            if key not in value:
                raise MirrorcError(f"{path}: missing field '{field}'")
            _check(value[key], sub, field, path)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise fail(f"must be a list, not {type(value).__name__}")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]", path)
    # bool is an int to Python, never to the plan
    elif schema is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        pass  # JSON writes 1.0 as 1.0 but a hand-edited plan may say 1
    elif not isinstance(value, schema) or (schema is int and isinstance(value, bool)):
        raise fail(f"must be {_TYPE_NAMES[schema]}, not {type(value).__name__} ({value!r:.40})")


def validate_plan(plan: dict, path: str | Path) -> None:
    """Check a loaded plan.json against PLAN_SCHEMA and the command IDs; raise MirrorcError naming
    `path` and the first bad field."""
    _check(plan, PLAN_SCHEMA, "", path)
    for key, sub in PLAN_OPTIONAL.items():
        if key in plan:
            _check(plan[key], sub, key, path)
    if "guard" in plan:
        _check(plan["guard"], GUARD_SCHEMA, "guard", path)
        k = plan["logits"]["bytes"] // 4
        for key in ("logit_min", "logit_max"):
            values = plan["guard"][key]
            if len(values) != k or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise MirrorcError(f"{path}: field 'guard.{key}' must hold {k} numbers")
    if plan["format"] != PLAN_FORMAT:
        raise MirrorcError(f"{path}: field 'format' is {plan['format']}, this mirrorc reads format {PLAN_FORMAT}")
    try:
        uuidlib.UUID(plan["uuid"])
    except ValueError:
        raise MirrorcError(f"{path}: field 'uuid' is not a UUID ({plan['uuid']!r:.40})") from None
    for i, tap in enumerate(plan["taps"]):
        if tap["command"] != tap_command(i):
            raise MirrorcError(f"{path}: field 'taps[{i}].command' is {tap['command']}, expected {tap_command(i)}")
    for key, command in (("logits", CMD_FINAL), ("single", CMD_SINGLE)):
        if plan[key]["command"] != command:
            raise MirrorcError(f"{path}: field '{key}.command' is {plan[key]['command']}, expected {command}")
