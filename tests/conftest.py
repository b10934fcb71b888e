"""Shared test setup. The example models are generated, never committed: make them once per run
(examples/models/ is git-ignored) so tests can name examples/models/<name>.onnx on a fresh clone.
Helpers the tests share are in helpers.py."""

import os
import sys
from pathlib import Path

import pytest

from helpers import EXAMPLE_MODELS, ROOT

sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def example_models() -> dict[str, Path]:
    """{name: path} of examples/make_models.py's models, written once per run (again when the script
    is newer than a file, so an edit to a model never meets a stale copy)."""
    from examples import make_models

    paths = {name: EXAMPLE_MODELS / f"{name}.onnx" for name in make_models.MODELS}
    script = Path(make_models.__file__).stat().st_mtime
    if not all(p.exists() and p.stat().st_mtime >= script for p in paths.values()):
        make_models.write_all(EXAMPLE_MODELS)
    os.chdir(ROOT)  # tests name example files relative to the repository root
    return paths


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A small learnable MNIST-shaped .npz (a bright pixel per class) for compile runs in unit tests."""
    import numpy as np

    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(120) % 10, np.arange(40) % 10
    x_train = rng.integers(0, 60, (120, 28, 28)).astype(np.uint8)
    x_test = rng.integers(0, 60, (40, 28, 28)).astype(np.uint8)
    x_train[np.arange(120), y_train * 2, y_train * 2] = 255
    x_test[np.arange(40), y_test * 2, y_test * 2] = 255
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
