"""Dataset loaders: formats, preprocessing to the model's input, and one-line errors for bad input."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mirrorc.errors import MirrorcError
from mirrorc.train.data import load_dataset, read_idx


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_dir(root: Path, n_train=40, n_test=20, size=28, gz=True, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in files.items():
        data = idx_bytes(np.asarray(arr))
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return root


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_items(seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", 6), ("test", 4)):
        for i in range(n):
            cls = ("cat", "dog")[i % 2]
            yield f"{split}/{cls}/{i:04d}.png", png_bytes(rng.integers(0, 256, (32, 32, 3)))


def test_idx_gz_and_plain_agree_and_preprocess(tmp_path):
    a = load_dataset(str(write_idx_dir(tmp_path / "gz")), data_dir=None, input_shape=(1, 1, 28, 28))
    b = load_dataset(str(write_idx_dir(tmp_path / "plain", gz=False)), data_dir=None, input_shape=(1, 1, 28, 28))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape == (40, 1, 28, 28) and a.x_train.dtype == np.float32
    assert a.y_train.dtype == np.int64 and a.num_classes == 10
    # normalised with the training set's statistics
    assert abs(float(a.x_train.mean())) < 1e-4 and abs(float(a.x_train.std()) - 1) < 1e-3


def test_grey_28_to_rgb_32(tmp_path):
    ds = load_dataset(str(write_idx_dir(tmp_path / "d")), data_dir=None, input_shape=(1, 3, 32, 32))
    assert ds.x_train.shape == (40, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_train[:, 0], ds.x_train[:, 2])  # replicated grey
    assert np.all(ds.x_train[:, :, :2, :] == ds.x_train[0, 0, 0, 0])  # the zero-padded border
    assert any("zero-padded" in s for s in ds.preprocessing["steps"])
    assert any("grey -> RGB" in s for s in ds.preprocessing["steps"])


def test_limit_train_and_stats_from_full_set(tmp_path):
    root = write_idx_dir(tmp_path / "d")
    full = load_dataset(str(root), data_dir=None, input_shape=(1, 1, 28, 28))
    part = load_dataset(str(root), data_dir=None, input_shape=(1, 1, 28, 28), limit_train=10)
    assert len(part.y_train) == 10
    assert part.preprocessing["mean"] == full.preprocessing["mean"]  # evaluate sees what compile saw
    np.testing.assert_array_equal(part.x_test, full.x_test)


def test_limit_test_keeps_the_first_test_images(tmp_path):
    root = write_idx_dir(tmp_path / "d")
    full = load_dataset(str(root), data_dir=None, input_shape=(1, 1, 28, 28))
    part = load_dataset(str(root), data_dir=None, input_shape=(1, 1, 28, 28), limit_test=3)
    assert len(part.y_test) == 3 and len(part.y_train) == len(full.y_train)
    np.testing.assert_array_equal(part.x_test, full.x_test[:3])  # fed exactly as without the limit
    np.testing.assert_array_equal(part.y_test, full.y_test[:3])
    with pytest.raises(MirrorcError, match="--limit-test: must be positive"):
        load_dataset(str(root), data_dir=None, input_shape=(1, 1, 28, 28), limit_test=0)


def test_image_tarball_and_folder_agree_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRRORC_CACHE", str(tmp_path / "cache"))
    tar_path = tmp_path / "pets.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for name, data in image_items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    folder = tmp_path / "pets"
    for name, data in image_items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    a = load_dataset(str(tar_path), data_dir=None, input_shape=(1, 3, 32, 32))
    b = load_dataset(str(folder), data_dir=None, input_shape=(1, 3, 32, 32))
    assert a.classes == ["cat", "dog"] and a.x_train.shape == (6, 3, 32, 32) and a.x_test.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(np.sort(a.x_train.ravel()), np.sort(b.x_train.ravel()))
    assert len(list((tmp_path / "cache").glob("dataset-*.npz"))) == 2
    again = load_dataset(str(tar_path), data_dir=None, input_shape=(1, 3, 32, 32))  # from the cache
    np.testing.assert_array_equal(again.x_train, a.x_train)
    assert not (tmp_path / "train").exists()  # nothing extracted


def test_npz_and_label_range(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=rng.random((8, 28, 28)),
        y_train=np.arange(8) % 3,
        x_test=rng.random((4, 28, 28)),
        y_test=np.array([0, 1, 2, 12]),
    )
    with pytest.raises(MirrorcError, match=r"d\.npz: labels go up to 12 but the model has 10 classes"):
        load_dataset(str(path), data_dir=None, input_shape=(1, 1, 28, 28), num_classes=10)
    np.savez(path, x_train=rng.random((8, 28, 28)), y_train=np.arange(8) % 3)
    with pytest.raises(MirrorcError, match="missing array"):
        load_dataset(str(path), data_dir=None, input_shape=(1, 1, 28, 28))


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b"\x01\x02" + b[2:], "bad magic"),
        (lambda b: b[:-7], "size mismatch"),
        (lambda b: b[:3], "not an IDX file"),
    ],
)
def test_corrupt_idx(tmp_path, damage, message):
    root = write_idx_dir(tmp_path / "d", gz=False)
    target = root / "train-images-idx3-ubyte"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(MirrorcError, match=message) as e:
        load_dataset(str(root), data_dir=None, input_shape=(1, 1, 28, 28))
    assert "train-images-idx3-ubyte" in str(e.value) and "\n" not in str(e.value)


def test_corrupt_gzip(tmp_path):
    root = write_idx_dir(tmp_path / "d")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(MirrorcError, match="t10k-labels-idx1-ubyte.gz: cannot read"):
        read_idx(root / "t10k-labels-idx1-ubyte.gz")


def test_missing_data_dir_and_dataset(tmp_path, monkeypatch):
    monkeypatch.delenv("MIRRORC_DATA", raising=False)
    with pytest.raises(MirrorcError, match="no data directory"):
        load_dataset("mnist", data_dir=None, input_shape=(1, 1, 28, 28))
    with pytest.raises(MirrorcError, match="does not exist"):
        load_dataset("mnist", data_dir=str(tmp_path / "nope"), input_shape=(1, 1, 28, 28))
    with pytest.raises(MirrorcError, match="no mnist here"):
        load_dataset("mnist", data_dir=str(tmp_path), input_shape=(1, 1, 28, 28))
    with pytest.raises(MirrorcError, match="dataset not found"):
        load_dataset(str(tmp_path / "x.npz"), data_dir=None, input_shape=(1, 1, 28, 28))


def test_cli_bad_data_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from mirrorc.cli import main

    monkeypatch.delenv("MIRRORC_DATA", raising=False)
    root = write_idx_dir(tmp_path / "d")
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01junk"))
    out = tmp_path / "build"
    result = CliRunner().invoke(
        main, ["compile", "examples/models/lenet5.onnx", "--data", str(root), "-o", str(out), "--epochs", "1"]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mirrorc: error:") and "train-labels-idx1-ubyte" in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".build*"))
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "nobuild"), "--data", "mnist"])
    assert result.exit_code == 2 and "no mirrornet.onnx" in result.output


def test_run_outputs_feeds_a_fixed_batch_model_in_its_own_batch(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from mirrorc.evaluate import run_outputs

    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "fixed", [x_info], [y_info])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    x = np.arange(15, dtype=np.float32).reshape(5, 3)  # 5 rows: two full batches and one padded
    np.testing.assert_array_equal(run_outputs(path, x, ["y"])["y"], -x)
