"""libFuzzer on a generated TA (LeNet-5's CPM) with every defence on (ta.fuzz_defences): entry points,
model, kernels and the Internal API shim under ASan and UBSan, with the protocol oracle of
runtime_c/fuzz/ta_fuzz.c. A bounded run must find nothing; the same harness on a TA with a planted
bug (a memory error, a protocol slip, each defence broken) must find it. Needs clang with
libFuzzer (scripts/setup.sh installs Debian's clang); skipped otherwise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mirrorc.backend import ta
from mirrorc.errors import MirrorcError
from test_ta_models import make_build

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("clang") is None, reason="clang not installed (scripts/setup.sh installs it)"),
]

FUZZ_SECONDS = 45


@pytest.fixture(scope="module")
def lenet_build(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("fuzz_lenet5")
    make_build("lenet5", build, defences=ta.fuzz_defences(10))
    return build


def _fuzzer(build: Path) -> Path:
    try:
        return ta.build_fuzzer(build)
    except MirrorcError as e:  # clang without libFuzzer's runtime
        if "fuzzer" in str(e):
            pytest.skip(f"clang cannot link libFuzzer here: {e}")
        raise


def _fuzz(exe: Path, corpus: Path, seconds: int) -> tuple[int, str, dict[str, int]]:
    """Run the fuzzer for `seconds`; (exit code, its output, its final stats)."""
    corpus.mkdir(exist_ok=True)
    args = ta.fuzz_args(seconds)
    with ta.fuzz_storage() as storage:
        proc = subprocess.run(
            [str(exe), *args, str(corpus)],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            cwd=corpus.parent,
            env={**os.environ, "MIRRORC_TA_STORAGE": storage},
        )
    stats = {m[0]: int(m[1]) for m in re.findall(r"^stat::(\w+):\s+(\d+)", proc.stderr, re.M)}
    return proc.returncode, proc.stderr, stats


def test_fuzzing_the_ta_finds_nothing(lenet_build, tmp_path):
    code, out, stats = _fuzz(_fuzzer(lenet_build), tmp_path / "corpus", FUZZ_SECONDS)
    runs = stats.get("number_of_executed_units", 0)
    print(
        f"ta_fuzz (LeNet-5 TA, ASan+UBSan): {runs} inputs in {FUZZ_SECONDS} s "
        f"({stats.get('average_exec_per_sec')} inputs/s), corpus +{stats.get('new_units_added')}, "
        f"peak RSS {stats.get('peak_rss_mb')} MB, exit {code}"
    )
    findings = [line for line in out.splitlines() if "ERROR:" in line or "protocol oracle" in line]
    if code != 0 and findings and all("libFuzzer: out-of-memory (used:" in f for f in findings):
        # libFuzzer's RSS watchdog fired: a finding only if the input it saved exhausts memory again when
        # run alone (it once fired on the peak RSS the fuzzer inherits from a large pytest, which
        # ta.fuzz_args now adds to the limit)
        saved = sorted((tmp_path).glob("oom-*"))
        assert saved, out[-3000:]
        with ta.fuzz_storage() as storage:
            again = subprocess.run(
                [str(_fuzzer(lenet_build)), *[a for a in ta.fuzz_args(0) if "_limit_mb=" in a], str(saved[0])],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
                env={**os.environ, "MIRRORC_TA_STORAGE": storage},
            )
        print(f"out-of-memory during the run; its input alone: exit {again.returncode}")
        assert again.returncode == 0, again.stderr[-3000:]
        return
    assert code == 0 and not findings, "\n".join(findings) or out[-3000:]
    assert runs > 1000  # it did run (on a loaded 2-core host: thousands; unloaded: tens of thousands)


ORACLE = "ta_fuzz: protocol oracle:"
# Bugs planted in the TA's entry points, and what the fuzzer must then report: a memory error
# (ASan), a protocol violation and each defence broken (the oracle).
PLANTED = {
    "input copy ignores the declared size": (
        "if (!p->memref.buffer || p->memref.size != bytes)",
        "if (!p->memref.buffer)",
        "heap-buffer-overflow",
    ),
    "a refusal does not end the stream": (
        "s->next_tap = 0; /* any refusal ends the stream */",
        "(void)0;",
        ORACLE,  # a valid tap refused after a refusal, or the FINAL check
    ),
    "the session cap is off by one": (
        "if (held >= MIRRORC_TA_SESSION_CAP)",
        "if (held > MIRRORC_TA_SESSION_CAP)",
        ORACLE,
    ),
    "no client-identity check": ("return MIRRORC_TA_ERROR_CLIENT;", "(void)0;", ORACLE),
    "answers do not spend the rate limit": ("rate_tokens -= 1000;", "(void)0;", ORACLE),
    "the budget answers one more": ("used >= MIRRORC_TA_QUERY_BUDGET", "used > MIRRORC_TA_QUERY_BUDGET", ORACLE),
    "a NaN logit passes the range check": (
        "if (!(logits[k] >= logit_min[k] && logits[k] <= logit_max[k]))",
        "if (logits[k] < logit_min[k] || logits[k] > logit_max[k])",
        ORACLE,
    ),
    "a refused FINAL writes the label": (
        "res = may_answer(s->input);\n\tif (res != TEE_SUCCESS)\n\t\treturn res;\n"
        "\tparams[1].value.a = (uint32_t)mirrorc_run_final(&s->state, s->input);",
        "params[1].value.a = (uint32_t)mirrorc_run_final(&s->state, s->input);\n"
        "\tres = may_answer(s->input);\n\tif (res != TEE_SUCCESS)\n\t\treturn res;",
        ORACLE,
    ),
    "an answer carries more than the label": ("params[1].value.b = 0;", "params[1].value.b = s->next_tap + 1;", ORACLE),
}


@pytest.mark.parametrize("bug", list(PLANTED))
def test_fuzzer_finds_a_planted_bug(lenet_build, tmp_path, bug):
    """The check that the harness can fail: each planted bug must be reported."""
    old, new, report = PLANTED[bug]
    build = tmp_path / "broken"
    shutil.copytree(lenet_build / "ta", build / "ta", ignore=shutil.ignore_patterns("sim"))
    source = build / "ta" / "mirrorc_ta.c"
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))
    code, out, stats = _fuzz(_fuzzer(build), tmp_path / "corpus", FUZZ_SECONDS)
    print(
        f"{bug}: found after {stats.get('number_of_executed_units')} inputs: "
        + next((line for line in out.splitlines() if report in line), "")
    )
    assert code != 0 and report in out, out[-3000:]
