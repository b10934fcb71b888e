"""The contract of passes/contract.py: the wire format pinned once, the TA header generated from
it, and plan.json's schema check (one line naming the file and the field)."""

from __future__ import annotations

import copy
import json

import onnx
import pytest

from mirrorc.backend import ta
from mirrorc.errors import MirrorcError
from mirrorc.tee.runtime import load_plan
from passes import contract
from test_ta_support import fixture_lowered


def test_wire_format_is_pinned():
    """The numbers and names a deployed TA and host agree on; changing one breaks every build."""
    assert (contract.CMD_TAP_BASE, contract.CMD_FINAL, contract.CMD_SINGLE, contract.CMD_DEBUG_FINAL) == (
        0x100,
        0x200,
        0x201,
        0x2FF,
    )
    assert [contract.tap_command(k) for k in range(3)] == [256, 257, 258]
    assert contract.CMD_PROFILE == 0x2FE  # calibration builds only
    assert (
        contract.META_TAPS,
        contract.META_WORLD,
        contract.META_STAGE,
        contract.META_CHANNELS,
        contract.META_NUM_CLASSES,
        contract.META_OPTIONS,
        contract.META_SOURCE,
        contract.META_VERSION,
    ) == (
        "mirrorc.taps",
        "mirrorc.world",
        "mirrorc.stage",
        "mirrorc.channels",
        "mirrorc.num_classes",
        "mirrorc.options",
        "mirrorc.source",
        "mirrorc.version",
    )
    assert contract.tap_name(3) == "mirrorc_tap3"
    assert contract.OUTPUTS == ("label", "backbone_logits", "mirrornet_logits")
    assert contract.CPM_LOGITS == "cpm_logits"
    assert (contract.PLAN_FORMAT, contract.FORMAT_VERSION) == (1, "1")


def test_num_classes_is_read_from_the_model_metadata():
    """One reader of META_NUM_CLASSES: absent -> None (or an error where a mirrornet must have it),
    a non-integer -> one line naming the model and the key."""
    model = onnx.ModelProto()
    assert contract.declared_num_classes(model) is None
    with pytest.raises(MirrorcError, match=r"^m.onnx: model metadata 'mirrorc.num_classes' is missing"):
        contract.num_classes(model, "m.onnx")
    onnx.helper.set_model_props(model, {contract.META_NUM_CLASSES: "10"})
    assert contract.declared_num_classes(model) == contract.num_classes(model) == 10
    onnx.helper.set_model_props(model, {contract.META_NUM_CLASSES: "ten"})
    with pytest.raises(
        MirrorcError, match=r"^m.onnx: model metadata 'mirrorc.num_classes' is not an integer \('ten'\)$"
    ):
        contract.declared_num_classes(model, "m.onnx")


def _render(tmp_path):
    ta.write_ta(
        tmp_path / "ta", tmp_path / "host", name="fixture", uuid=ta.ta_uuid("0" * 64), lowered=fixture_lowered()
    )
    return (tmp_path / "ta/include/fixture_ta.h").read_text(), (tmp_path / "ta/mirrorc_ta.c").read_text()


def test_ta_header_takes_the_command_ids_from_the_contract(tmp_path, monkeypatch):
    header, source = _render(tmp_path / "a")
    assert "#define MIRRORC_CMD_TAP(k)  (0x100u + (unsigned)(k))" in header
    assert "#define MIRRORC_CMD_FINAL   0x200u" in header and "#define MIRRORC_CMD_SINGLE  0x201u" in header
    assert "#define MIRRORC_CMD_DEBUG_FINAL 0x2ffu" in source
    assert "#define MIRRORC_CMD_PROFILE 0x2feu" in source
    # the templates hold no number of their own: other values give another header
    for name, value in (
        ("CMD_TAP_BASE", 0x1100),
        ("CMD_FINAL", 0x1200),
        ("CMD_SINGLE", 0x1201),
        ("CMD_DEBUG_FINAL", 0x12FF),
    ):
        monkeypatch.setattr(contract, name, value)
    header, source = _render(tmp_path / "b")
    assert "(0x1100u + (unsigned)(k))" in header and "0x1200u" in header and "0x1201u" in header
    assert "#define MIRRORC_CMD_DEBUG_FINAL 0x12ffu" in source
    assert "0x100u" not in header + source and "0x2ffu" not in source


def _plan() -> dict:
    taps = [
        {
            "index": k + 1,
            "tensor": f"t{k}",
            "selected": contract.tap_name(k + 1),
            "channels": [0, 1],
            "shape": [2, 4, 4],
            "bytes": 128,
            "command": contract.tap_command(k),
        }
        for k in range(2)
    ]
    return {
        "format": 1,
        "model": "m.onnx",
        "uuid": "8a4c1f30-5b6e-5d2a-9c1e-0f2b3c4d5e6f",
        "ta_name": "m",
        "input": {"name": "x", "shape": ["N", 1, 28, 28]},
        "taps": taps,
        "logits": {"name": contract.BACKBONE_LOGITS, "shape": [10], "bytes": 40, "command": contract.CMD_FINAL},
        "single": {"command": contract.CMD_SINGLE, "bytes": 296},
        "memory": {
            "weights": 4,
            "arena": 8,
            "state": 8,
            "stack": 64,
            "session": 300,
            "ta_stack_size": 2048,
            "ta_data_size": 4096,
            "total": 6156,
        },
        "hashes": {"normal.onnx": "ab"},
        "preprocessing": {"mean": [0.1], "std": [0.3]},
    }


def _refusal(plan: dict, path="build/plan.json") -> str:
    with pytest.raises(MirrorcError) as e:
        contract.validate_plan(plan, path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_validate_plan_accepts_a_complete_plan():
    assert contract.validate_plan(_plan(), "plan.json") is None


@pytest.mark.parametrize(
    "spoil, expected",
    [
        (lambda p: p.update(uuid="not-a-uuid"), "field 'uuid' is not a UUID"),
        (lambda p: p["taps"][1].update(bytes="128"), "field 'taps[1].bytes' must be an integer, not str"),
        (lambda p: p["taps"][0].update(bytes=True), "field 'taps[0].bytes' must be an integer, not bool"),
        (lambda p: p.pop("single"), "missing field 'single'"),
        (lambda p: p["memory"].pop("arena"), "missing field 'memory.arena'"),
        (lambda p: p.update(taps={"index": 1}), "field 'taps' must be a list, not dict"),
        (lambda p: p.update(preprocessing=[]), "field 'preprocessing' must be an object, not list"),
        (
            lambda p: p["taps"][1].update(command=contract.tap_command(0)),
            "field 'taps[1].command' is 256, expected 257",
        ),
        (lambda p: p["single"].update(command=contract.CMD_FINAL), "field 'single.command' is 512, expected 513"),
        (lambda p: p.update(format=2), "field 'format' is 2"),
    ],
)
def test_validate_plan_names_file_and_field(spoil, expected):
    plan = copy.deepcopy(_plan())
    spoil(plan)
    assert expected in _refusal(plan)


def test_load_plan_checks_the_schema(tmp_path):
    plan = _plan()
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert load_plan(tmp_path) == plan
    plan["taps"][0]["bytes"] = "128"
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(MirrorcError, match=r"plan\.json: field 'taps\[0\]\.bytes' must be an integer"):
        load_plan(tmp_path)
    (tmp_path / "plan.json").write_text("[1, 2]")
    with pytest.raises(MirrorcError, match=r"plan\.json: not a JSON object"):
        load_plan(tmp_path)
