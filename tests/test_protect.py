"""Protection strategies (mirrorc.train.protect): `random-backbone` trains the CPM alone and leaves every
backbone weight at its seeded random value (`public-backbone` at the given model's own), through the
trainer, `mirrorc compile` and the partition report (which reads the measured figures from results/); bad
combinations are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from helpers import DATA_DIR, initializers, needs_mnist  # noqa: E402
from mirrorc.cli import main  # noqa: E402
from mirrorc.errors import MirrorcError  # noqa: E402
from mirrorc.pipeline import build_mirrornet  # noqa: E402
from mirrorc.train import protect  # noqa: E402
from mirrorc.train.loop import TrainConfig, train  # noqa: E402
from passes.mirror import is_cpm  # noqa: E402

LENET = "examples/models/lenet5.onnx"


def changed_weights(before: onnx.ModelProto, after: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Names of the float initializers whose values changed: (backbone, CPM)."""
    a, b = initializers(before, float_only=True), initializers(after, float_only=True)
    changed = [k for k in a if not np.array_equal(a[k], b[k])]
    return [k for k in changed if not is_cpm(k)], [k for k in changed if is_cpm(k)]


def cli(*args, env: dict | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env={"MIRRORC_DATA": str(DATA_DIR), **(env or {})})


def write_protection_results(folder: Path, rows: list[dict], command: str = "python benchmarks/attacks.py --x") -> Path:
    """A results/protection.json as benchmarks/attacks.py --results protection writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "protection.json"
    path.write_text(
        json.dumps(
            {
                "name": "protection",
                "table": "t",
                "command": command,
                "date": "2026-01-01",
                "machine": {},
                "figures": {"setup": {"model": "lenet5", "compile_epochs": 7}, "rows": rows},
            }
        )
    )
    return path


def test_freeze_backbone_trains_the_cpm_alone():
    model, _ = build_mirrornet(LENET, channels=2, seed=3)
    rng = np.random.default_rng(0)
    y = (np.arange(96) % 10).astype(np.int64)
    x = rng.standard_normal((96, 1, 28, 28)).astype(np.float32)
    x[np.arange(96), 0, y, y] += 3.0
    result = train(
        model,
        x,
        y,
        TrainConfig(epochs=2, batch_size=16, lr=3e-3, freeze_backbone=True),
        logits="mirrornet_logits",
        backbone_logits="backbone_logits",
    )
    backbone, cpm = changed_weights(model, result.model)
    assert backbone == [] and len(cpm) >= 4, (backbone, cpm)
    assert result.history[-1].loss < result.history[0].loss
    # the same call without freezing moves the backbone too (the check above can fail)
    joint = train(
        model,
        x,
        y,
        TrainConfig(epochs=1, batch_size=16, lr=3e-3),
        logits="mirrornet_logits",
        backbone_logits="backbone_logits",
    )
    assert changed_weights(model, joint.model)[0]


def test_freezing_refuses_a_penalty_and_a_plain_model():
    with pytest.raises(MirrorcError, match="backbone is frozen"):
        TrainConfig(freeze_backbone=True, backbone_penalty=0.3).check()
    with pytest.raises(MirrorcError, match="not a MirrorNet"):
        train(
            onnx.load(LENET),
            np.zeros((4, 1, 28, 28), np.float32),
            np.zeros(4, np.int64),
            TrainConfig(epochs=1, freeze_backbone=True),
        )


def test_default_channels_per_strategy():
    assert protect.get("joint").default_channels(LENET) == 2
    assert protect.get("random-backbone").default_channels(LENET) == 8  # half of conv2's 16
    assert protect.get("random-backbone").default_channels("examples/models/vgg7.onnx") == 128
    assert protect.get("public-backbone").default_channels(LENET) == 8  # the floor: an eighth of 16 is 2
    assert protect.get("public-backbone").default_channels("examples/models/vgg7.onnx") == 32
    with pytest.raises(MirrorcError, match="unknown strategy 'nope'"):
        protect.get("nope")


def test_compile_random_backbone_ships_the_random_backbone(tmp_path, tiny_npz):
    from mirrorc.compile import compile_model

    out = tmp_path / "build"
    summary = compile_model(
        LENET,
        out,
        data=str(tiny_npz),
        protect="random-backbone",
        seed=5,
        config=TrainConfig(epochs=1, batch_size=32, seed=5),
        baseline=True,
    )
    assert summary["protect"] == "random-backbone" and summary["channels"] == 8
    initial, _ = build_mirrornet(LENET, channels=8, seed=5, init="random")
    mirrornet = onnx.load(str(out / "mirrornet.onnx"))
    backbone, cpm = changed_weights(initial, mirrornet)
    assert backbone == [] and cpm
    # what a thief copies (normal.onnx) is the seeded random draw, value for value
    normal = initializers(onnx.load(str(out / "normal.onnx")), float_only=True)
    start = initializers(initial, float_only=True)
    shipped = [k for k in normal if k in start]
    assert len(shipped) >= 10 and all(np.array_equal(normal[k], start[k]) for k in shipped)
    # the unprotected baseline is trained whole
    original = initializers(onnx.load(str(out / "original.onnx")), float_only=True)
    assert any(not np.array_equal(original[k], start[k]) for k in original if k in start)
    training = json.loads((out / "training.json").read_text())
    assert training["protect"] == "random-backbone" and training["config"]["freeze_backbone"] is True
    assert "protection: random-backbone, C = 8" in (out / "report.txt").read_text()
    from mirrorc.attack.thief import build_protection

    assert build_protection(out) == "random-backbone" and build_protection(tmp_path) is None


def test_compile_public_backbone_ships_the_given_weights_untouched(tmp_path, tiny_npz):
    """public-backbone: the model's own weights (standing for a public pretrained model) are the
    backbone, frozen; normal.onnx is that model bit for bit, only the CPM learned."""
    from mirrorc.compile import compile_model

    out = tmp_path / "build"
    summary = compile_model(
        LENET, out, data=str(tiny_npz), protect="public-backbone", seed=5, config=TrainConfig(epochs=1, batch_size=32)
    )
    assert summary["protect"] == "public-backbone" and summary["init"] == "keep"
    assert summary["channels"] == 8  # an eighth of conv2's 16 is below the floor of 8
    given = initializers(onnx.load(LENET), float_only=True)
    normal = initializers(onnx.load(str(out / "normal.onnx")), float_only=True)
    shipped = [k for k in normal if k in given]
    assert len(shipped) == len(given) == 10
    assert all(np.array_equal(normal[k], given[k]) for k in shipped)
    _, cpm = changed_weights(
        build_mirrornet(LENET, channels=8, seed=5, init="keep")[0], onnx.load(str(out / "mirrornet.onnx"))
    )
    assert cpm
    # the unprotected baseline is the given model fine-tuned whole on the private data
    original = initializers(onnx.load(str(out / "original.onnx")), float_only=True)
    assert any(not np.array_equal(original[k], given[k]) for k in given)
    assert json.loads((out / "training.json").read_text())["init"] == "keep"


def test_frozen_strategies_refuse_the_other_init(tmp_path, tiny_npz):
    for strategy, init in (("public-backbone", "random"), ("random-backbone", "keep")):
        run = cli("compile", LENET, "--data", tiny_npz, "--protect", strategy, "--init", init, "-o", tmp_path / "b")
        assert run.exit_code == 2, run.output
        assert f"--init {init}: --protect {strategy} starts the backbone from" in run.output
        assert len(run.output.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_compile_penalty_with_random_backbone_is_one_line_exit_2(tmp_path, tiny_npz):
    out = tmp_path / "b"
    run = cli(
        "compile",
        LENET,
        "--data",
        tiny_npz,
        "--protect",
        "random-backbone",
        "--backbone-penalty",
        "0.3",
        "-o",
        out,
        "--epochs",
        "1",
    )
    assert run.exit_code == 2, run.output
    assert "backbone is frozen" in run.output and len(run.output.strip().splitlines()) == 1
    assert not out.exists()


def test_partition_report_shows_the_strategy():
    run = cli("partition", LENET, "--report", "--protect", "random-backbone")
    assert run.exit_code == 0, run.output
    assert "C=8" in run.output.splitlines()[0]
    assert "protection     random-backbone" in run.output
    run = cli("partition", LENET, "--json")
    rep = json.loads(run.output)
    assert rep["channels"] == 2 and rep["protection"]["name"] == "joint"


def test_partition_report_reads_the_measured_figures_from_results(tmp_path):
    row = {
        "dataset": "mnist",
        "protect": "random-backbone",
        "C": 8,
        "select": "first",
        "penalty": 0.0,
        "unprotected": 98.0,
        "mirrornet": 96.77,
        "cost": 1.23,
        "head_start": {"600": "+9.87 ± 0.65"},
    }
    path = write_protection_results(
        tmp_path / "res",
        [row, {**row, "protect": "joint", "cost": None}],
        command="python benchmarks/attacks.py --only-in-this-test",
    )
    env = {"MIRRORC_RESULTS": str(tmp_path / "res")}
    run = cli("partition", LENET, "--report", "--protect", "random-backbone", env=env)
    assert run.exit_code == 0, run.output
    measured = next(line for line in run.output.splitlines() if line.startswith("  measured"))
    assert "C = 8, 7 epochs: MirrorNet 1.23 points below the unprotected model" in measured
    assert "+9.87 ± 0.65" in measured and "--only-in-this-test" in measured and str(path) in measured
    # a row without an unprotected baseline (cost None) is no measured cost
    run = cli("partition", LENET, "--report", "--protect", "joint", env=env)
    assert "no measured figures for this strategy in " + str(path) in run.output
    rep = json.loads(cli("partition", LENET, "--json", "--protect", "random-backbone", env=env).output)
    assert rep["protection"]["measured"]["rows"] == [row] and rep["protection"]["measured"]["file"] == str(path)


def test_partition_report_without_results_says_so(tmp_path):
    env = {"MIRRORC_RESULTS": str(tmp_path / "nothing-here")}
    run = cli("partition", LENET, "--report", "--protect", "random-backbone", env=env)
    assert run.exit_code == 0, run.output
    assert f"no measured figures (no results of benchmarks/attacks.py in {tmp_path / 'nothing-here'})" in run.output
    rep = json.loads(cli("partition", LENET, "--json", env=env).output)
    assert rep["protection"]["measured"]["rows"] == []


def test_a_broken_results_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "protection.json").write_text(json.dumps({"command": "python benchmarks/attacks.py"}))
    run = cli("partition", LENET, "--report", env={"MIRRORC_RESULTS": str(tmp_path)})
    assert run.exit_code == 2, run.output
    assert "protection.json: field 'figures' missing" in run.output and len(run.output.strip().splitlines()) == 1


def test_the_shipped_results_cover_every_strategy_at_its_default_channels(monkeypatch):
    """results/ (in the repo) holds a measured cost and head start for each strategy on LeNet-5 (or a model of
    its size), at the C the strategy uses by default, so `partition --report --protect S` quotes a figure
    for the build it plans."""
    from mirrorc.plan.inspect import inspect_model
    from mirrorc.plan.report import measured_protection

    monkeypatch.delenv("MIRRORC_RESULTS", raising=False)
    macs = inspect_model(LENET)["totals"]["macs"]
    for name, strategy in protect.STRATEGIES.items():
        measured = measured_protection(name, model="lenet5", backbone_macs=macs)
        assert measured["rows"], (name, measured)
        assert any(r["C"] == strategy.default_channels(LENET) for r in measured["rows"]), (name, measured["rows"])
        assert all("600" in r["head_start"] for r in measured["rows"])
        assert measured["command"].startswith("python benchmarks/attacks.py")


def test_benchmarks_write_what_the_report_reads(tmp_path, monkeypatch):
    """benchmarks/record.py (the benchmarks' one writer) and mirrorc.plan.report (the reader) agree on the
    folder and the format."""
    import sys

    monkeypatch.setenv("MIRRORC_RESULTS", str(tmp_path))
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    monkeypatch.setattr(sys, "argv", [str(benchmarks / "attacks.py"), "--seeds", "3"])
    from record import write_results

    from mirrorc.plan.report import load_results, measured_protection

    row = {"dataset": "mnist", "protect": "joint", "C": 2, "penalty": 0.3, "cost": 0.5, "head_start": {"600": "+1.00"}}
    path = write_results("protection", "a table", {"setup": {}, "rows": [row]})
    assert path == tmp_path / "protection.json"
    written = load_results("protection")
    assert written["command"] == "python benchmarks/attacks.py --seeds 3"
    assert written["date"] and written["machine"]["cores"] >= 1
    assert measured_protection("joint")["rows"] == [row]


def test_partition_protect_misuse_is_one_line_exit_2(tmp_path):
    model, _ = build_mirrornet(LENET, channels=2)
    path = tmp_path / "mirrornet.onnx"
    onnx.save(model, str(path))
    for args, says in (
        ((path, "--protect", "random-backbone"), "only apply to an original model"),
        ((LENET, "--protect", "nope"), "--protect: unknown strategy 'nope'"),
        ((LENET, "--report", "--protect", "joint,paper"), "--protect: unknown strategy 'joint,paper'"),
    ):
        run = cli("partition", *args)
        assert run.exit_code == 2, run.output
        assert says in run.output and "Traceback" not in run.output


@pytest.mark.slow
@needs_mnist
def test_random_backbone_on_mnist_learns_in_the_cpm_alone(tmp_path):
    """Real MNIST, 3000 images, 1 epoch: the MirrorNet learns although the backbone alone stays at
    chance (its weights are random), so all the accuracy is the secure world's."""
    out = tmp_path / "rb"
    run = cli(
        "compile",
        LENET,
        "--data",
        "mnist",
        "--protect",
        "random-backbone",
        "--limit-train",
        "3000",
        "--epochs",
        "1",
        "--no-baseline",
        "-o",
        out,
        "--json",
    )
    assert run.exit_code == 0, run.output
    summary = json.loads(run.output[run.output.index("{") :])
    print("validation MirrorNet", summary["val_mirrornet_acc"], "backbone alone", summary["val_backbone_acc"])
    assert summary["val_backbone_acc"] < 30.0
    assert summary["val_mirrornet_acc"] > max(50.0, summary["val_backbone_acc"] + 30.0)
