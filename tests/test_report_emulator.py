"""Performance Emulator: the paper's equations exactly, device profiles as data, and how close the
emulator gets to the paper's own predictions (Table II, Table IV)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mirrorc.errors import MirrorcError
from mirrorc.plan.emulator import load_device, predict
from mirrorc.plan.layers import Layer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from make_models import VGG_PAPER  # noqa: E402


def conv(ic, oc, k, fi, fo):
    return Layer(
        f"conv{ic}x{oc}@{fo}",
        "Conv",
        "conv",
        0,
        k * k * ic * oc * fo * fo,
        ic=ic,
        oc=oc,
        k=(k, k),
        fi=(fi, fi),
        fo=(fo, fo),
    )


def dense(ic, oc):
    return Layer(f"fc{ic}x{oc}", "Gemm", "dense", 0, ic * oc, ic=ic, oc=oc)


def test_equations_by_hand():
    d = load_device("rpi3b-optee")
    # Eq. 2: 2 KiB -> 4.888 * 2 + 345.9 us
    assert d.switch_us(2048) == pytest.approx(4.888 * 2 + 345.9)
    # Eq. 4 with workload K^2*IC*OC*FO^2 = 25*2*3*100, scaled by 1.6 (Sec. V-D, conv only)
    assert d.layer_us(conv(2, 3, 5, 14, 10)) == pytest.approx((0.03938 * 15000 + 504.3) * 1.6)
    # Eq. 5 with workload IC*OC, not scaled
    assert d.layer_us(dense(400, 120)) == pytest.approx(0.02666 * 48000 + 465.6)
    assert d.layer_us(Layer("r", "Relu", "other", 0, 0)) == 0.0
    assert d.tee_memory_bytes == 16 * 1024 * 1024


def test_streaming_vs_single_invoke():
    d = load_device()
    p = predict(d, [conv(1, 1, 3, 8, 8), dense(16, 10)], [1024, 4096, 40])
    compute = (0.03938 * 9 * 64 + 504.3) * 1.6 + 0.02666 * 160 + 465.6
    assert p["compute_us"] == pytest.approx(compute)
    assert p["streaming"]["switches"] == 3 and p["single"]["switches"] == 1
    assert p["streaming"]["bytes"] == p["single"]["bytes"] == 5160
    assert p["streaming"]["total_us"] == pytest.approx(compute + 3 * 345.9 + 4.888 * 5160 / 1024)
    assert p["single"]["total_us"] == pytest.approx(compute + 345.9 + 4.888 * 5160 / 1024)


def test_profile_from_path_and_bad_profiles(tmp_path):
    raw = json.loads(open(load_device().path).read())
    raw["compute_scale"] = {"factor": 1.0, "applies_to": ["conv", "dense"]}
    raw["name"] = "unscaled"
    (tmp_path / "u.json").write_text(json.dumps(raw))
    d = load_device(str(tmp_path / "u.json"))
    assert d.name == "unscaled" and d.layer_us(conv(1, 1, 1, 1, 1)) == pytest.approx(0.03938 + 504.3)
    del raw["dense_us"]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(MirrorcError, match="dense_us.per_workload"):
        load_device(str(tmp_path / "bad.json"))
    with pytest.raises(MirrorcError, match="no such profile"):
        load_device("no-such-board")


def lenet5_cpm(c):
    """The LeNet-5 CPM of the paper's Fig. 3 / Eq. 1 as our mirror builds it: the CPM mirrors
    conv2 narrowed to C channels, then the three dense layers with C_l = C * FO^2 = 25C (FO = 5, the
    pooled output the Flatten sees); hidden widths capped by the backbone's (120, 84) because the
    tap can only select as many features as the backbone has. Taps: pool1 [C,14,14], pool2 [C,5,5],
    fc1 [C_l], fc2 [C_l], then the 10 logits."""
    cl = 25 * c
    w1, w2 = min(cl, 120), min(cl, 84)
    layers = [conv(c, c, 5, 14, 10), dense(25 * c, w1), dense(w1, w2), dense(w2, 10)]
    return layers, [4 * c * 196, 4 * c * 25, 4 * w1, 4 * w2, 40]


def test_table2_lenet5(capsys):
    """Paper Table II (emulator column, LeNet-5 on MNIST): 3.05 / 3.2 / 3.36 / 3.42 ms for C = 1..4.

    The paper gives neither the exact CPM layer sizes, nor which mode (how many switches), nor
    whether 1.6 was applied to LeNet-5. With our reading (above, conv scaled by 1.6) single-invoke
    lands within 15% (-10%) of the paper at C = 1 but grows with C twice as fast as the paper's (the
    workload terms grow ~C^2 while the paper's column grows by 12% from C=1 to 4), so C = 4 is
    ~60% high. Streaming mode adds 4 extra switches of ~0.35 ms each. Not tuned."""
    paper = {1: 3.05, 2: 3.2, 3: 3.36, 4: 3.42}
    d = load_device()
    got = {}
    with capsys.disabled():
        print("\nTable II (LeNet-5): C, paper ms, ours single ms, ours streaming ms, rel. error single")
        for c, ms in paper.items():
            p = predict(d, *lenet5_cpm(c))
            got[c] = p["single"]["total_us"] / 1000
            print(f"  {c}  {ms:5.2f}  {got[c]:6.3f}  {p['streaming']['total_us'] / 1000:6.3f}  {got[c] / ms - 1:+.1%}")
    assert abs(got[1] / paper[1] - 1) < 0.15
    assert all(got[c] < got[c + 1] for c in (1, 2, 3))  # the paper's column increases too
    assert 1.3 < got[4] / paper[4] < 1.9  # the gap we report, so a change in the emulator shows up


def vgg_cpm(cfg, c=4, size=32, classes=10):
    """CPM of a CIFAR VGG (3x3 convs, 2x2 pools, one dense classifier): every conv after the first
    mirrored at C channels, one tap after each conv block (after its pool when there is one)."""
    layers, taps, first = [], [], True
    for v in cfg:
        if v == "M":
            size //= 2
            taps[-1] = 4 * c * size * size
            continue
        if not first:
            layers.append(conv(c, c, 3, size, size))
        first = False
        taps.append(4 * c * size * size)
    layers.append(dense(c * size * size, classes))
    return layers, taps + [4 * classes]


# Paper Table IV, emulator column at C = 4 (ms), beside the examples/make_models.py builder whose
# layers are our reading of each network; VGG-6 is in Table III only (None: no figure to compare).
TABLE4_C4 = {
    "VGG-6": ("vgg6", None),
    "VGG-7": ("vgg7_paper", 6.960),
    "VGG-11": ("vgg11", 8.495),
    "VGG-16": ("vgg16", 22.061),
}
VGG = {name: (VGG_PAPER[builder], ms) for name, (builder, ms) in TABLE4_C4.items()}


def test_table4_vgg_c4(capsys):
    """Paper Table IV, emulator column at C = 4: VGG-7 6.960, VGG-11 8.495, VGG-16 22.061 ms.

    The paper does not list its VGG layers; examples/make_models.py's VGG_PAPER reads them off these
    figures (its docstring gives the arithmetic). With that reading our single-invoke prediction is
    within 3% of the paper for all three (-2.8%, +1.9%, -0.4%); a change in the emulator or in the
    family shows up here. VGG-6 has no Table IV figure: we print what we predict (5.37 ms)."""
    d = load_device()
    err = {}
    with capsys.disabled():
        print("\nTable IV (C=4): model, paper ms, ours single ms, ours streaming ms")
        for name, (cfg, ms) in VGG.items():
            p = predict(d, *vgg_cpm(cfg))
            ours = p["single"]["total_us"] / 1000
            if ms is not None:
                err[name] = ours / ms - 1
            paper = f"{ms:7.3f}" if ms is not None else "      -"
            print(
                f"  {name:7s} {paper}  {ours:7.3f}  {p['streaming']['total_us'] / 1000:7.3f}  "
                + (f"{err[name]:+.1%}" if ms is not None else "(not in Table IV)")
            )
    assert set(err) == {"VGG-7", "VGG-11", "VGG-16"}
    assert all(abs(e) < 0.03 for e in err.values()), err
    assert predict(d, *vgg_cpm(VGG["VGG-6"][0]))["single"]["total_us"] == pytest.approx(5372, abs=1)
