"""The project's habits as tests: ruff (lint and format) and mypy, configured in pyproject.toml, pass on
the tree. Each tool is its own test, and a failure shows the tool's own report."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from helpers import ROOT


def _run(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:  # pinned in the `test` extra: pip install -e '.[test]'
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"{module} {' '.join(args)} found problems:\n{r.stdout}{r.stderr}", pytrace=False)


def test_ruff_check() -> None:
    _run("ruff", "check", "--no-cache", ".")


def test_ruff_format() -> None:
    _run("ruff", "format", "--check", "--no-cache", ".")


@pytest.mark.slow  # about 20 s from a cold cache
def test_mypy() -> None:
    _run("mypy")  # the files and options are in [tool.mypy]
