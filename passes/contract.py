"""The contract between the passes, the two worlds and the tools, defined once
(docs/ARCHITECTURE.md, "mirrornet.onnx", "TA protocol", "plan.json").

The passes produce the graph contract, so it lives here (`passes/` imports nothing from `mirrorc`);
the rest of mirrorc imports these names, and the TA header template gets the command IDs from
`ta_command_macros()`, so no number is written twice."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING

from passes.errors import MirrorcError

if TYPE_CHECKING:
    import onnx

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


def declared_num_classes(model: onnx.ModelProto, where: str = "model") -> int | None:
    """The class count in `model`'s metadata (META_NUM_CLASSES), None when it has none; a value that
    is not an integer is a MirrorcError naming `where`."""
    value = next((p.value for p in model.metadata_props if p.key == META_NUM_CLASSES), None)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise MirrorcError(f"{where}: model metadata '{META_NUM_CLASSES}' is not an integer ({value!r})") from None


def num_classes(model: onnx.ModelProto, where: str = "model") -> int:
    """The class count a mirrornet's metadata must hold (META_NUM_CLASSES); MirrorcError naming
    `where` when it is missing or not an integer."""
    k = declared_num_classes(model, where)
    if k is None:
        raise MirrorcError(f"{where}: model metadata '{META_NUM_CLASSES}' is missing; not a mirrornet")
    return k


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
TA_ERROR_SESSION_CAP = 0x80000103  # TEE_OpenSession: this client identity holds its cap of sessions
TA_ERROR_CLIENT = 0x80000104  # TEE_OpenSession: not the client identity the TA was compiled for
TA_ERROR_RATE_LIMIT = 0x80000105  # FINAL/SINGLE: more labels per second than the TA answers
TA_ERROR_NAMES = {
    TA_ERROR_LOGIT_RANGE: "backbone logits outside the range seen in training (TA range check)",
    TA_ERROR_QUERY_BUDGET: "the TA's query budget is spent (kept in persistent storage)",
    TA_ERROR_SESSION_CAP: "session cap reached (sessions per client)",
    TA_ERROR_CLIENT: "client identity not allowed (login type or client UUID)",
    TA_ERROR_RATE_LIMIT: "rate limit (labels per second)",
}


def ta_refusal(result: int, guard: dict | None) -> str | None:
    """One line saying which defence refused a TA call with `result`, with the settings of the plan's
    "guard" when known ("session cap reached (2 per client)"); None for a code that is no defence's."""
    name = TA_ERROR_NAMES.get(result)
    if name is None:
        return None
    g = guard or {}
    if result == TA_ERROR_SESSION_CAP and g.get("session_cap"):
        return f"session cap reached ({g['session_cap']} per client)"
    if result == TA_ERROR_CLIENT and g.get("allow_client"):
        return f"client identity not allowed (the TA admits {g['allow_client']} only)"
    if result == TA_ERROR_RATE_LIMIT and g.get("rate_limit"):
        return f"rate limit ({g['rate_limit']} labels/s, bursts of {g['rate_burst']})"
    if result == TA_ERROR_QUERY_BUDGET and g.get("query_budget"):
        return f"the TA's query budget is spent ({g['query_budget']} labels, kept in persistent storage)"
    return name


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
            ("ERROR_SESSION_CAP", TA_ERROR_SESSION_CAP),
            ("ERROR_CLIENT", TA_ERROR_CLIENT),
            ("ERROR_RATE_LIMIT", TA_ERROR_RATE_LIMIT),
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
# the session-open and rate defences (issue 13); plans written before them have none: all or nothing.
# allow_client: "" (anyone) or "<login>" or "<login>:<client UUID>", login public|user|group|application
GUARD_ACCESS_SCHEMA: dict = {
    "session_cap": int,
    "allow_client": str,
    "allow_gid": int,
    "rate_limit": int,
    "rate_burst": int,
}
CLIENT_LOGINS = {"public": 0x0, "user": 0x1, "group": 0x2, "application": 0x4}  # TEE_LOGIN_*

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
        if any(key in plan["guard"] for key in GUARD_ACCESS_SCHEMA):
            _check(plan["guard"], GUARD_ACCESS_SCHEMA, "guard", path)
            _check_access(plan["guard"], path)
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


def parse_client(spec: str) -> tuple[int, uuidlib.UUID | None]:
    """A plan's "allow_client" ("" excluded): (TEE login type, client UUID or None for any). Raises
    ValueError saying what is wrong."""
    login, _, rest = spec.partition(":")
    if login not in CLIENT_LOGINS:
        raise ValueError(f"login type {login!r} is not one of {', '.join(CLIENT_LOGINS)}")
    if not rest:
        return CLIENT_LOGINS[login], None
    if login == "public":
        raise ValueError("a public login has no client UUID (it is always the nil UUID)")
    return CLIENT_LOGINS[login], uuidlib.UUID(rest)


def _check_access(g: dict, path: str | Path) -> None:
    for key in ("session_cap", "rate_limit", "rate_burst"):
        if g[key] < 0:
            raise MirrorcError(f"{path}: field 'guard.{key}' is {g[key]}, must be >= 0")
    if g["rate_limit"] and not g["rate_burst"]:
        raise MirrorcError(f"{path}: field 'guard.rate_burst' must be >= 1 with a rate limit")
    if g["allow_client"]:
        try:
            parse_client(g["allow_client"])
        except ValueError as e:
            raise MirrorcError(f"{path}: field 'guard.allow_client' {g['allow_client']!r:.60}: {e}") from None
