"""The Python-side fuzzer (mirrorc.attack.call_fuzz): concurrent random Client API calls on a real
generated TA (LeNet-5, the compile's default session cap) in the simulator, a correct call after every
burst. No crash, no wrong label. The longer run is benchmarks/ta_call_fuzz.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import EXAMPLE_MODELS
from mirrorc.attack import call_fuzz
from mirrorc.backend import guard
from mirrorc.backend.secure_build import write_build
from mirrorc.pipeline import build_mirrornet
from passes import contract

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lenet_build(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("call_fuzz_lenet5")
    mirrornet, _ = build_mirrornet(EXAMPLE_MODELS / "lenet5.onnx", channels=2)
    k = contract.num_classes(mirrornet)
    write_build(mirrornet, build, "lenet5.onnx", defences={**guard.no_guard(k), **guard.access()})
    return build


def _inputs(n: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 1, 28, 28)).astype(np.float32)


def test_concurrent_random_calls_find_nothing(lenet_build):
    counts = call_fuzz.fuzz_calls(lenet_build, _inputs(6), threads=4, seconds=20, max_calls=1000)
    s = counts.summary()
    print(f"call fuzzer: {json.dumps(s)}")
    assert s["errors"] == [], s["errors"]
    assert s["crashes"] == 0 and s["wrong_labels"] == 0
    assert s["calls"] > 0 and s["checks"] > 0 and s["answered"] > 0
    # the garbage reached the TA's checks and the per-client cap (4 threads' churn against a cap of 2)
    assert s["refusals"].get("TEEC_ERROR_BAD_PARAMETERS", 0) > 0 and s["refusals"].get("TEEC_ERROR_BAD_STATE", 0) > 0
    assert s["refusals"].get("session cap reached", 0) > 0


def test_the_fuzzer_sees_a_wrong_label(lenet_build, monkeypatch):
    """The check would catch a TA that answers another label: here the reference is off by one."""
    real = call_fuzz.reference

    def shifted(build: Path, x: np.ndarray) -> tuple[list[list[np.ndarray]], np.ndarray]:
        inputs, want = real(build, x)
        return inputs, (want + 1) % 10

    monkeypatch.setattr(call_fuzz, "reference", shifted)
    counts = call_fuzz.fuzz_calls(lenet_build, _inputs(3), threads=1, seconds=20, max_calls=call_fuzz.BURST)
    assert counts.checks > 0 and counts.wrong_labels == counts.checks
