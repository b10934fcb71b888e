"""The TA's defences against a hostile normal world, as chosen at compile time (issue 13).

The TA answers argmax(L + cpm(taps)) and the caller chooses L; with L free, a binary search on it
reads the CPM's logits off the labels (mirrorc.attack.extract). The range check confines L to what
the backbone produced on the training set: per class [min - margin * span, max + margin * span], with
span = max - min. An honest caller never leaves it on in-distribution inputs, so it is on by default;
the attacker's search must stay inside it. The settings go into plan.json's "guard" and the TA
protocol header (MIRRORC_TA_RANGE_CHECK, MIRRORC_TA_LOGIT_MIN/MAX); a refusal is
passes.contract.TA_ERROR_LOGIT_RANGE.

The query budget (`mirrorc compile --query-budget N`) caps the labels the TA answers over its lifetime,
a counter in GP persistent storage kept across sessions and reboots. It is off by default: every
answer then costs a storage write (an fdatasync in the simulator), and an honest device's lifetime
count of inferences is not known at compile time. Refusal: passes.contract.TA_ERROR_QUERY_BUDGET.

`access()` gives the session-open and rate defences (plan "guard", contract.GUARD_ACCESS_SCHEMA): a
per-client session cap (on by default, SESSION_CAP), an optional client-identity check
(`--allow-client`) and an optional rate limit (`--rate-limit`); the identity is the one the REE
kernel derives (login type + client UUID, "gpd.client.identity"), which a client cannot choose."""

from __future__ import annotations

import uuid as uuidlib

import numpy as np
import onnx

from mirrorc.errors import MirrorcError
from passes import contract

# of each class's span, both sides. LeNet-5/MNIST, range from 10,000 training images: 0.1 refused 1 of
# the 50,000 other training images; 0.25 refuses none of them and none of the test set.
RANGE_MARGIN = 0.25
# Fewer training images than this say too little about the backbone's range: the check would refuse
# honest inputs (a ShuffleNetV2 built from 32 images refused 6 of 6 test images), so it stays off.
RANGE_MIN_IMAGES = 1000


def logit_range(
    mirrornet: onnx.ModelProto, x_train: np.ndarray, margin: float = RANGE_MARGIN, query_budget: int = 0
) -> dict:
    """The plan's "guard" with the range check on: the backbone logits of `x_train` by onnxruntime,
    per class min/max widened by `margin`; `query_budget` labels over the TA's lifetime (0: no budget)."""
    from mirrorc.attack.thief import run_onnx

    if len(x_train) < RANGE_MIN_IMAGES:
        guard = no_guard(contract.num_classes(mirrornet))
        guard["query_budget"] = int(query_budget)
        guard["range_check_off"] = f"{len(x_train)} training images, fewer than {RANGE_MIN_IMAGES}"
        return guard
    logits = run_onnx(mirrornet, contract.BACKBONE_LOGITS, x_train).astype(np.float64)
    low, high = logits.min(axis=0), logits.max(axis=0)
    span = high - low
    return {
        "range_check": True,
        # as float32, the values the TA compares with
        "logit_min": [float(v) for v in (low - margin * span).astype(np.float32)],
        "logit_max": [float(v) for v in (high + margin * span).astype(np.float32)],
        "margin": float(margin),
        "query_budget": int(query_budget),
    }


def no_guard(num_classes: int) -> dict:
    """The plan's "guard" of a TA without defences (builds made without training data)."""
    return {
        "range_check": False,
        "logit_min": [0.0] * num_classes,
        "logit_max": [0.0] * num_classes,
        "margin": 0.0,
        "query_budget": 0,
    }


# Sessions one client identity may hold at once. The TA's heap holds MAX_SESSIONS (4) sessions
# (mirrorc.backend.ta); a cap of half of them means one client can never hold every session, and an
# honest client (mirrorc.tee.runtime opens one session per model) never meets it.
SESSION_CAP = 2
# The rate limit is off by default; see docs/RESULTS.md, "The TA's defences": an honest batch caller
# (mirrorc run/evaluate on a .npy) asks as fast as the backbone allows, and the extraction attack
# gains nothing a rate between the two would not also cost the honest caller.
RATE_LIMIT = 0
# Linux's tee_client_uuid_ns: client UUIDs are UUIDv5 of "uid=%x" / "gid=%x" in it (drivers/tee/tee_core.c)
CLIENT_UUID_NAMESPACE = uuidlib.UUID("58ac9ca0-2086-4683-a1b8-ec4bc08e01b6")


def client_uuid(login: str, number: int) -> uuidlib.UUID:
    """The client UUID the REE kernel gives a user (uid) or group (gid) login."""
    return uuidlib.uuid5(CLIENT_UUID_NAMESPACE, f"{'uid' if login == 'user' else 'gid'}={number:x}")


def access(
    session_cap: int = SESSION_CAP, allow_client: str = "", rate_limit: int = RATE_LIMIT, rate_burst: int = 0
) -> dict:
    """The plan's session-open and rate defences. `allow_client`: "" (anyone), or a login type
    public|user|group|application, alone (any client of that type) or with ":UUID", or for user and
    group with ":UID" / ":GID" (the UUID the kernel derives from it). `rate_limit` labels per second
    (0: none) in bursts of `rate_burst` (0: one second's worth). Bad values are MirrorcError."""
    if session_cap < 0:
        raise MirrorcError(f"--session-cap: {session_cap} is negative (0 = no cap)")
    if rate_limit < 0 or rate_burst < 0 or rate_limit > 1_000_000:
        raise MirrorcError(f"--rate-limit: {rate_limit}/{rate_burst} must be 0..1000000 labels/s, burst >= 0")
    gid = -1
    if allow_client:
        login, _, rest = allow_client.partition(":")
        if rest.isdigit() and login in ("user", "group"):
            gid = int(rest) if login == "group" else -1
            allow_client = f"{login}:{client_uuid(login, int(rest))}"
        try:
            contract.parse_client(allow_client)
        except ValueError as e:
            raise MirrorcError(f"--allow-client {allow_client!r}: {e}") from None
    return {
        "session_cap": int(session_cap),
        "allow_client": allow_client,
        "allow_gid": gid,
        "rate_limit": int(rate_limit),
        "rate_burst": int(rate_burst or rate_limit),
    }


def no_access() -> dict:
    """No session-open or rate defence (a TA built without them)."""
    return access(session_cap=0)


def _uuid_fields(u: uuidlib.UUID) -> str:
    f = u.fields
    return f"0x{f[0]:08x}, 0x{f[1]:04x}, 0x{f[2]:04x}, {{ " + ", ".join(f"0x{b:02x}" for b in u.bytes[8:]) + " }"


def template_values(guard: dict) -> dict[str, str]:
    """The @...@ values of the TA templates for these settings (C float initializers)."""

    def floats(values: list[float]) -> str:
        return ", ".join(f"{float(np.float32(v))!r}f" for v in values)

    g = {**no_access(), **guard}  # plans from before the access defences have none
    login, uuid = contract.parse_client(g["allow_client"]) if g["allow_client"] else (0, None)
    return {
        "RANGE_CHECK": "1" if guard["range_check"] else "0",
        "LOGIT_MIN": floats(guard["logit_min"]),
        "LOGIT_MAX": floats(guard["logit_max"]),
        "QUERY_BUDGET": str(int(guard["query_budget"])),
        "SESSION_CAP": str(int(g["session_cap"])),
        "ALLOW_CLIENT": "1" if g["allow_client"] else "0",
        "ALLOW_LOGIN": f"0x{login:08x}u",
        "ALLOW_ANY_UUID": "1" if uuid is None else "0",
        "ALLOW_UUID_INIT": _uuid_fields(uuid or uuidlib.UUID(int=0)),
        "RATE_LIMIT": str(int(g["rate_limit"])),
        "RATE_BURST": str(int(g["rate_burst"])),
    }
