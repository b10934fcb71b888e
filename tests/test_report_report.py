"""The partition report on a hand-built LeNet-5 mirrornet (tests/test_report_fixture.py), checked
against numbers worked out by hand from the paper's equations; and `mirrorc partition`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from mirrorc.cli import main
from mirrorc.errors import MirrorcError
from mirrorc.plan.emulator import load_device
from mirrorc.plan.report import build_report, format_report, parse_size
from test_report_fixture import lenet_mirrornet

SW, B = 345.9, 4.888 / 1024  # Eq. 2: base and per-byte slope (us)


def conv_us(w):
    return (0.03938 * w + 504.3) * 1.6


def dense_us(w):
    return 0.02666 * w + 465.6


def test_stages_by_hand():
    r = build_report(lenet_mirrornet(2))
    st = {s["stage"]: s for s in r["stages"]}
    assert sorted(st) == [1, 2, 3, 4, 5]
    assert st[1]["cpm"] == [] and st[1]["tap"] is None and st[1]["secure_us"] == 0
    assert [x["notation"] for x in st[2]["backbone"]] == ["conv[6, 16, 5, 14, 10]"]
    assert [x["notation"] for x in st[2]["cpm"]] == ["conv[2, 2, 5, 14, 10]"]
    # CPM stage 2 reads tap 1: 2 channels of 14x14 float32
    assert st[2]["tap"] == {"index": 1, "tensor": "pool1_out", "shape": [2, 14, 14], "bytes": 1568}
    assert st[2]["cpm_macs"] == 25 * 2 * 2 * 100 and st[2]["cpm_params"] == 2 * 2 * 25 + 2
    assert st[2]["secure_us"] == pytest.approx(SW + B * 1568 + conv_us(10000))
    assert [x["notation"] for x in st[3]["cpm"]] == ["dense[50, 50]"]  # C_l = C * 5^2
    assert st[3]["secure_us"] == pytest.approx(SW + B * 200 + dense_us(2500))
    assert st[5]["secure_us"] == pytest.approx(SW + B * 200 + dense_us(500))
    assert r["final"]["bytes"] == 40 and r["final"]["secure_us"] == pytest.approx(SW + B * 40)
    assert r["final"]["nodes"] == ["cpm/final_add", "cpm/argmax"]


def test_totals_by_hand():
    r = build_report(lenet_mirrornet(2))
    t = r["totals"]
    assert (t["backbone_macs"], t["backbone_params"]) == (416520, 61706)
    assert t["cpm_macs"] == 10000 + 2500 + 2500 + 500
    assert t["cpm_params"] == 102 + 2550 + 2550 + 510
    assert t["cpm_backbone_mac_ratio"] == pytest.approx(15500 / 416520)
    assert r["transfer"] == {"streaming": {"switches": 5, "bytes": 2208}, "single": {"switches": 1, "bytes": 2208}}
    compute = conv_us(10000) + 2 * dense_us(2500) + dense_us(500)
    lat = r["latency_us"]
    assert lat["compute"] == pytest.approx(compute)
    assert lat["single"] == pytest.approx(compute + SW + B * 2208)
    assert lat["streaming"] == pytest.approx(compute + 5 * SW + B * 2208)
    # the stage rows and the final command add up to the streaming prediction
    assert sum(s["secure_us"] for s in r["stages"]) + r["final"]["secure_us"] == pytest.approx(lat["streaming"])


def test_memory_by_hand():
    m = build_report(lenet_mirrornet(2))["memory"]
    assert m["weights"] == 4 * 5712
    # arena peak: the CPM conv output [2,10,10] (its ReLU runs in place, the C lowering's rule) plus
    # the stride-1 conv's scratch, 2 padded 14x14 planes + a 5-float tail each + 10 rows of 14
    # (see mc_conv2d_s1): 200 + 542 = 742 floats, rounded up to the 16-byte alignment
    assert m["arena"] == 4 * 744
    # carried between commands, one at a time: pool2 out [2,5,5], fc1/fc2 outs [50], cpm_logits [10]
    assert m["carry"] == 4 * 52  # 50 floats rounded up to the 16-byte alignment
    assert m["input_buffer"] == 2208 and m["ta_overhead"] == load_device().ta_overhead_bytes
    assert m["total"] == m["weights"] + m["arena"] + m["carry"] + m["input_buffer"] + m["ta_overhead"]
    assert m["fits"] and m["over_bytes"] == 0 and m["limit"] == 16 << 20


def test_channels_grow_the_cpm():
    r1, r4 = build_report(lenet_mirrornet(1)), build_report(lenet_mirrornet(4))
    assert r1["channels"] == 1 and r4["channels"] == 4
    assert r4["totals"]["cpm_macs"] > r1["totals"]["cpm_macs"]
    assert r4["latency_us"]["single"] > r1["latency_us"]["single"]
    assert r4["totals"]["backbone_macs"] == r1["totals"]["backbone_macs"]


def test_tee_memory_limit_warns():
    r = build_report(lenet_mirrornet(2), tee_memory="100K")
    m = r["memory"]
    assert m["limit"] == 102400 and not m["fits"] and m["over_bytes"] == m["total"] - 102400 > 0
    assert len(r["warnings"]) == 1 and str(m["over_bytes"]) in r["warnings"][0]
    assert "warning:" in format_report(r)


def test_parse_size():
    assert parse_size("16M") == 16 << 20 and parse_size("512k") == 512 << 10 and parse_size("1000") == 1000
    assert parse_size("1.5MiB") == 3 << 19
    with pytest.raises(MirrorcError, match="--tee-memory"):
        parse_size("lots")


def test_text_report_is_aligned():
    text = format_report(build_report(lenet_mirrornet(2)))
    lines = text.splitlines()
    header = next(i for i, x in enumerate(lines) if x.startswith("stage"))
    assert lines[header + 2].startswith("2  ") and "conv[2, 2, 5, 14, 10]" in lines[header + 2]
    col = lines[header].index("CPM layer")
    assert all(lines[header + k][col:].startswith(("conv", "dense", "-")) for k in range(1, 6))
    assert "5 world switches, 2208 bytes" in text and "1 world switch, 2208 bytes" in text


def _with_batchnorm(after_relu: bool) -> onnx.ModelProto:
    """The C=2 fixture with a BatchNorm in CPM stage 2: right after its bias-free Conv (foldable),
    or after the ReLU (not foldable)."""
    m = lenet_mirrornet(2)
    g = m.graph
    by = {n.name: n for n in g.node}
    del by["cpm/conv2"].input[2]
    bn = helper.make_node("BatchNormalization", ["", *[f"cpm/bn.{k}" for k in "sbmv"]], ["cpm/bn_out"], name="cpm/bn")
    bn.metadata_props.add(key="mirrorc.world", value="secure")
    bn.metadata_props.add(key="mirrorc.stage", value="2")
    g.initializer.extend(
        numpy_helper.from_array(np.full(2, v, np.float32), f"cpm/bn.{k}") for k, v in zip("sbmv", (0.5, 0.1, 0.2, 2.0))
    )
    order = [n.name for n in g.node]
    if after_relu:  # conv -> relu -> bn -> pool
        by["cpm/relu2"].output[0] = "cpm/relu2_pre"
        bn.input[0] = "cpm/relu2_pre"
        by["cpm/pool2"].input[0] = "cpm/bn_out"
        order.insert(order.index("cpm/relu2") + 1, "cpm/bn")
    else:  # conv -> bn -> relu -> pool
        bn.input[0] = "cpm/conv2_out"
        by["cpm/relu2"].input[0] = "cpm/bn_out"
        order.insert(order.index("cpm/conv2") + 1, "cpm/bn")
    by["cpm/bn"] = bn
    nodes = [by[name] for name in order]
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("after_relu", [False, True])
def test_batchnorm_weights_as_the_c_lowering_stores_them(after_relu):
    """Foldable: the TEE holds the conv weight plus one folded bias per channel, not the four
    BatchNorm vectors; after a ReLU: a per-channel scale and shift. Checked by hand and against the
    generated C's own sizes (split -> fold_bn -> lower_c)."""
    from passes.fold_bn import fold_bn
    from passes.lower_c import lower
    from passes.split import split

    m = _with_batchnorm(after_relu)
    base = build_report(lenet_mirrornet(2))["memory"]["weights"]
    mem = build_report(m)["memory"]
    assert mem["weights"] == base - 4 * 2 + (4 * 2 * 2 if after_relu else 4 * 2)  # conv bias dropped
    sizes = lower(fold_bn(split(m)[1]), "bn").sizes
    assert (mem["weights"], mem["arena"], mem["carry"]) == (sizes["weights"], sizes["arena"], sizes["state"])


def test_not_a_mirrornet():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [x],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
    )
    with pytest.raises(MirrorcError, match="mirrorc.channels"):
        build_report(m)
    bad = lenet_mirrornet(1)
    del bad.graph.node[0].metadata_props[:]
    with pytest.raises(MirrorcError, match="node 'conv1'.*mirrorc.world"):
        build_report(bad)


def test_cli_report_on_a_mirrornet(tmp_path):
    path = tmp_path / "mirrornet.onnx"
    onnx.save(lenet_mirrornet(3), path)
    run = CliRunner().invoke(main, ["partition", str(path), "--report", "--json"])
    assert run.exit_code == 0, run.output
    r = json.loads(run.output)
    assert r["channels"] == 3 and r["memory"]["fits"] and r["device"]["name"] == "rpi3b-optee"
    run = CliRunner().invoke(main, ["partition", str(path), "--tee-memory", "64K"])
    assert run.exit_code == 0 and "warning: secure-world plan needs" in run.output
    run = CliRunner().invoke(main, ["partition", str(path), "--json", "--tee-memory", "64K"])
    assert json.loads(run.stdout)["memory"]["over_bytes"] > 0 and "warning" in run.stderr


def test_cli_bad_input(tmp_path):
    path = tmp_path / "mirrornet.onnx"
    onnx.save(lenet_mirrornet(1), path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for args, msg in [
        ([str(path), "--device", "nope"], "device 'nope'"),
        ([str(path), "--tee-memory", "x"], "--tee-memory"),
        ([str(path), "-C", "2"], "already a mirrornet"),
        ([str(tmp_path / "junk.onnx")], "junk.onnx"),
        ([str(path), "--report", "--strategies"], "choose one"),
    ]:
        run = CliRunner().invoke(main, ["partition", *args])
        assert run.exit_code == 2 and msg in run.stderr and "Traceback" not in run.output, (args, run.output)
