"""Shared test setup. The example models are generated, never committed: make them once per run
(examples/models/ is git-ignored) so tests can name examples/models/<name>.onnx on a fresh clone."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def example_models():
    from examples.make_models import MODELS, write_all

    models = ROOT / "examples" / "models"
    if not all((models / f"{name}.onnx").exists() for name in MODELS):
        write_all(models)
    os.chdir(ROOT)  # tests name example files relative to the repository root
    return models


@pytest.fixture
def tiny_npz(tmp_path):
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
