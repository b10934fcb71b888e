"""mirrorc attack on a small LeNet-5 MirrorNet trained on real MNIST.

The build directory follows docs/ARCHITECTURE.md (mirrornet.onnx names and metadata). It is made
here by a small fixture builder (C = 2, taps after the two conv blocks) so the attack code can be
tested on its own; the plain loss is cross-entropy on mirrornet_logits only."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import DATA_DIR, needs_mnist


def lenet_mirrornet(channels: int = 2, seed: int = 0) -> onnx.ModelProto:
    """An untrained LeNet-5 MirrorNet laid out as the contract says (taps after each conv block)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def w(name, *shape, fan_in=None):
        fan_in = fan_in or int(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32), name))
        return name

    def b(name, n):
        inits.append(numpy_helper.from_array(np.zeros(n, np.float32), name))
        return name

    def node(op, ins, out, world, stage, name, **attrs):
        n = helper.make_node(op, ins, [out], name=name, **attrs)
        for key, value in (("mirrorc.world", world), ("mirrorc.stage", str(stage))):
            n.metadata_props.add(key=key, value=value)
        nodes.append(n)
        return out

    conv = dict(kernel_shape=[5, 5])
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    c = channels
    # backbone
    x = node(
        "Conv",
        ["input", w("conv1.weight", 6, 1, 5, 5), b("conv1.bias", 6)],
        "conv1_out",
        "normal",
        1,
        "conv1",
        pads=[2] * 4,
        **conv,
    )
    x = node("Relu", [x], "relu1_out", "normal", 1, "relu1")
    t1 = node("MaxPool", [x], "pool1_out", "normal", 1, "pool1", **pool)
    x = node(
        "Conv", [t1, w("conv2.weight", 16, 6, 5, 5), b("conv2.bias", 16)], "conv2_out", "normal", 2, "conv2", **conv
    )
    x = node("Relu", [x], "relu2_out", "normal", 2, "relu2")
    t2 = node("MaxPool", [x], "pool2_out", "normal", 2, "pool2", **pool)
    x = node("Flatten", [t2], "flat_out", "normal", 3, "flatten")
    x = node("Gemm", [x, w("fc1.weight", 120, 400), b("fc1.bias", 120)], "fc1_out", "normal", 3, "fc1", transB=1)
    x = node("Relu", [x], "relu3_out", "normal", 3, "relu3")
    x = node("Gemm", [x, w("fc2.weight", 84, 120), b("fc2.bias", 84)], "fc2_out", "normal", 3, "fc2", transB=1)
    x = node("Relu", [x], "relu4_out", "normal", 3, "relu4")
    node("Gemm", [x, w("fc3.weight", 10, 84), b("fc3.bias", 10)], "backbone_logits", "normal", 3, "fc3", transB=1)
    # taps: the selected channels cross to the secure world
    taps = []
    for k, (tensor, shape) in enumerate(((t1, [c, 14, 14]), (t2, [c, 5, 5])), start=1):
        inits.append(numpy_helper.from_array(np.arange(c, dtype=np.int64), f"mirrorc/select{k}/indices"))
        node(
            "Gather",
            [tensor, f"mirrorc/select{k}/indices"],
            f"mirrorc_tap{k}",
            "normal",
            k,
            f"mirrorc/select{k}",
            axis=1,
        )
        taps.append(
            {
                "index": k,
                "tensor": tensor,
                "selected": f"mirrorc_tap{k}",
                "channels": list(range(c)),
                "shape": shape,
                "bytes": 4 * int(np.prod(shape)),
            }
        )
    # CPM: stage 2 narrowed to C channels, then a narrowed dense head (C_l = C * 5 * 5)
    cl = c * 25
    x = node(
        "Conv",
        ["mirrorc_tap1", w("cpm/conv2.weight", c, c, 5, 5), b("cpm/conv2.bias", c)],
        "cpm/conv2_out",
        "secure",
        2,
        "cpm/conv2",
        **conv,
    )
    x = node("Relu", [x], "cpm/relu2_out", "secure", 2, "cpm/relu2")
    x = node("MaxPool", [x], "cpm/pool2_out", "secure", 2, "cpm/pool2", **pool)
    x = node("Add", [x, "mirrorc_tap2"], "cpm/m2", "secure", 2, "cpm/add2")
    x = node("Flatten", [x], "cpm/flat_out", "secure", 3, "cpm/flatten")
    x = node(
        "Gemm", [x, w("cpm/fc1.weight", cl, cl), b("cpm/fc1.bias", cl)], "cpm/fc1_out", "secure", 3, "cpm/fc1", transB=1
    )
    x = node("Relu", [x], "cpm/relu3_out", "secure", 3, "cpm/relu3")
    node(
        "Gemm", [x, w("cpm/fc3.weight", 10, cl), b("cpm/fc3.bias", 10)], "cpm_logits", "secure", 3, "cpm/fc3", transB=1
    )
    node("Add", ["backbone_logits", "cpm_logits"], "mirrornet_logits", "secure", 3, "cpm/final_add")
    node("ArgMax", ["mirrornet_logits"], "label", "secure", 3, "cpm/argmax", axis=1, keepdims=0)

    graph = helper.make_graph(
        nodes,
        "lenet5_mirrornet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("backbone_logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("mirrornet_logits", TensorProto.FLOAT, ["N", 10]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "mirrorc.version": "1",
        "mirrorc.channels": str(c),
        "mirrorc.num_classes": "10",
        "mirrorc.taps": json.dumps(taps),
        "mirrorc.options": json.dumps({"channels": c, "select": "first", "seed": seed}),
        "mirrorc.source": json.dumps({"file": "fixture", "sha256": ""}),
    }
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mnist():
    from mirrorc.train.data import load_dataset

    return load_dataset("mnist", data_dir=str(DATA_DIR), input_shape=(1, 28, 28))


@pytest.fixture(scope="module")
def plain_build(tmp_path_factory, mnist):
    """A plain-loss MirrorNet (cross-entropy on mirrornet_logits only), briefly trained by the real
    trainer: its backbone alone is a weak model that a working fine-tune must improve on."""
    from mirrorc.train.loop import TrainConfig, train

    result = train(
        lenet_mirrornet(2),
        mnist.x_train[:3000],
        mnist.y_train[:3000],
        TrainConfig(epochs=1, batch_size=64, lr=1e-3, val_fraction=0.0),
        logits="mirrornet_logits",
        backbone_logits="backbone_logits",
    )
    build = tmp_path_factory.mktemp("build")
    onnx.save(result.model, str(build / "mirrornet.onnx"))
    return build


def _cli(*args):
    from click.testing import CliRunner

    from mirrorc.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], env={"MIRRORC_DATA": str(DATA_DIR)})


# --------------------------------------------------------------------------- pure pieces


def test_head_start_is_best_attack_minus_matching_scratch():
    from mirrorc.attack.thief import Result, head_starts

    results = [Result("finetune_all", 600, s, a) for s, a in ((0, 97.0), (1, 96.0))]
    results += [Result("replace_cpm", 600, s, a) for s, a in ((0, 95.0), (1, 96.5))]
    results += [Result("scratch", 600, s, a) for s, a in ((0, 92.0), (1, 93.0))]
    results += [Result("distill", 600, s, a) for s, a in ((0, 99.0), (1, 90.0))]
    results += [Result("scratch_oracle", 600, s, a) for s, a in ((0, 93.0), (1, 90.0))]
    hs = head_starts(results)[600]
    # seed 0: distill 99 - 93 = 6 beats finetune 97 - 92 = 5; seed 1: replace_cpm 96.5 - 93 = 3.5
    assert hs["per_seed"] == [6.0, 3.5] and hs["best_attack"] == ["distill", "replace_cpm"]
    assert hs["mean"] == pytest.approx(4.75) and hs["std"] == pytest.approx(np.std([6.0, 3.5], ddof=1))


def test_head_start_over_a_public_copy_counts_the_public_model_as_a_start():
    """public-backbone: normal.onnx is a public model, so fine-tuning or distilling into it needs no theft;
    the head start is what the copy adds beyond that (here replace_cpm's use of the tapped channels)."""
    from mirrorc.attack.thief import Result, head_starts

    results = [Result("finetune_all", 600, 0, 97.0), Result("replace_cpm", 600, 0, 97.5)]
    results += [
        Result("scratch", 600, 0, 92.0),
        Result("distill", 600, 0, 96.0),
        Result("scratch_oracle", 600, 0, 91.0),
    ]
    hs = head_starts(results, public_copy=True)[600]
    assert hs["per_seed"] == [0.5] and hs["best_attack"] == ["replace_cpm"]
    # against scratch alone the same results read +5.5 (finetune would be 5, distill 5)
    assert head_starts(results)[600]["per_seed"] == [5.5]


def test_budget_draw_is_seeded_and_bounded():
    from mirrorc.attack.thief import draw_budget
    from mirrorc.errors import MirrorcError

    a, b = draw_budget(1000, 100, 3), draw_budget(1000, 100, 3)
    assert np.array_equal(a.labelled, b.labelled) and len(set(a.labelled)) == 100
    assert not np.array_equal(a.labelled, draw_budget(1000, 100, 4).labelled)
    with pytest.raises(MirrorcError, match="--budget: 1001 is larger than the training split"):
        draw_budget(1000, 1001, 0)


def test_attacker_view_has_no_cpm_and_matches_mirrornet(tmp_path):
    """The backbone cut out of mirrornet.onnx computes exactly the mirrornet's backbone_logits and
    holds no CPM weight; replace_cpm starts from a CPM with no trained value in it."""
    from mirrorc.attack import thief as atk

    model = lenet_mirrornet(2, seed=5)
    onnx.save(model, str(tmp_path / "mirrornet.onnx"))
    view = atk.load_view(tmp_path)
    assert view.normal_source.startswith("mirrornet.onnx")
    assert not any(t.name.startswith("cpm/") for t in view.normal.graph.initializer)
    assert {o.name for o in view.normal.graph.output} == {"backbone_logits", "mirrorc_tap1", "mirrorc_tap2"}
    x = np.random.default_rng(0).normal(size=(8, 1, 28, 28)).astype(np.float32)
    diff = np.abs(atk.run_onnx(view.normal, "backbone_logits", x) - atk.run_onnx(model, "backbone_logits", x)).max()
    print(f"largest backbone_logits difference, extracted vs mirrornet: {diff:.3g}")
    assert diff == 0.0

    trained = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    replace = next(a for a in atk.attacks_for(view, seed=0) if a.name == "replace_cpm")
    for init in replace.start.graph.initializer:
        value = numpy_helper.to_array(init)
        if init.name.startswith("cpm/") and np.abs(value).sum() > 0:  # biases start at zero
            assert not np.allclose(value, trained[init.name]), init.name
        elif not init.name.startswith("cpm/"):
            assert np.array_equal(value, trained[init.name]), init.name
    assert replace.trainable("cpm/fc1.weight") and not replace.trainable("conv1.weight")


# --------------------------------------------------------------------------- bad input


def test_build_without_trained_model_is_one_line_exit_2(tmp_path):
    run = _cli("attack", tmp_path, "--data", "mnist")
    assert run.exit_code == 2, run.output
    assert "no trained model" in run.output and str(tmp_path) in run.output
    assert "Traceback" not in run.output and len(run.output.strip().splitlines()) == 1


@pytest.mark.slow
@needs_mnist
def test_budget_larger_than_training_split_is_one_line_exit_2(plain_build):
    run = _cli("attack", plain_build, "--data", "mnist", "--budget", "600,60001")
    assert run.exit_code == 2, run.output
    assert "--budget: 60001 is larger than the training split (60000 images)" in run.output
    assert "Traceback" not in run.output and len(run.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------- real attacks


@pytest.mark.slow
@needs_mnist
def test_attacks_train_for_real_on_plain_loss_build(plain_build, tmp_path):
    """Fails if an attack silently trains nothing: fine-tune-all (and a fresh CPM) must beat the
    stolen backbone as it is, on a plain-loss build whose backbone alone is weak."""
    saved = tmp_path / "attack.json"
    run = _cli(
        "attack",
        plain_build,
        "--data",
        "mnist",
        "--budget",
        "500",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--min-steps",
        "120",
        "--lr-grid",
        "1e-3",
        "--save",
        saved,
        "--json",
    )
    assert run.exit_code == 0, run.output
    report = json.loads(run.output[run.output.index("{") :])
    assert json.loads(saved.read_text()) == report
    acc = {r["attack"]: r["accuracy"] for r in report["results"]}
    print(
        "MirrorNet",
        report["mirrornet_accuracy"],
        "backbone",
        report["backbone_accuracy"],
        acc,
        "head start",
        report["head_start"],
    )
    assert acc["as_is"] == pytest.approx(report["backbone_accuracy"])
    assert sum(report["as_is_histogram"]) == 10000
    assert acc["finetune_all"] > acc["as_is"] + 5.0
    assert acc["replace_cpm"] > acc["as_is"] + 2.0
    assert acc["scratch"] > 50.0 and acc["scratch_oracle"] > 50.0  # from-scratch runs learn too
    oracle = [r for r in report["results"] if r["attack"] == "distill"][0]
    assert oracle["extra"]["oracle_agreement_with_truth"] > 50.0
    assert report["oracle"] and set(report["head_start"]) == {"500"}


@pytest.mark.slow
@needs_mnist
def test_clone_trained_on_true_cpm_differences_learns_the_cpm(plain_build, mnist):
    """extract.train_clone on exact cpm_j - cpm_0 (what the TA leaks to `extract.recover`, here from
    onnxruntime) must bring a fresh CPM much closer to the real one than its random start."""
    from mirrorc.attack import extract, thief

    view = thief.load_view(plain_build)
    x = mnist.x_train[:400]
    cpm = thief.run_onnx(view.mirrornet, "mirrornet_logits", x) - thief.run_onnx(view.mirrornet, "backbone_logits", x)
    clone = extract.train_clone(view, x, cpm - cpm[:, :1], seed=0, steps=300)
    start = thief.reinitialize(view.mirrornet, thief.is_cpm, seed=4000)  # train_clone's own start
    x_test = mnist.x_test[:2000]
    want = thief.run_onnx(view.mirrornet, "label", x_test)
    agree = {
        name: float((thief.run_onnx(model, "label", x_test) == want).mean() * 100)
        for name, model in (("clone", clone), ("start", start))
    }
    print("agreement with the protected model's labels (%):", agree)
    assert agree["clone"] > agree["start"] + 30.0 and agree["clone"] > 60.0  # measured 76.9 vs 21.8
