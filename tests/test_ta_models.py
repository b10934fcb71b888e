"""Real builds (pipeline -> split -> lower -> TA) of LeNet-5 and VGG-7 with random weights: split
execution through the TA in the simulator gives mirrornet.onnx's labels on every input, and the TA's
logits (test-only debug build) match mirrornet_logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers import EXAMPLE_MODELS
from mirrorc.backend import ta
from mirrorc.backend.secure_build import build_secure, write_build
from mirrorc.pipeline import build_mirrornet
from mirrorc.tee import teec
from mirrorc.tee.runtime import ProtectedModel
from passes import contract

MODELS = {"lenet5": ((1, 28, 28), 200), "vgg7": ((3, 32, 32), 60)}


def make_build(model: str, build: Path, channels: int = 2, defences: dict | None = None) -> onnx.ModelProto:
    mirrornet, _ = build_mirrornet(EXAMPLE_MODELS / f"{model}.onnx", channels=channels)
    write_build(mirrornet, build, f"{model}.onnx", defences=defences)
    return mirrornet


# the MODELS; VGG-7 builds and runs for seconds per test, so only LeNet-5 is in the quick tier
@pytest.fixture(scope="module", params=["lenet5", pytest.param("vgg7", marks=pytest.mark.slow)])
def built(request, tmp_path_factory):
    build = tmp_path_factory.mktemp(request.param)
    make_build(request.param, build)
    return request.param, build


def reference(build: Path, x: np.ndarray):
    sess = ort.InferenceSession(str(build / "mirrornet.onnx"), providers=["CPUExecutionProvider"])
    return sess.run([contract.LABEL, contract.MIRRORNET_LOGITS], {sess.get_inputs()[0].name: x})


def test_split_execution_labels_equal_mirrornet(built):
    name, build = built
    shape, n = MODELS[name]
    x = np.random.default_rng(0).normal(size=(n, *shape)).astype(np.float32)
    want, _ = reference(build, x)
    for mode in ("stream", "single"):
        with ProtectedModel(build, tee="sim", mode=mode) as model:
            got = model.predict(x)
            one_by_one = np.concatenate([model.predict(x[i : i + 1]) for i in range(20)])  # batch-1 binding
        assert (one_by_one == want[:20]).all()
        agree = float((got == want).mean())
        print(f"{name} {mode}: {100 * agree:.1f}% of {n} labels equal mirrornet.onnx")
        assert agree == 1.0


def test_ta_logits_equal_mirrornet_logits(built):
    name, build = built
    shape, n = MODELS[name]
    x = np.random.default_rng(1).normal(size=(min(n, 50), *shape)).astype(np.float32)
    want_labels, want_logits = reference(build, x)
    with ProtectedModel(build, mode="stream") as model:
        outputs = model.backbone_outputs(x)
        plan = model.plan
    exe = ta.build_simulator(build, debug=True)
    worst = 0.0
    with teec.Context(ta.client_library(), str(exe)) as ctx:
        session = ctx.open_session(plan["uuid"])
        k = plan["logits"]["shape"][0]
        for i in range(len(x)):
            for tap, out in zip(plan["taps"], outputs[:-1]):
                session.invoke(tap["command"], teec.Operation(teec.TEEC_MEMREF_TEMP_INPUT).temp(0, out[i].copy()))
            logits = np.zeros(k, np.float32)
            op = teec.Operation(teec.TEEC_MEMREF_TEMP_INPUT, teec.TEEC_VALUE_OUTPUT, teec.TEEC_MEMREF_TEMP_OUTPUT)
            session.invoke(contract.CMD_DEBUG_FINAL, op.temp(0, outputs[-1][i].copy()).temp(2, logits))
            assert op.value_out(1)[0] == want_labels[i]
            worst = max(worst, float(np.abs(logits - want_logits[i]).max()))
    print(f"{name}: TA logits vs mirrornet_logits, max abs difference {worst:.3g}")
    assert worst < 1e-4 * max(1.0, float(np.abs(want_logits).max()))


def test_real_ta_cross_compiles(built, tmp_path):
    from test_ta_cross import CROSS, cross_compile

    if shutil.which(CROSS) is None:
        pytest.skip(f"{CROSS} not installed")
    name, build = built
    sizes = cross_compile(build / "ta", tmp_path)
    plan = json.loads((build / "plan.json").read_text())
    print(
        f"{name} TA (aarch64, -O2): {sizes}; plan: weights {plan['memory']['weights']} B, "
        f"arena {plan['memory']['arena']} B"
    )
    assert sizes[".rodata"] >= plan["memory"]["weights"]  # the weights are constants in the image
    assert sizes[".bss"] >= plan["memory"]["arena"]  # the arena is static
    assert sizes.get(".data", 0) == 0  # nothing writable but the arena, and it starts zeroed


def test_cli_run_on_an_image(built, tmp_path):
    """`mirrorc run --input image.png` applies the preprocessing the build records (report.json)."""
    from click.testing import CliRunner
    from PIL import Image

    from mirrorc.cli import main

    name, build = built
    shape, _ = MODELS[name]
    mean, std = [0.5] * shape[0], [0.25] * shape[0]
    (build / "report.json").write_text(json.dumps({"training": {"preprocessing": {"mean": mean, "std": std}}}))
    pixels = np.random.default_rng(5).integers(0, 256, size=(shape[1], shape[2], shape[0]), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if shape[0] == 1 else pixels).save(tmp_path / "img.png")
    x = (pixels.astype(np.float32) / 255 - 0.5) / 0.25
    with ProtectedModel(build) as model:
        want = int(model.predict(x.transpose(2, 0, 1))[0])
    res = CliRunner().invoke(main, ["run", str(build), "--input", str(tmp_path / "img.png"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["labels"] == [want]
    (build / "report.json").unlink()
    res = CliRunner().invoke(main, ["run", str(build), "--input", str(tmp_path / "img.png")])
    assert res.exit_code == 2 and "records no preprocessing" in res.output


def test_build_secure_fields_and_failures(tmp_path):
    """plan fields agree with what was written; a failing build writes nothing."""
    import hashlib

    from mirrorc.errors import MirrorcError

    mirrornet = make_build("lenet5", tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [t["command"] for t in plan["taps"]] == [contract.tap_command(k) for k in range(len(plan["taps"]))]
    assert plan["single"]["bytes"] == sum(t["bytes"] for t in plan["taps"]) + plan["logits"]["bytes"]
    for rel, digest in plan["hashes"].items():
        if rel != "mirrornet.onnx":
            assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == digest, rel
    assert (
        f"#define TA_DATA_SIZE {plan['memory']['ta_data_size']}"
        in (tmp_path / "ta" / "user_ta_header_defines.h").read_text()
    )

    fresh = tmp_path / "fresh"
    with pytest.raises(MirrorcError, match="TEE memory"):
        build_secure(mirrornet, fresh, tee_memory=1024)
    assert not any((fresh / p).exists() for p in ("ta", "host", "normal.onnx"))
    del mirrornet.metadata_props[:]
    with pytest.raises(MirrorcError, match=contract.META_TAPS):
        build_secure(mirrornet, fresh)
