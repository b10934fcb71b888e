"""The project's habits as tests: ruff (lint and format) and mypy, configured in pyproject.toml, pass on
the tree, and every public function in mirrorc/ and passes/ has type hints. Each tool is its own test, and
a failure shows the tool's own report."""

from __future__ import annotations

import ast
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


def _missing_annotations(source: str, filename: str) -> list[str]:
    """`file:line name(what is missing)` for every public function (name not starting with "_"; methods
    and nested functions included) lacking a parameter or return annotation; `self`/`cls` of a method
    need none."""
    found: list[str] = []

    def visit(node: ast.AST, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not child.name.startswith("_"):
                    a = child.args
                    params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
                    positional = [*a.posonlyargs, *a.args]
                    if in_class and positional and positional[0].arg in ("self", "cls"):
                        params = params[1:]
                    missing = [p.arg for p in params if p.annotation is None]
                    missing += ["return"] if child.returns is None else []
                    if missing:
                        found.append(f"{filename}:{child.lineno} {child.name}({', '.join(missing)})")
                visit(child, in_class=False)
            else:  # a class body, or a statement inside one (if/try) or inside a function
                visit(child, in_class=in_class or isinstance(child, ast.ClassDef))

    visit(ast.parse(source, filename), in_class=False)
    return found


def test_public_functions_have_type_hints() -> None:
    missing = [
        entry
        for package in ("mirrorc", "passes")
        for path in sorted((ROOT / package).rglob("*.py"))
        for entry in _missing_annotations(path.read_text(), str(path.relative_to(ROOT)))
    ]
    if missing:
        pytest.fail(f"{len(missing)} public function(s) without full type hints:\n" + "\n".join(missing), pytrace=False)


def test_the_type_hint_check_finds_what_is_missing() -> None:
    source = """
def typed(a: int, *args: str, b: int = 0, **kw: float) -> int: ...
def untyped(a, b: int): ...
def no_return(a: int): ...
def _private(a): ...
class K:
    def method(self, x: int) -> None: ...
    def bare(self, x): ...
    @classmethod
    def make(cls) -> K: ...
    def _helper(self, x): ...
def register(main: object) -> None:
    def cmd(flag) -> None: ...
    def _inner(x): ...
"""
    assert _missing_annotations(source, "m.py") == [
        "m.py:3 untyped(a, return)",
        "m.py:4 no_return(return)",
        "m.py:8 bare(x, return)",
        "m.py:13 cmd(flag)",
    ]
