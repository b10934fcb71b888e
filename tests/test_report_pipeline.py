"""The report on mirrornets built by the real pipeline (mirrorc.pipeline.build_mirrornet): LeNet-5
must give the same figures as the hand-built contract fixture, and the emulator's predictions on
the pipeline's CPMs are compared with the paper's (Table II, Table IV)."""

from __future__ import annotations

import json

import onnx
import pytest

from mirrorc.pipeline import build_mirrornet
from mirrorc.plan.emulator import load_device, predict
from mirrorc.plan.report import build_report
from test_report_emulator import TABLE4_C4, VGG, lenet5_cpm, vgg_cpm
from test_report_fixture import lenet_mirrornet


def _key_figures(r):
    return {
        "stages": [
            (
                s["stage"],
                [x["notation"] for x in s["backbone"]],
                [x["notation"] for x in s["cpm"]],
                s["tap"] and (s["tap"]["shape"], s["tap"]["bytes"]),
                round(s["secure_us"], 6),
            )
            for s in r["stages"]
        ],
        "totals": r["totals"],
        "transfer": r["transfer"],
        "latency": {k: round(v, 6) for k, v in r["latency_us"].items()},
        "memory": {k: r["memory"][k] for k in ("weights", "arena", "carry", "input_buffer", "total")},
    }


@pytest.mark.parametrize("c", [1, 3])
def test_pipeline_lenet5_matches_the_contract_fixture(example_models, c):
    model, _ = build_mirrornet(example_models["lenet5"], channels=c, seed=0, init="keep")
    assert _key_figures(build_report(model)) == _key_figures(build_report(lenet_mirrornet(c)))


def test_pipeline_cpms_against_the_paper(example_models, capsys):
    """Same reading as tests/test_report_emulator.py, now on the CPMs the pipeline builds: LeNet-5 at
    C=1..4 (paper 3.05/3.2/3.36/3.42 ms) and the paper's VGG family at C=4 (examples/make_models.py's
    VGG_PAPER; Table IV: VGG-7 6.960, VGG-11 8.495, VGG-16 22.061 ms; VGG-6 has no figure), each
    within 3% of the paper."""
    dev = load_device()
    with capsys.disabled():
        print("\npipeline CPM, single-invoke prediction vs paper (ms)")
        for c, paper in {1: 3.05, 2: 3.2, 3: 3.36, 4: 3.42}.items():
            model, _ = build_mirrornet(example_models["lenet5"], channels=c, seed=0, init="keep")
            got = build_report(model, dev)["latency_us"]["single"]
            assert got == pytest.approx(predict(dev, *lenet5_cpm(c))["single"]["total_us"])
            print(f"  LeNet-5 C={c}: {got / 1000:.3f} vs {paper} ({got / 1000 / paper - 1:+.1%})")
        for name, (builder, paper) in TABLE4_C4.items():
            model, _ = build_mirrornet(example_models[builder], channels=4, seed=0, init="keep")
            got = build_report(model, dev)["latency_us"]["single"]
            assert got == pytest.approx(predict(dev, *vgg_cpm(VGG[name][0]))["single"]["total_us"])
            if paper is None:
                print(f"  {name:7s} C=4: {got / 1000:.3f} ({builder}; not in Table IV)")
                continue
            print(f"  {name:7s} C=4: {got / 1000:.3f} vs {paper} ({got / 1000 / paper - 1:+.1%}, {builder})")
            assert abs(got / 1000 / paper - 1) < 0.03


def test_saved_build_reports_the_same(example_models, tmp_path):
    model, _ = build_mirrornet(example_models["vgg7"], channels=2, seed=0, init="keep")
    onnx.save(model, tmp_path / "mirrornet.onnx")
    assert build_report(tmp_path / "mirrornet.onnx") == build_report(model)


@pytest.mark.parametrize("name,c", [("lenet5", 2), ("vgg7", 3)])
def test_memory_matches_the_generated_c(example_models, name, c):
    """The report plans memory on the mirrornet; the C lowering plans it on the split, BN-folded
    secure graph. Weights, arena and per-session state must come out the same."""
    from passes.fold_bn import fold_bn
    from passes.lower_c import lower
    from passes.split import split

    model, _ = build_mirrornet(example_models[name], channels=c, seed=0, init="keep")
    sizes = lower(fold_bn(split(model)[1]), name).sizes
    m = build_report(model)["memory"]
    print(f"\n{name} C={c}: report {m['weights']}/{m['arena']}/{m['carry']}, C header {sizes}")
    assert (m["weights"], m["arena"], m["carry"]) == (sizes["weights"], sizes["arena"], sizes["state"])


def test_cli_partition_of_an_original_model(example_models):
    from click.testing import CliRunner

    from mirrorc.cli import main

    run = CliRunner().invoke(main, ["partition", str(example_models["lenet5"]), "--report", "-C", "3", "--json"])
    assert run.exit_code == 0, run.output
    model, _ = build_mirrornet(example_models["lenet5"], channels=3, seed=0, init="keep")
    got = json.loads(run.stdout)
    assert got.pop("protection")["name"] == "joint"  # the default strategy, as the report states it
    assert got == json.loads(json.dumps(build_report(model)))
    run = CliRunner().invoke(main, ["partition", str(example_models["lenet5"]), "--select", "nonsense"])
    assert run.exit_code == 2 and "select" in run.stderr
    run = CliRunner().invoke(main, ["partition", str(example_models["lenet5"]), "-C", "1,2"])
    assert run.exit_code == 2 and "one channel count" in run.stderr
