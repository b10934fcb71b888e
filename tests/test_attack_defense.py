"""mirrorc.attack.defense: MirrorNet training against fresh-CPM probes (a candidate --protect strategy)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from helpers import initializers
from test_attack_lenet import lenet_mirrornet


@pytest.mark.slow
def test_probe_training_trains_backbone_and_cpm_and_keeps_the_contract():
    from mirrorc.attack.defense import ProbeConfig, train_against_probes

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    start = lenet_mirrornet(2, seed=1)
    trained = train_against_probes(start, x, y, ProbeConfig(epochs=1, batch_size=64, probe_steps=1, probe_weight=0.5))
    before, after = initializers(start), initializers(trained)
    moved = {
        name for name in before if before[name].dtype == np.float32 and not np.array_equal(before[name], after[name])
    }
    assert "conv1.weight" in moved and "cpm/conv2.weight" in moved and "fc3.weight" in moved
    assert np.array_equal(before["mirrorc/select1/indices"], after["mirrorc/select1/indices"])
    assert [o.name for o in trained.graph.output] == ["label", "backbone_logits", "mirrornet_logits"]
    assert {p.key: p.value for p in trained.metadata_props} == {p.key: p.value for p in start.metadata_props}
    onnx.checker.check_model(trained, full_check=True)


def test_probe_training_refuses_a_plain_classifier():
    from mirrorc.attack.defense import ProbeConfig, train_against_probes
    from mirrorc.errors import MirrorcError

    plain = lenet_mirrornet(2)
    del plain.metadata_props[:]
    with pytest.raises(MirrorcError, match="not a MirrorNet"):
        train_against_probes(plain, np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64), ProbeConfig(epochs=1))
