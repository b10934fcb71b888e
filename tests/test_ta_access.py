"""The TA's session-open and rate defences (issue 13) on the fixture deployment in the simulator: the
per-client session cap, the client-identity check, the rate limit, the identity the simulator gives
the TA (derived from the caller's credentials as Linux's TEE driver does), and the one line a refusal
prints. Each test also builds the TA without its defence and sees the attack go through, so that
removing a defence fails the test."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid as uuidlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mirrorc.backend import guard
from mirrorc.cli import main
from mirrorc.errors import MirrorcError
from mirrorc.tee import teec as T
from mirrorc.tee.runtime import ProtectedModel
from passes import contract
from test_ta_support import FIXTURE_CLASSES, fixture_deployment_labels, write_fixture_deployment


def _deploy(path: Path, **access) -> tuple[Path, str, dict]:
    """A fixture deployment whose TA has these access defences (guard.access's arguments)."""
    path.mkdir(parents=True, exist_ok=True)
    defences = {**guard.no_guard(FIXTURE_CLASSES), **guard.access(**access)}
    write_fixture_deployment(path, defences=defences)
    return path, json.loads((path / "plan.json").read_text())["uuid"], defences


def _sessions_opened(ctx: T.Context, uuid: str, n: int, login: int = T.TEEC_LOGIN_PUBLIC) -> tuple[int, list[int]]:
    """Try to open n sessions with `login`; (how many opened, the refusal codes)."""
    opened, refused = 0, []
    for _ in range(n):
        try:
            ctx.open_session(uuid, login)
            opened += 1
        except T.TeecError as e:
            refused.append(e.result)
    return opened, refused


@pytest.mark.parametrize("cap", [2, 0])
def test_session_cap_per_client(tmp_path, cap):
    build, uuid, _ = _deploy(tmp_path / "b", session_cap=cap)
    with T.Context.simulator(build) as ctx:
        opened, refused = _sessions_opened(ctx, uuid, 4)
        if cap == 0:  # without the defence one client holds as many sessions as the heap allows
            assert (opened, refused) == (4, [])
            return
        assert opened == cap and refused == [contract.TA_ERROR_SESSION_CAP] * (4 - cap)
        # another identity (the same process logged in as its user) has its own cap
        assert _sessions_opened(ctx, uuid, 3, T.TEEC_LOGIN_USER) == (cap, [contract.TA_ERROR_SESSION_CAP])
        ctx._sessions[0].close()  # closing one frees its slot, and only one
        assert _sessions_opened(ctx, uuid, 2) == (1, [contract.TA_ERROR_SESSION_CAP])
        for s in ctx._sessions[:]:  # every session still answers
            op = T.Operation(T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_OUTPUT).temp(
                0, np.ones(5 + FIXTURE_CLASSES, np.float32)
            )
            assert s.try_invoke(contract.CMD_SINGLE, op)[0] == T.TEEC_SUCCESS


def test_client_identity_check(tmp_path):
    me = os.geteuid()
    build, uuid, _ = _deploy(tmp_path / "user", allow_client=f"user:{me}")
    open_ = tmp_path / "open"
    _, open_uuid, _ = _deploy(open_)
    with T.Context.simulator(build) as ctx:
        assert _sessions_opened(ctx, uuid, 1, T.TEEC_LOGIN_USER) == (1, [])
        assert _sessions_opened(ctx, uuid, 1, T.TEEC_LOGIN_PUBLIC) == (0, [contract.TA_ERROR_CLIENT])
        with pytest.raises(T.TeecError) as e:
            ctx.open_session(uuid, T.TEEC_LOGIN_GROUP, os.getegid())
        assert e.value.result == contract.TA_ERROR_CLIENT
    with T.Context.simulator(open_) as ctx:  # without the check the public login gets in
        assert _sessions_opened(ctx, open_uuid, 1, T.TEEC_LOGIN_PUBLIC) == (1, [])
    # another uid's TA: this process cannot claim that uid (the simulator reads its credentials)
    other, other_uuid, _ = _deploy(tmp_path / "other", allow_client=f"user:{me + 1}")
    with T.Context.simulator(other) as ctx:
        assert _sessions_opened(ctx, other_uuid, 1, T.TEEC_LOGIN_USER) == (0, [contract.TA_ERROR_CLIENT])
    # the honest runtime opens its session with the login the plan admits
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    with ProtectedModel(build, tee="sim", mode="single") as model:
        assert (model.predict(x) == fixture_deployment_labels(build, x)).all()


def test_group_login_and_what_the_kernel_refuses(tmp_path):
    gid = os.getegid()
    build, uuid, g = _deploy(tmp_path / "g", allow_client=f"group:{gid}")
    assert g["allow_client"] == f"group:{guard.client_uuid('group', gid)}" and g["allow_gid"] == gid
    with T.Context.simulator(build) as ctx:
        assert _sessions_opened(ctx, uuid, 1, T.TEEC_LOGIN_GROUP) == (0, [T.TEEC_ERROR_BAD_PARAMETERS])  # no gid
        ctx.open_session(uuid, T.TEEC_LOGIN_GROUP, gid).close()
        not_mine = max(gid, 1) + 54321  # a group this process is not in: the kernel says EPERM
        with pytest.raises(T.TeecError) as e:
            ctx.open_session(uuid, T.TEEC_LOGIN_GROUP, not_mine)
        assert (e.value.result, e.value.origin) == (T.TEEC_ERROR_GENERIC, T.TEEC_ORIGIN_COMMS)
        # mainline Linux derives no application identity: EINVAL before the TEE
        with pytest.raises(T.TeecError) as e:
            ctx.open_session(uuid, T.TEEC_LOGIN_APPLICATION)
        assert (e.value.result, e.value.origin) == (T.TEEC_ERROR_BAD_PARAMETERS, T.TEEC_ORIGIN_COMMS)
    with ProtectedModel(build, tee="sim", mode="single") as model:  # opens with a group login on gid
        model.predict(np.zeros((1, 5), np.float32))


def test_client_uuid_is_linuxs():
    """The UUIDv5 of Linux's drivers/tee/tee_core.c, which the C SHA-1 in the simulator must match
    (checked against it through the identity tests above)."""
    ns = uuidlib.UUID("58ac9ca0-2086-4683-a1b8-ec4bc08e01b6")
    assert guard.client_uuid("user", 1000) == uuidlib.uuid5(ns, "uid=3e8")
    assert guard.client_uuid("group", 0) == uuidlib.uuid5(ns, "gid=0")


@pytest.mark.parametrize("rate", [1, 0])
def test_rate_limit(tmp_path, rate):
    burst = 4
    build, _, _ = _deploy(tmp_path / "r", rate_limit=rate, rate_burst=burst if rate else 0)
    x = np.zeros((1, 5), np.float32)
    with ProtectedModel(build, tee="sim", mode="single") as model:
        model.predict(x)  # the simulator is up before the clock starts
        answered, refused = 1, 0
        start = time.monotonic()
        for _ in range(16):
            try:
                model.predict(x)
                answered += 1
            except T.TeecError as e:
                assert e.result == contract.TA_ERROR_RATE_LIMIT and e.refusal is not None
                refused += 1
        elapsed = time.monotonic() - start
    print(f"rate {rate}/s burst {burst}: {answered} answered, {refused} refused in {elapsed:.2f} s")
    if rate == 0:  # no limit: every call answered
        assert (answered, refused) == (17, 0)
        return
    # a full bucket, then one label per second: never more than the burst plus what refilled
    assert burst <= answered <= burst + rate * (elapsed + 0.01) + 1 and refused >= 16 - answered


def test_rate_limit_refills_and_survives_closing_every_session(tmp_path):
    build, uuid, _ = _deploy(tmp_path / "r", rate_limit=5, rate_burst=2)
    single = T.Operation(T.TEEC_MEMREF_TEMP_INPUT, T.TEEC_VALUE_OUTPUT).temp(
        0, np.ones(5 + FIXTURE_CLASSES, np.float32)
    )
    with T.Context.simulator(build) as ctx:
        s = ctx.open_session(uuid)
        codes = [s.try_invoke(contract.CMD_SINGLE, single)[0] for _ in range(6)]
        assert contract.TA_ERROR_RATE_LIMIT in codes
        s.close()  # the instance is kept alive: a new session finds the bucket as it was
        s = ctx.open_session(uuid)
        assert s.try_invoke(contract.CMD_SINGLE, single)[0] == contract.TA_ERROR_RATE_LIMIT
        time.sleep(0.5)  # 5 a second: two labels back
        assert s.try_invoke(contract.CMD_SINGLE, single)[0] == T.TEEC_SUCCESS


def test_refusals_print_one_line_naming_the_defence(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((6, 5), np.float32))
    rated, _, _ = _deploy(tmp_path / "rated", rate_limit=1, rate_burst=2)
    res = CliRunner().invoke(main, ["run", str(rated), "--input", str(tmp_path / "x.npy"), "--mode", "single"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "rate limit (1 labels/s, bursts of 2)" in lines[0], res.output
    fenced, _, _ = _deploy(tmp_path / "fenced", allow_client=f"user:{os.geteuid() + 1}")
    res = CliRunner().invoke(main, ["run", str(fenced), "--input", str(tmp_path / "x.npy")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "client identity not allowed" in lines[0], res.output
    capped, uuid, g = _deploy(tmp_path / "capped", session_cap=1)
    with T.Context.simulator(capped) as ctx:
        ctx.open_session(uuid)
        with pytest.raises(T.TeecError, match=r"the TA refused: session cap reached \(1 per client\)"):
            ctx.open_session(uuid, guard=g)


def test_bad_access_settings_are_one_line_errors(tmp_path):
    for kwargs, words in (
        ({"session_cap": -1}, "--session-cap"),
        ({"allow_client": "root"}, "login type 'root'"),
        ({"allow_client": "user:not-a-uuid"}, "--allow-client"),
        ({"allow_client": "public:00000000-0000-0000-0000-000000000001"}, "public login has no client UUID"),
        ({"rate_limit": -5}, "--rate-limit"),
    ):
        with pytest.raises(MirrorcError, match=words):
            guard.access(**kwargs)
    build, _, _ = _deploy(tmp_path / "b")
    plan = json.loads((build / "plan.json").read_text())
    for key, bad, words in (
        ("session_cap", -1, "must be >= 0"),
        ("allow_client", "user:xyz", "guard.allow_client"),
        ("rate_burst", "4", "must be an integer"),
    ):
        broken = json.loads(json.dumps(plan))
        broken["guard"][key] = bad
        with pytest.raises(MirrorcError, match=words):
            contract.validate_plan(broken, "plan.json")
    del plan["guard"]["rate_limit"]  # all the access fields or none
    with pytest.raises(MirrorcError, match="missing field 'guard.rate_limit'"):
        contract.validate_plan(plan, "plan.json")
    res = CliRunner().invoke(
        main, ["compile", "m.onnx", "--data", "mnist", "-o", str(tmp_path / "o"), "--rate-limit", "9/x"]
    )
    assert res.exit_code == 2 and "--rate-limit '9/x'" in res.output, res.output
    defaults = {p.name: p.default for p in main.commands["compile"].params}
    assert (defaults["session_cap"], defaults["allow_client"], defaults["rate_limit"]) == (guard.SESSION_CAP, "", "0")


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="aarch64-linux-gnu-gcc not installed")
def test_ta_with_every_defence_cross_compiles(tmp_path):
    """Freestanding aarch64 against the Internal Core API header, only GP calls from outside."""
    from test_ta_cross import cross_compile

    build, _, _ = _deploy(tmp_path / "all", session_cap=2, allow_client="group:7", rate_limit=50)
    out = tmp_path / "obj"
    out.mkdir()
    cross_compile(build / "ta", out)
