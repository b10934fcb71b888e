"""Strategy Generator: protection strategy x C x tap selection on LeNet-5 (the real pipeline; LeNet builds
in milliseconds), ranked by TEE fit then predicted latency, beside the figures of results files written
here in benchmarks/attacks.py's format ($MIRRORC_RESULTS), so the expectations do not move when
results/ is re-measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirrorc.cli import main
from mirrorc.errors import MirrorcError
from mirrorc.pipeline import build_mirrornet
from mirrorc.plan import strategy
from mirrorc.plan.report import build_report, measured_protection
from mirrorc.train import protect
from passes.mirror import SELECT_MODES

LENET = "examples/models/lenet5.onnx"
LENET_MACS = 416520  # LeNet-5's backbone MACs (mirrorc inspect)


def attack_row(protect_name: str, c: int, head_start: str, cost: float = 0.5, select: str = "first") -> dict:
    penalty = protect.STRATEGIES[protect_name].backbone_penalty
    return {
        "dataset": "mnist",
        "protect": protect_name,
        "C": c,
        "select": select,
        "penalty": penalty,
        "unprotected": 98.0,
        "mirrornet": 98.0 - cost,
        "backbone": 10.0,
        "delta_p": 88.0,
        "cost": cost,
        "head_start": {"3000": "+1.00 ± 0.10", "600": head_start},
    }


def write_results(folder: Path, name: str, setup: dict, rows: list[dict]) -> Path:
    """A results/<name>.json as benchmarks/record.py writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    record = {"name": name, "table": "t", "command": f"python benchmarks/attacks.py --results {name}", "date": "d"}
    path.write_text(json.dumps({**record, "machine": {}, "figures": {"setup": setup, "rows": rows}}))
    return path


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """protection.json on lenet5 (joint, random-backbone), a frontier on a big model (joint, paper), a
    table of another format, and an attacks table that does not say its model's size."""
    folder = tmp_path / "results"
    write_results(
        folder,
        "protection",
        {"model": "lenet5", "backbone_macs": LENET_MACS},
        [attack_row("joint", 2, "+5.00 ± 0.20"), attack_row("random-backbone", 8, "+0.50 ± 1.00")],
    )
    write_results(
        folder,
        "frontier_bignet",
        {"model": "bignet", "backbone_macs": 10**8},
        [{**attack_row("joint", 2, "+3.00"), "dataset": "cifar10"}, attack_row("paper", 2, "+6.00 ± 0.50")],
    )
    write_results(folder, "c_lowering", {"channels": 2}, [{"model": "lenet5", "c_us": 4.4}])
    write_results(folder, "unsized", {"model": "unsized"}, [attack_row("paper", 4, "+9.00")])
    monkeypatch.setenv("MIRRORC_RESULTS", str(folder))
    return folder


def test_every_strategy_c_and_selection_ranked_by_fit_then_latency(results):
    ranked = strategy.candidates(LENET, (1, 3))
    defaults = {name: s.default_channels(LENET) for name, s in protect.STRATEGIES.items()}
    assert {"joint": 2, "paper": 2, "random-backbone": 8}.items() <= defaults.items()
    want = {(n, c, s) for n, d in defaults.items() for c in {1, 3, d} for s in SELECT_MODES}
    assert {(x["strategy"], x["channels"], x["select"]) for x in ranked} == want and len(ranked) == len(want)
    assert [x["rank"] for x in ranked] == list(range(1, len(ranked) + 1))
    assert all(x["default_channels"] == (x["channels"] == defaults[x["strategy"]]) for x in ranked)
    lat = [x["latency_single_us"] for x in ranked]
    assert lat == sorted(lat) and all(x["fits"] for x in ranked)
    # the figures of a row are the report's for that mirrornet
    row = next(x for x in ranked if (x["strategy"], x["channels"], x["select"]) == ("paper", 3, "spread"))
    rep = build_report(build_mirrornet(LENET, channels=3, select="spread", init="keep")[0])
    assert row["latency_single_us"] == pytest.approx(rep["latency_us"]["single"])
    assert row["latency_streaming_us"] == pytest.approx(rep["latency_us"]["streaming"])
    assert row["tee_memory"] == rep["memory"]["total"] and row["cpm_macs"] == rep["totals"]["cpm_macs"]
    assert row["cpm_backbone_mac_ratio"] == pytest.approx(rep["totals"]["cpm_backbone_mac_ratio"])

    # a TEE limit between C = 2 and C = 8: every fitting row ranks before every other, each part by latency
    small = build_report(build_mirrornet(LENET, channels=2, init="keep")[0])["memory"]["total"]
    big = build_report(build_mirrornet(LENET, channels=8, init="keep")[0])["memory"]["total"]
    ranked = strategy.candidates(LENET, (1,), tee_memory=(small + big) // 2, selects=["first"], mode="streaming")
    fits = [x["fits"] for x in ranked]
    assert fits == sorted(fits, reverse=True) and True in fits and False in fits
    print("\nfits by C:", [(x["strategy"], x["channels"], x["fits"]) for x in ranked])
    for part in (True, False):
        lat = [x["latency_streaming_us"] for x in ranked if x["fits"] is part]
        assert lat == sorted(lat)
    assert all(x["latency_us"] == x["latency_streaming_us"] for x in ranked)
    # a plan that does not fit is no option (random- and public-backbone at their C = 8 here)
    assert [x["pareto"] for x in ranked if not x["fits"]] == [None, None]


def test_measured_figures_come_from_the_nearest_model_and_say_so(results, tmp_path):
    ranked = strategy.candidates(LENET, (1, 2), selects=["first", "spread"])
    by = {(x["strategy"], x["channels"], x["select"]): x for x in ranked}
    joint = by["joint", 2, "first"]["measured"]
    assert joint["on"] == "measured on lenet5/mnist" and joint["match"] == "same model"  # not bignet's +3.00
    assert joint["head_start"] == "+5.00 ± 0.20" and joint["budget"] == 600  # the smallest budget
    paper = by["paper", 2, "first"]["measured"]  # lenet5 measured no paper row: the nearer of bignet, unsized
    assert paper["on"] == "measured on bignet/mnist (nearest in backbone MACs)" and paper["head_start_points"] == 6.0
    rb1 = by["random-backbone", 1, "first"]["measured"]
    assert (rb1["C"], rb1["this_configuration"]) == (8, False)
    assert by["joint", 2, "spread"]["measured"]["this_configuration"] is False  # measured with "first"

    # Pareto on (latency, head start) among rows measured at their own configuration: joint C=2 beats
    # paper C=2 (same latency, smaller head start); random-backbone C=8 is slower but leaves the least
    pareto = {k: x["pareto"] for k, x in by.items() if x["pareto"] is not None}
    assert pareto == {
        ("joint", 2, "first"): True,
        ("paper", 2, "first"): False,
        ("random-backbone", 8, "first"): True,
    }
    text = strategy.format_candidates(ranked)
    assert "measured on bignet/mnist (nearest in backbone MACs), C = 2 first" in text
    assert f"measured: {results / 'protection.json'} (`python benchmarks/attacks.py --results protection`)" in text

    # another model of LeNet's size: LeNet's figures, labelled as measured on LeNet, never as its own
    other = tmp_path / "mynet.onnx"
    shutil.copy(LENET, other)
    mine = strategy.candidates(other, (2,), strategies=["joint"], selects=["first"])[0]["measured"]
    assert mine["on"] == "measured on lenet5/mnist (nearest in backbone MACs)"
    # no attacks table at all: rows without figures, never in the Pareto set
    empty = strategy.candidates(LENET, (2,), selects=["first"], strategies=["joint"])
    assert empty[0]["measured"] is not None
    (results / "protection.json").unlink()
    (results / "frontier_bignet.json").unlink()
    (results / "unsized.json").unlink()
    bare = strategy.candidates(LENET, (2,), selects=["first"])
    assert all(x["measured"] is None and x["pareto"] is None for x in bare)
    assert "none measured" in strategy.format_candidates(bare)


def test_of_two_files_on_one_model_the_one_with_more_configurations(results):
    frontier = [attack_row("joint", 1, "+7.00"), attack_row("joint", 4, "+2.00")]
    path = write_results(results, "frontier_lenet5", {"model": "lenet5", "backbone_macs": LENET_MACS}, frontier)
    measured = measured_protection("joint", "lenet5", LENET_MACS)
    assert (measured["file"], measured["rows"], measured["match"]) == (str(path), frontier, "same model")
    assert measured_protection("joint")["file"] == str(results / "protection.json")  # no model: the reference
    assert measured_protection("random-backbone", "lenet5", LENET_MACS)["file"] == str(results / "protection.json")


def test_cli_strategies_json_and_one_line_errors(results, tmp_path):
    run = CliRunner().invoke(main, ["partition", LENET, "--strategies", "-C", "1", "--select", "first", "--json"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.stdout)
    assert out["mode"] == "single" and out["device"] == "rpi3b-optee"
    # every strategy at C = 1 and at its default C; on LeNet-5 latency grows with C, ties in STRATEGIES' order
    order = list(protect.STRATEGIES)
    defaults = {name: s.default_channels(LENET) for name, s in protect.STRATEGIES.items()}
    want = sorted({(n, 1) for n in order} | set(defaults.items()), key=lambda x: (x[1], order.index(x[0])))
    assert [(c["strategy"], c["channels"]) for c in out["candidates"]] == want
    assert [c["rank"] for c in out["candidates"]] == list(range(1, len(want) + 1))
    joint_2 = next(c for c in out["candidates"] if (c["strategy"], c["channels"]) == ("joint", 2))
    assert joint_2["measured"]["on"] == "measured on lenet5/mnist" and joint_2["pareto"] is True

    # a device profile written by `mirrorc profile` (any profile .json) changes the predictions
    profile = json.loads(Path("mirrorc/plan/devices/rpi3b-optee.json").read_text())
    profile["context_switch_us"]["base"] *= 10
    (tmp_path / "slow.json").write_text(json.dumps(profile))
    args = ["partition", LENET, "--strategies", "-C", "1", "--select", "first", "--protect", "joint", "--json"]
    slow = json.loads(CliRunner().invoke(main, [*args, "--device", str(tmp_path / "slow.json")]).stdout)
    assert [(c["strategy"], c["channels"]) for c in slow["candidates"]] == [("joint", 1), ("joint", 2)]
    assert slow["candidates"][0]["latency_us"] > out["candidates"][0]["latency_us"]

    run = CliRunner().invoke(main, ["partition", LENET, "--strategies", "-C", "2", "--protect", "paper"])
    lines = run.stdout.splitlines()
    assert run.exit_code == 0 and lines[0].split()[:4] == ["rank", "strategy", "C", "select"]
    assert len([line for line in lines if line.split()[0].isdigit()]) == 3  # paper at C = 2 x 3 selections
    assert "measured on bignet/mnist (nearest in backbone MACs)" in run.stdout

    (tmp_path / "broken.json").write_text("{")
    for extra, says in (
        (["--protect", "joint,nope"], f"--protect: unknown strategy 'nope' (one of {', '.join(protect.STRATEGIES)})"),
        (["--select", "first,middle"], "--select: unknown tap selection 'middle'"),
        (["--device", str(tmp_path / "broken.json")], "broken.json: cannot read device profile"),
        (["--device", str(tmp_path / "missing.json")], "device '"),
        (["-C", "0"], "--channels"),
    ):
        run = CliRunner().invoke(main, ["partition", LENET, "--strategies", *extra])
        assert run.exit_code == 2, (extra, run.output)
        assert says in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    with pytest.raises(MirrorcError, match="strategy mode"):
        strategy.candidates(LENET, (1,), mode="fastest")
