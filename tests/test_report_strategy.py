"""Strategy Generator on the hand-built LeNet-5 mirrornet (the pipeline is injected as `build`)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mirrorc.errors import MirrorcError
from mirrorc.plan import strategy
from mirrorc.plan.report import build_report
from test_report_fixture import lenet_mirrornet


def build(path, c, select, seed):
    if c > 6:  # LeNet's first tap has 6 channels
        raise MirrorcError(f"mirror: tap 1 has 6 channels, cannot select {c}")
    return lenet_mirrornet(c, seed), {"channels": c}


def test_ranked_by_latency_and_consistent_with_the_report():
    ranked = strategy.candidates("lenet5.onnx", (4, 1, 3, 2), build=build)
    assert [x["channels"] for x in ranked] == [1, 2, 3, 4]  # smaller CPM, less predicted latency
    assert [x["rank"] for x in ranked] == [1, 2, 3, 4]
    lat = [x["latency_us"] for x in ranked]
    assert lat == sorted(lat) and all(x["fits"] for x in ranked)
    r3 = build_report(lenet_mirrornet(3))
    c3 = ranked[2]
    assert c3["latency_single_us"] == pytest.approx(r3["latency_us"]["single"]) == pytest.approx(c3["latency_us"])
    assert c3["tee_memory"] == r3["memory"]["total"] and c3["cpm_macs"] == r3["totals"]["cpm_macs"]


def test_memory_fit_ranks_before_latency_and_errors_go_last():
    small = build_report(lenet_mirrornet(1))["memory"]["total"]
    big = build_report(lenet_mirrornet(4))["memory"]["total"]
    limit = (small + big) // 2  # C=1 fits, C=4 does not
    ranked = strategy.candidates("m.onnx", (1, 4, 8), tee_memory=limit, mode="streaming", build=build)
    assert [(x["channels"], x.get("fits")) for x in ranked] == [(1, True), (4, False), (8, None)]
    assert "cannot select 8" in ranked[-1]["error"]
    assert ranked[0]["latency_us"] == ranked[0]["latency_streaming_us"]
    text = strategy.format_candidates(ranked, "streaming")
    assert "NO (limit" in text and "cannot select 8" in text
    with pytest.raises(MirrorcError, match="--channels"):
        strategy.candidates("m.onnx", (0,), build=build)


def test_cli_strategies_uses_the_pipeline(monkeypatch, tmp_path):
    """`mirrorc partition --strategies` calls mirrorc.pipeline.build_mirrornet; the fixture stands in
    for it here (monkeypatched) so the CLI is tested before and independently of the pipeline."""
    import sys
    import types

    calls = []

    def build_mirrornet(path, channels=2, select=None, seed=0, init="keep"):
        calls.append((path, channels, select, seed, init))
        return lenet_mirrornet(channels, seed), {}

    monkeypatch.setitem(sys.modules, "mirrorc.pipeline", types.SimpleNamespace(build_mirrornet=build_mirrornet))
    from mirrorc.cli import main

    run = CliRunner().invoke(main, ["partition", "orig.onnx", "--strategies", "-C", "2,1", "--json", "--seed", "3"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.output)
    assert [c["channels"] for c in out["candidates"]] == [1, 2] and out["mode"] == "single"
    assert calls == [("orig.onnx", 2, None, 3, "keep"), ("orig.onnx", 1, None, 3, "keep")]
    run = CliRunner().invoke(main, ["partition", "orig.onnx", "--strategies"])
    assert run.exit_code == 0 and run.output.splitlines()[0].split()[:2] == ["rank", "C"]
    assert len(run.output.splitlines()) == 6 and run.output.splitlines()[-1].startswith("ranked by memory fit")
