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
