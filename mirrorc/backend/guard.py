"""The TA's defences against a hostile normal world, as chosen at compile time (issue 13).

The TA answers argmax(L + cpm(taps)) and the caller chooses L; with L free, a binary search on it
reads the CPM's logits off the labels (mirrorc.attack.extract). The range check confines L to what
the backbone produced on the training set: per class [min - margin * span, max + margin * span], with
span = max - min. An honest caller never leaves it on in-distribution inputs, so it is on by default;
the attacker's search must stay inside it. The settings go into plan.json's "guard" and the TA
protocol header (MIRRORC_TA_RANGE_CHECK, MIRRORC_TA_LOGIT_MIN/MAX); a refusal is
passes.contract.TA_ERROR_LOGIT_RANGE.

The query budget (`mirrorc compile --query-budget N`) caps the labels the TA answers over its lifetime,
a counter in GP persistent storage kept across sessions and reboots. It is off by default: every
answer then costs a storage write (an fdatasync in the simulator), and an honest device's lifetime
count of inferences is not known at compile time. Refusal: passes.contract.TA_ERROR_QUERY_BUDGET."""

from __future__ import annotations

import numpy as np
import onnx

from passes import contract

# of each class's span, both sides. LeNet-5/MNIST, range from 10,000 training images: 0.1 refused 1 of
# the 50,000 other training images; 0.25 refuses none of them and none of the test set.
RANGE_MARGIN = 0.25
# Fewer training images than this say too little about the backbone's range: the check would refuse
# honest inputs (a ShuffleNetV2 built from 32 images refused 6 of 6 test images), so it stays off.
RANGE_MIN_IMAGES = 1000


def logit_range(
    mirrornet: onnx.ModelProto, x_train: np.ndarray, margin: float = RANGE_MARGIN, query_budget: int = 0
) -> dict:
    """The plan's "guard" with the range check on: the backbone logits of `x_train` by onnxruntime,
    per class min/max widened by `margin`; `query_budget` labels over the TA's lifetime (0: no budget)."""
    from mirrorc.attack.thief import run_onnx

    if len(x_train) < RANGE_MIN_IMAGES:
        guard = no_guard(_num_classes(mirrornet))
        guard["query_budget"] = int(query_budget)
        guard["range_check_off"] = f"{len(x_train)} training images, fewer than {RANGE_MIN_IMAGES}"
        return guard
    logits = run_onnx(mirrornet, contract.BACKBONE_LOGITS, x_train).astype(np.float64)
    low, high = logits.min(axis=0), logits.max(axis=0)
    span = high - low
    return {
        "range_check": True,
        # as float32, the values the TA compares with
        "logit_min": [float(v) for v in (low - margin * span).astype(np.float32)],
        "logit_max": [float(v) for v in (high + margin * span).astype(np.float32)],
        "margin": float(margin),
        "query_budget": int(query_budget),
    }


def _num_classes(mirrornet: onnx.ModelProto) -> int:
    meta = {p.key: p.value for p in mirrornet.metadata_props}
    return int(meta[contract.META_NUM_CLASSES])


def no_guard(num_classes: int) -> dict:
    """The plan's "guard" of a TA without defences (builds made without training data)."""
    return {
        "range_check": False,
        "logit_min": [0.0] * num_classes,
        "logit_max": [0.0] * num_classes,
        "margin": 0.0,
        "query_budget": 0,
    }


def template_values(guard: dict) -> dict[str, str]:
    """The @...@ values of the TA templates for these settings (C float initializers)."""

    def floats(values: list[float]) -> str:
        return ", ".join(f"{float(np.float32(v))!r}f" for v in values)

    return {
        "RANGE_CHECK": "1" if guard["range_check"] else "0",
        "LOGIT_MIN": floats(guard["logit_min"]),
        "LOGIT_MAX": floats(guard["logit_max"]),
        "QUERY_BUDGET": str(int(guard["query_budget"])),
    }
