"""The nine ONNX model-zoo files shipped with the onnx package, plus LeNet-5 and VGG-7: inspect,
mirror, verify; the mirrornet runs in onnxruntime (batch 1); the canonical backbone computes the
source model's logits (1e-5 relative, printed); a zeroed CPM head leaves the backbone's logits
unchanged; the CPM costs under 5% of the backbone's MACs at C=2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from mirrorc.plan import layers as L
from mirrorc.plan.inspect import inspect_model
from mirrorc.pipeline import build_mirrornet
from test_core_passes import _session, _source_logits, _zero_cpm_head

ZOO = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
ZOO_MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
              "squeezenet", "vgg19", "zfnet512"]
EXPECTED_TAPS = {"resnet50": 17, "inception_v1": 12, "squeezenet": 9, "vgg19": 18, "bvlc_alexnet": 7,
                 "zfnet512": 7, "lenet5": 4, "vgg7": 6, "densenet121": 5, "inception_v2": 13,
                 "shufflenet": 17}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import make_models

    return {k: str(v) for k, v in make_models.write_all(tmp_path_factory.mktemp("ex")).items()}


@pytest.mark.parametrize("name", ZOO_MODELS + ["lenet5", "vgg7"])
def test_zoo_model(name, examples):
    path = examples[name] if name in examples else str(ZOO / f"light_{name}.onnx")
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
    print(f"{name}: {len(info['taps'])} taps, CPM {L.fmt_count(cpm)} MACs = {100 * cpm / backbone:.3f}% of the backbone")
    assert 0 < cpm < 0.05 * backbone

    _zero_cpm_head(model, info["cpm_head"])
    shape = [1 if isinstance(d, str) else d for d in info["input"]["shape"]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    label, bb, total = _session(model).run(None, {info["input"]["name"]: x})
    src = _source_logits(path, info["logits_in_source"], x)
    diff, scale = float(np.abs(src - bb).max()), float(np.abs(src).max())
    print(f"{name}: canonical backbone vs source logits: max abs diff {diff:.3g} (max |logit| {scale:.3g})")
    assert diff <= 1e-5 * max(1.0, scale)
    assert np.array_equal(total, bb) and label.tolist() == np.argmax(bb, axis=1).tolist()
