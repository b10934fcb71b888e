"""Freezing means frozen weights and BatchNorm in inference mode: a `random-backbone` build of a network
with BatchNorm (VGG-7) ships exactly its random draw, running statistics included (issue 11)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

pytest.importorskip("torch")

from mirrorc.pipeline import build_mirrornet  # noqa: E402
from mirrorc.train.loop import TrainConfig  # noqa: E402
from passes.mirror import is_cpm  # noqa: E402

VGG7 = "examples/models/vgg7.onnx"
DATA_DIR = Path(os.environ.get("MIRRORC_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
needs_cifar10 = pytest.mark.skipif(
    not (DATA_DIR / "cifar10-jpg.tar.gz").is_file(), reason=f"CIFAR-10 not found in {DATA_DIR}"
)


def float_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


def bn_statistics(model: onnx.ModelProto) -> list[str]:
    return [name for n in model.graph.node if n.op_type == "BatchNormalization" for name in n.input[3:5]]


@needs_cifar10
def test_random_backbone_vgg7_ships_its_random_draw_bit_for_bit(tmp_path):
    from mirrorc.compile import compile_model

    out, seed, channels = tmp_path / "build", 4, 16
    compile_model(
        VGG7,
        out,
        data="cifar10",
        data_dir=str(DATA_DIR),
        channels=channels,
        protect="random-backbone",
        seed=seed,
        config=TrainConfig(epochs=1, batch_size=64, lr=3e-3, seed=seed),
        limit_train=320,
        baseline=False,
    )
    # the draw `mirrorc compile` starts from (mirrorc/compile.py: build_mirrornet with init="random")
    start = float_initializers(build_mirrornet(VGG7, channels=channels, seed=seed, init="random")[0])
    backbone = {k: v for k, v in start.items() if not is_cpm(k)}
    stats = bn_statistics(onnx.load(str(out / "normal.onnx")))
    assert len(stats) == 12 and set(stats) <= backbone.keys()  # six BatchNorms, running mean and var each

    for shipped in ("normal.onnx", "mirrornet.onnx"):
        trained = float_initializers(onnx.load(str(out / shipped)))
        compared = [k for k in backbone if k in trained]
        moved = [k for k in compared if trained[k].tobytes() != backbone[k].tobytes()]
        assert moved == [], f"{shipped}: backbone initializers differ from the random draw: {moved}"
        assert set(stats) <= set(compared) and len(compared) >= 20
    # the check above could fail: the CPM trained, and its own BatchNorms (trainable) updated their statistics
    mirrornet = onnx.load(str(out / "mirrornet.onnx"))
    trained = float_initializers(mirrornet)
    cpm_stats = [k for k in bn_statistics(mirrornet) if is_cpm(k)]
    assert cpm_stats and all(trained[k].tobytes() != start[k].tobytes() for k in cpm_stats)


def test_a_frozen_batchnorm_runs_in_inference_mode_in_train_mode():
    """OnnxModule: a BatchNormalization whose scale and bias are frozen normalises by its running
    statistics and leaves them untouched in train() mode; a trainable one uses and updates batch statistics."""
    import torch

    from mirrorc.train.interpreter import OnnxModule

    model = onnx.load(VGG7)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32) * 3 + 1)
    frozen = OnnxModule(model, outputs=["logits"], trainable=lambda name: name.startswith("fc"))
    reference = OnnxModule(model, outputs=["logits"], trainable=lambda name: name.startswith("fc"))
    frozen.train()
    reference.eval()
    with torch.no_grad():
        assert torch.equal(frozen(x)["logits"], reference(x)["logits"])
    start = float_initializers(model)
    kept = float_initializers(frozen.write_back())
    assert all(kept[k].tobytes() == v.tobytes() for k, v in start.items())

    joint = OnnxModule(model, outputs=["logits"])
    joint.train()
    with torch.no_grad():
        assert not torch.allclose(joint(x)["logits"], reference(x)["logits"])
    updated = float_initializers(joint.write_back())
    assert all(updated[k].tobytes() != start[k].tobytes() for k in bn_statistics(model))
