"""Shared pieces of the TA tests (no tests here): a hand-written model that implements the generated
C model interface of docs/ARCHITECTURE.md, so the TA, the shims and the simulator are tested on
their own, and a Python reference of what it computes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from mirrorc.backend import ta
from passes import contract

# Two taps of 3 and 2 floats, 4 classes. Tap 0's sum is carried to the final command; tap 1's sum is
# doubled, so sending the taps in the wrong order changes the answer.
FIXTURE_TAP_FLOATS = [3, 2]
FIXTURE_CLASSES = 4

FIXTURE_HEADER = """\
/* Test fixture with the generated model interface. */
#ifndef MIRRORC_MODEL_H
#define MIRRORC_MODEL_H
#include <stdint.h>
#define MIRRORC_NUM_TAPS        2
#define MIRRORC_NUM_CLASSES     4
#define MIRRORC_TAP_FLOATS      { 3, 2 }
#define MIRRORC_SINGLE_FLOATS   (3 + 2 + 4)
#define MIRRORC_WEIGHT_BYTES    4
#define MIRRORC_ARENA_BYTES     16
#define MIRRORC_STATE_BYTES     8
#define MIRRORC_STACK_BYTES     256
typedef struct { float carry[2]; } mirrorc_state_t;
void    mirrorc_reset(mirrorc_state_t *s);
void    mirrorc_run_tap(mirrorc_state_t *s, unsigned k, const float *tap);
int32_t mirrorc_run_final(mirrorc_state_t *s, const float *backbone_logits);
#ifdef MIRRORC_DEBUG
int32_t mirrorc_debug_run_final(mirrorc_state_t *s, const float *backbone_logits, float *logits);
#endif
#endif
"""

FIXTURE_SOURCE = """\
#include "mirrorc_model.h"
static const float scale[1] = { 2.0f };
static float mirrorc_arena[4];
void mirrorc_reset(mirrorc_state_t *s) { s->carry[0] = 0.0f; s->carry[1] = 0.0f; }
void mirrorc_run_tap(mirrorc_state_t *s, unsigned k, const float *tap)
{
    if (k == 0) s->carry[0] = tap[0] + tap[1] + tap[2];
    else s->carry[1] = scale[0] * (tap[0] + tap[1]);
}
static int32_t run_final(mirrorc_state_t *s, const float *b, float *logits)
{
    int32_t best = 0;
    for (int j = 0; j < 4; j++) mirrorc_arena[j] = b[j];
    mirrorc_arena[0] += s->carry[0];
    mirrorc_arena[1] += s->carry[1];
    for (int j = 1; j < 4; j++) if (mirrorc_arena[j] > mirrorc_arena[best]) best = j;
    if (logits) for (int j = 0; j < 4; j++) logits[j] = mirrorc_arena[j];
    return best;
}
int32_t mirrorc_run_final(mirrorc_state_t *s, const float *b) { return run_final(s, b, 0); }
#ifdef MIRRORC_DEBUG
int32_t mirrorc_debug_run_final(mirrorc_state_t *s, const float *b, float *logits) { return run_final(s, b, logits); }
#endif
"""


@dataclasses.dataclass
class FixtureLowered:
    files: dict
    sizes: dict
    tap_floats: list
    num_classes: int


def fixture_lowered() -> FixtureLowered:
    return FixtureLowered(
        {"model/mirrorc_model.h": FIXTURE_HEADER, "model/mirrorc_model.c": FIXTURE_SOURCE},
        {"weights": 4, "arena": 16, "state": 8, "stack": 256},
        list(FIXTURE_TAP_FLOATS),
        FIXTURE_CLASSES,
    )


def fixture_logits(taps: list[np.ndarray], logits: np.ndarray) -> np.ndarray:
    out = logits.astype(np.float32).copy()
    out[0] += np.float32(taps[0].sum(dtype=np.float32))
    out[1] += np.float32(2.0) * np.float32(taps[1].sum(dtype=np.float32))
    return out


def fixture_label(taps, logits) -> int:
    return int(np.argmax(fixture_logits(taps, logits)))


def write_fixture_build(build: Path, name: str = "fixture", defences: dict | None = None) -> str:
    """A build directory holding only what the secure world needs (ta/, host/); returns the UUID.
    `defences`: plan.json's "guard" (mirrorc.backend.guard), None for none."""
    uuid = ta.ta_uuid(hashlib.sha256(FIXTURE_SOURCE.encode()).hexdigest())
    ta.write_ta(build / "ta", build / "host", name=name, uuid=uuid, lowered=fixture_lowered(), defences=defences)
    return str(uuid)


def random_inputs(rng: np.random.Generator):
    taps = [rng.normal(size=f).astype(np.float32) for f in FIXTURE_TAP_FLOATS]
    logits = rng.normal(size=FIXTURE_CLASSES).astype(np.float32)
    return taps, logits


def write_fixture_deployment(build: Path, defences: dict | None = None) -> None:
    """A whole fixture build: ta/, host/, a normal.onnx whose outputs feed the fixture TA
    (tap 1 = x[:, 0:3], tap 2 = x[:, 3:5] * 0.5, logits = x @ W) and the plan.json fields."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    uuid = write_fixture_build(build, defences=defences)
    w = np.random.default_rng(0).normal(size=(5, FIXTURE_CLASSES)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["x", "idx1"], [contract.tap_name(1)], name="mirrorc/select1", axis=1),
        helper.make_node("Gather", ["x", "idx2"], ["t2"], name="g2", axis=1),
        helper.make_node("Mul", ["t2", "half"], [contract.tap_name(2)], name="mirrorc/select2"),
        helper.make_node("MatMul", ["x", "w"], [contract.BACKBONE_LOGITS], name="fc"),
    ]
    inits = [
        numpy_helper.from_array(np.array([0, 1, 2], np.int64), "idx1"),
        numpy_helper.from_array(np.array([3, 4], np.int64), "idx2"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(w, "w"),
    ]
    graph = helper.make_graph(
        nodes,
        "fixture",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [
            helper.make_tensor_value_info(contract.BACKBONE_LOGITS, TensorProto.FLOAT, ["N", FIXTURE_CLASSES]),
            helper.make_tensor_value_info(contract.tap_name(1), TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info(contract.tap_name(2), TensorProto.FLOAT, ["N", 2]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, build / "normal.onnx")
    taps = [
        {
            "index": k + 1,
            "tensor": "x",
            "selected": contract.tap_name(k + 1),
            "channels": [],
            "shape": [f],
            "bytes": 4 * f,
            "command": contract.tap_command(k),
        }
        for k, f in enumerate(FIXTURE_TAP_FLOATS)
    ]
    lowered = fixture_lowered()
    hashes = {
        str(p.relative_to(build)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(build.rglob("*"))
        if p.is_file()
    }
    plan = {
        "format": contract.PLAN_FORMAT,
        "model": "fixture",
        "uuid": uuid,
        "ta_name": "fixture",
        "input": {"name": "x", "shape": ["N", 5]},
        "taps": taps,
        "logits": {
            "name": contract.BACKBONE_LOGITS,
            "shape": [FIXTURE_CLASSES],
            "bytes": 4 * FIXTURE_CLASSES,
            "command": contract.CMD_FINAL,
        },
        "single": {"command": contract.CMD_SINGLE, "bytes": 4 * (sum(FIXTURE_TAP_FLOATS) + FIXTURE_CLASSES)},
        "memory": ta.memory_plan(lowered.sizes, lowered.tap_floats, lowered.num_classes),
        "hashes": hashes,
    }
    if defences is not None:
        plan["guard"] = defences
    (build / "plan.json").write_text(json.dumps(plan))
    np.save(build / "w.npy", w)


def fixture_deployment_labels(build: Path, x: np.ndarray) -> np.ndarray:
    w = np.load(build / "w.npy")
    return np.array([fixture_label([xi[0:3], xi[3:5] * np.float32(0.5)], xi @ w) for xi in x], np.int64)
