"""A damaged build directory through the command line: `mirrorc run` and `mirrorc evaluate` on a
build whose normal.onnx or mirrornet.onnx is truncated, not ONNX, empty, a directory or a link to
/dev/zero give exit 2 and one line naming the file, never a traceback or a hang; a simulator build
that fails leaves no empty ta/sim/ behind."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mirrorc.backend import ta
from mirrorc.cli import main
from mirrorc.errors import MirrorcError
from passes import contract
from test_ta_support import FIXTURE_CLASSES, write_fixture_deployment


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_onnx(path: Path) -> None:
    path.write_bytes(b"this is not an ONNX model\n" * 40)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "not ONNX": _not_onnx,
    "empty": _empty,
    "a directory": _directory,
    "a link to /dev/zero": _dev_zero,
}


def _write_mirrornet(build: Path) -> None:
    """A mirrornet.onnx with the contract's outputs over the fixture's input (x @ W as the logits)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(5, FIXTURE_CLASSES)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], [contract.BACKBONE_LOGITS], name="fc"),
        helper.make_node("Identity", [contract.BACKBONE_LOGITS], [contract.MIRRORNET_LOGITS], name="cpm/final_add"),
        helper.make_node(
            "ArgMax", [contract.MIRRORNET_LOGITS], [contract.LABEL], name="cpm/argmax", axis=1, keepdims=0
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "fixture_mirrornet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [
            helper.make_tensor_value_info(contract.LABEL, TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info(contract.BACKBONE_LOGITS, TensorProto.FLOAT, ["N", FIXTURE_CLASSES]),
            helper.make_tensor_value_info(contract.MIRRORNET_LOGITS, TensorProto.FLOAT, ["N", FIXTURE_CLASSES]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {contract.META_NUM_CLASSES: str(FIXTURE_CLASSES)})
    onnx.save(model, build / "mirrornet.onnx")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("builddir") / "build"
    build.mkdir()
    write_fixture_deployment(build)
    _write_mirrornet(build)
    return build


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "vectors.npz"
    np.savez(
        path,
        x_train=rng.random((40, 1, 5)).astype(np.float32),  # 1x5 images: the loader wants images
        y_train=np.arange(40) % FIXTURE_CLASSES,
        x_test=rng.random((8, 1, 5)).astype(np.float32),
        y_test=np.arange(8) % FIXTURE_CLASSES,
    )
    return path


def _copy(pristine: Path, tmp_path: Path) -> Path:
    build = tmp_path / "build"
    shutil.copytree(pristine, build, symlinks=True)
    return build


def _one_line_error(res, file: Path, case: str) -> str:  # res: click's Result
    out = res.output.strip()
    assert res.exit_code == 2, f"{case}: exit {res.exit_code}, {res.exception!r}\n{out}"
    assert "Traceback" not in out and len(out.splitlines()) == 1, f"{case}: {out}"
    assert out.startswith("mirrorc: error:") and str(file) in out, f"{case}: {out}"
    return out


def test_intact_build_evaluates(pristine, data, tmp_path):
    """The control: the same commands on the undamaged build succeed."""
    build = _copy(pristine, tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(build), "--input", str(tmp_path / "x.npy")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["evaluate", str(build), "--data", str(data), "--no-split-check"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_normal_onnx(pristine, data, tmp_path, case):
    build = _copy(pristine, tmp_path)
    normal = build / "normal.onnx"
    DAMAGE[case](normal)
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(build), "--input", str(tmp_path / "x.npy")])
    print(f"run, normal.onnx {case}: {_one_line_error(res, normal, case)}")
    res = runner.invoke(main, ["evaluate", str(build), "--data", str(data)])  # its split check runs normal.onnx
    print(f"evaluate, normal.onnx {case}: {_one_line_error(res, normal, case)}")


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_mirrornet_onnx(pristine, data, tmp_path, case):
    build = _copy(pristine, tmp_path)
    mirrornet = build / "mirrornet.onnx"
    DAMAGE[case](mirrornet)
    res = CliRunner().invoke(main, ["evaluate", str(build), "--data", str(data)])
    out = res.output.strip()
    # a path that is not a regular file is "no mirrornet.onnx" for the build directory
    where = mirrornet if mirrornet.is_file() else build
    print(f"evaluate, mirrornet.onnx {case}: {_one_line_error(res, where, case)}")
    assert "mirrornet.onnx" in out


def test_failed_simulator_build_leaves_no_sim_dir(pristine, tmp_path):
    build = _copy(pristine, tmp_path)
    shutil.rmtree(build / "ta" / "sim", ignore_errors=True)
    (build / "ta" / "mirrorc_ta.c").write_text("this is not C\n")
    with pytest.raises(MirrorcError, match="building the TA simulator") as e:
        ta.simulator(build)
    assert "\n" not in str(e.value)
    assert not (build / "ta" / "sim").exists()
    assert os.listdir(build / "ta")  # the sources are still there
