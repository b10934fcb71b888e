"""The nine ONNX model-zoo files shipped with the onnx package, plus LeNet-5 and VGG-7: inspect,
mirror, verify; the mirrornet runs in onnxruntime (batch 1); the canonical backbone computes the
source model's logits (1e-5 relative, printed); a zeroed CPM head leaves the backbone's logits
unchanged; the CPM costs under 5% of the backbone's MACs at C=2."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import ort_session, source_logits, zero_cpm_head
from mirrorc.pipeline import build_mirrornet
from mirrorc.plan import layers as L
from mirrorc.plan.inspect import inspect_model
from mirrorc.zoo import ZOO_MODELS, zoo_model_path

EXPECTED_TAPS = {
    "resnet50": 17,
    "inception_v1": 12,
    "squeezenet": 9,
    "vgg19": 18,
    "bvlc_alexnet": 7,
    "zfnet512": 7,
    "lenet5": 4,
    "vgg7": 6,
    "densenet121": 5,
    "inception_v2": 13,
    "shufflenet": 17,
}
QUICK = {"inception_v1", "shufflenet", "squeezenet", "lenet5", "vgg7"}  # under a second each; the rest are slow


@pytest.mark.parametrize(
    "name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in [*ZOO_MODELS, "lenet5", "vgg7"]]
)
def test_zoo_model(name, example_models):
    path = str(example_models[name]) if name in example_models else str(zoo_model_path(name))
    if name in ("resnet50", "lenet5"):  # the CLI's report on one big and one small model
        rep = inspect_model(path)
        assert len(rep["stages"]) == EXPECTED_TAPS[name] + 1
    model, info = build_mirrornet(path, channels=2, init="keep")
    assert info["input"]["shape"][0] == "N"  # the zoo's fixed batch of 1 became symbolic
    if name in EXPECTED_TAPS:
        assert len(info["taps"]) == EXPECTED_TAPS[name]

    all_layers = L.layers(model)
    secure = [n.name for n in model.graph.node if info["node_world"][n.name] == "secure"]
    cpm = L.totals(all_layers, secure).macs
    backbone = L.totals(all_layers, [n.name for n in model.graph.node if n.name not in set(secure)]).macs
    print(
        f"{name}: {len(info['taps'])} taps, CPM {L.fmt_count(cpm)} MACs = {100 * cpm / backbone:.3f}% of the backbone"
    )
    assert 0 < cpm < 0.05 * backbone

    zero_cpm_head(model, info["cpm_head"])
    shape = [1 if isinstance(d, str) else d for d in info["input"]["shape"]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    label, bb, total = ort_session(model, optimize=False).run(None, {info["input"]["name"]: x})
    src = source_logits(path, info["logits_in_source"], x)
    diff, scale = float(np.abs(src - bb).max()), float(np.abs(src).max())
    print(f"{name}: canonical backbone vs source logits: max abs diff {diff:.3g} (max |logit| {scale:.3g})")
    assert diff <= 1e-5 * max(1.0, scale)
    assert np.array_equal(total, bb) and label.tolist() == np.argmax(bb, axis=1).tolist()
