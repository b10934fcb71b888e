"""The label oracle (issue 13): the extraction attack through the TA, and the TA's range check, on
the fixture deployment (tests/test_ta_support.py), whose CPM logits are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from mirrorc.attack import extract
from mirrorc.backend import guard
from mirrorc.cli import main
from mirrorc.tee import teec
from mirrorc.tee.runtime import ProtectedModel
from passes import contract
from test_ta_support import FIXTURE_CLASSES, fixture_logits, write_fixture_deployment


def fixture_cpm_differences(x: np.ndarray) -> np.ndarray:
    """cpm_j - cpm_0 of the fixture's CPM for inputs x (its taps are x[0:3] and x[3:5] / 2)."""
    zero = np.zeros(FIXTURE_CLASSES, np.float32)
    cpm = np.stack([fixture_logits([xi[0:3], xi[3:5] * np.float32(0.5)], zero) for xi in x])
    return cpm - cpm[:, :1]


@pytest.fixture(scope="module")
def open_build(tmp_path_factory):
    build = tmp_path_factory.mktemp("open_deployment")
    write_fixture_deployment(build)
    return build


@pytest.fixture(scope="module")
def guarded_build(tmp_path_factory):
    """The same deployment with the range check compiled in, its range from 2000 'training' inputs."""
    build = tmp_path_factory.mktemp("guarded_deployment")
    write_fixture_deployment(build)  # normal.onnx first: the range comes from its logits
    import onnx

    x_train = np.random.default_rng(10).normal(size=(2000, 5)).astype(np.float32)
    defences = guard.logit_range(onnx.load(str(build / "normal.onnx")), x_train)
    write_fixture_deployment(build, defences=defences)
    return build


def test_extract_recovers_cpm_differences_without_defence(open_build):
    x = np.random.default_rng(3).normal(size=(12, 5)).astype(np.float32)
    eps = 1e-3
    with ProtectedModel(open_build, tee="sim", mode="single") as model:
        rec = extract.recover(model, x, eps=eps)
    steps = math.ceil(math.log2(extract.SPAN / eps))
    assert rec.queries == len(x) * (FIXTURE_CLASSES - 1) * steps  # (K-1) * log2(span/eps) per input
    assert rec.refused == 0 and not rec.censored.any() and not rec.confused.any()
    err = np.abs(rec.differences - fixture_cpm_differences(x))
    print(f"max |recovered - true| {err.max():.2e} (stated precision {rec.eps:.2e}, {steps} queries per class)")
    assert rec.eps <= eps and err.max() <= rec.eps + 1e-5


def test_range_check_refuses_out_of_range_logits_and_keeps_working(guarded_build):
    import json

    plan = json.loads((guarded_build / "plan.json").read_text())
    low, high = np.array(plan["guard"]["logit_min"], np.float32), np.array(plan["guard"]["logit_max"], np.float32)
    taps = [np.ones(3, np.float32), np.ones(2, np.float32)]
    inside = (low + high) / 2
    want = int(np.argmax(fixture_logits(taps, inside)))
    with (
        ProtectedModel(guarded_build, tee="sim", mode="single") as single,
        ProtectedModel(guarded_build, tee="sim", mode="stream") as stream,
    ):
        for model in (single, stream):
            assert model.query(taps, inside) == want
            for bad in (high + 1e-3 * (1 + abs(high)), low - 1e-3 * (1 + abs(low)), np.full_like(inside, np.nan)):
                logits = inside.copy()
                logits[2] = bad[2]
                with pytest.raises(teec.TeecError, match="outside the range seen in training") as refused:
                    model.query(taps, logits)
                assert refused.value.result == contract.TA_ERROR_LOGIT_RANGE
                assert model.query(taps, inside) == want  # the session goes on
            assert model.query(taps, high) == int(np.argmax(fixture_logits(taps, high)))  # bounds are inside


def test_honest_inputs_pass_the_range_check(guarded_build):
    """In-distribution inputs never meet the range (what makes it free for an honest caller)."""
    from test_ta_support import fixture_deployment_labels

    x = np.random.default_rng(11).normal(size=(500, 5)).astype(np.float32)
    with ProtectedModel(guarded_build, tee="sim", mode="single") as model:
        assert (model.predict(x) == fixture_deployment_labels(guarded_build, x)).all()


def test_cli_run_says_why_in_one_line(guarded_build, tmp_path):
    np.save(tmp_path / "far.npy", np.full((1, 5), 1e3, np.float32))
    res = CliRunner().invoke(main, ["run", str(guarded_build), "--input", str(tmp_path / "far.npy")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "outside the range seen in training" in lines[0], res.output


def test_extract_stays_inside_the_range(guarded_build):
    """Under the range check the search makes no refused call; what it recovers is within its precision
    or flagged (censored: outside the reachable span; confused: a third class won)."""
    x = np.random.default_rng(4).normal(size=(12, 5)).astype(np.float32)
    with ProtectedModel(guarded_build, tee="sim", mode="single") as model:
        rec = extract.recover(model, x, eps=1e-3)
    assert rec.refused == 0
    err = np.abs(rec.differences - fixture_cpm_differences(x))
    clean = ~(rec.censored | rec.confused)
    print(
        f"{clean.sum()} of {clean.size} differences clean, max error there {err[clean].max():.2e}; "
        f"{rec.censored.sum()} censored, {rec.confused.sum()} confused; {rec.queries} queries"
    )
    assert err[clean].max() <= rec.eps + 1e-5


def test_extract_stops_where_the_query_budget_is_spent(tmp_path, monkeypatch):
    """The attack ends at the budget: exactly `budget` answers, one refusal, and what it recovered
    before (the inputs it completed) is exact."""
    eps = 1e-2
    per_input = (FIXTURE_CLASSES - 1) * math.ceil(math.log2(extract.SPAN / eps))
    budget = 2 * per_input + 5  # two inputs and part of a third
    build = tmp_path / "budgeted"
    build.mkdir()
    write_fixture_deployment(build, defences=dict(guard.no_guard(FIXTURE_CLASSES), query_budget=budget))
    monkeypatch.setenv("MIRRORC_TA_STORAGE", str(tmp_path / "storage"))
    x = np.random.default_rng(6).normal(size=(6, 5)).astype(np.float32)
    with ProtectedModel(build, tee="sim", mode="single") as model:
        rec = extract.recover(model, x, eps=eps)
    err = np.abs(rec.differences - fixture_cpm_differences(x[:2]))
    print(
        f"budget {budget}: {rec.answered} answered, {rec.refused} refused, {len(rec.differences)} inputs "
        f"completed, max error {err.max():.2e}"
    )
    assert rec.budget_spent and (rec.answered, rec.refused, rec.queries) == (budget, 1, budget + 1)
    assert len(rec.differences) == 2 and rec.censored.shape == rec.confused.shape == (2, FIXTURE_CLASSES)
    assert err.max() <= rec.eps + 1e-5


def test_extract_waits_out_the_rate_limit(tmp_path):
    """Rate-limit refusals are waited out and the query asked again: the same differences, every
    search complete."""
    eps = 1e-1
    build = tmp_path / "limited"
    build.mkdir()
    defences = {**guard.no_guard(FIXTURE_CLASSES), **guard.access(session_cap=0, rate_limit=100, rate_burst=5)}
    write_fixture_deployment(build, defences=defences)
    x = np.random.default_rng(7).normal(size=(1, 5)).astype(np.float32)
    with ProtectedModel(build, tee="sim", mode="single") as model:
        rec = extract.recover(model, x, eps=eps)
    err = np.abs(rec.differences - fixture_cpm_differences(x))
    print(f"{rec.answered} answered, {rec.rate_limited} rate-limit refusals waited out, max error {err.max():.2e}")
    assert rec.rate_limited > 0 and rec.refused == rec.rate_limited and not rec.budget_spent
    assert rec.answered == (FIXTURE_CLASSES - 1) * math.ceil(math.log2(extract.SPAN / eps))
    assert err.max() <= rec.eps + 1e-5


def test_query_budget_persists_across_sessions_and_simulator_restarts(tmp_path, monkeypatch):
    build = tmp_path / "budgeted"
    build.mkdir()
    defences = dict(guard.no_guard(FIXTURE_CLASSES), query_budget=5)
    write_fixture_deployment(build, defences=defences)
    monkeypatch.setenv("MIRRORC_TA_STORAGE", str(tmp_path / "storage"))
    x = np.random.default_rng(5).normal(size=(1, 5)).astype(np.float32)
    answered = 0
    for mode in ("single", "stream", "single"):  # each opens its own simulator process: a TA restart
        with ProtectedModel(build, tee="sim", mode=mode) as model:
            for _ in range(2):
                try:
                    model.predict(x)
                    answered += 1
                except teec.TeecError as refused:
                    assert refused.result == contract.TA_ERROR_QUERY_BUDGET
                    assert "query budget is spent" in str(refused)
    assert answered == 5
    assert (tmp_path / "storage").is_dir() and len(list((tmp_path / "storage").iterdir())) == 1
    # a new budget file (a TA reinstalled with its storage wiped) answers again
    monkeypatch.setenv("MIRRORC_TA_STORAGE", str(tmp_path / "fresh"))
    with ProtectedModel(build, tee="sim", mode="single") as model:
        model.predict(x)


def test_range_check_needs_enough_training_images_to_know_the_range():
    """A range from a few dozen images refuses honest inputs (a ShuffleNetV2 built from 32 images
    refused 6 of 6 test images): below RANGE_MIN_IMAGES the check stays off and the plan says why."""
    from helpers import EXAMPLE_MODELS
    from mirrorc.pipeline import build_mirrornet

    model, _ = build_mirrornet(EXAMPLE_MODELS / "lenet5.onnx", channels=2)
    x = np.random.default_rng(0).standard_normal((guard.RANGE_MIN_IMAGES, 1, 28, 28)).astype(np.float32)
    few = guard.logit_range(model, x[:32])
    assert few["range_check"] is False and "32 training images" in few["range_check_off"]
    enough = guard.logit_range(model, x)
    assert enough["range_check"] is True
    assert all(lo < hi for lo, hi in zip(enough["logit_min"], enough["logit_max"]))
    for g in (few, enough):  # both are what the plan's "guard" schema asks for
        assert set(contract.GUARD_SCHEMA) <= set(g)
