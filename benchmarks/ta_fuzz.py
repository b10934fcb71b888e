"""libFuzzer on generated TAs with every defence on (mirrorc.backend.ta.fuzz_defences: range check,
query budget, session cap, an allow-client rule, rate limit): the entry points, generated model and
kernels and the GP Internal API shim under ASan and UBSan, with the protocol oracle of
runtime_c/fuzz/ta_fuzz.c (refusal codes, each defence's answer against a model of it, the session cap
never exceeded, nothing but the label leaving, stream reset after every refusal, the query counter
equal to the answers, the same label as a fresh session after any garbage, heap freed). The longer run
of what tests/test_ta_fuzz.py runs for 45 s; needs clang.

    python benchmarks/ta_fuzz.py [--models lenet5,vgg7] [--seconds 600] [-C 2]

Random CPM weights (the mirror pass's draw): the harness checks the protocol and memory safety,
which do not depend on training."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import write_results  # noqa: E402

from examples.make_models import write_all  # noqa: E402
from mirrorc.backend import ta  # noqa: E402
from mirrorc.backend.secure_build import write_build  # noqa: E402
from mirrorc.pipeline import build_mirrornet  # noqa: E402
from passes import contract  # noqa: E402


def example_build(name: str, channels: int, work: Path, defences_of: Callable[[int], dict]) -> tuple[Path, dict]:
    """work/<name>: the example model `name` (written once into work/models) mirrored at `channels`,
    random CPM weights, the TA built with the defences `defences_of(class count)`; returns it and its plan."""
    models = work / "models"
    if not (models / f"{name}.onnx").exists():
        write_all(models)
    build = work / name
    build.mkdir()
    mirrornet, _ = build_mirrornet(models / f"{name}.onnx", channels=channels)
    return build, write_build(mirrornet, build, name, defences=defences_of(contract.num_classes(mirrornet)))


def fuzz(name: str, seconds: int, channels: int, work: Path) -> dict:
    build, fields = example_build(name, channels, work, ta.fuzz_defences)
    exe = ta.build_fuzzer(build)
    corpus = work / f"corpus-{name}"
    corpus.mkdir()
    args = ta.fuzz_args(seconds)
    with ta.fuzz_storage() as storage:
        env = {**os.environ, "MIRRORC_TA_STORAGE": storage}
        proc = subprocess.run([str(exe), *args, str(corpus)], capture_output=True, text=True, cwd=work, env=env)
    stats = {m[0]: int(m[1]) for m in re.findall(r"^stat::(\w+):\s+(\d+)", proc.stderr, re.M)}
    cov = re.findall(r"\bcov: (\d+) ft: (\d+)", proc.stderr)
    findings = [line for line in proc.stderr.splitlines() if "ERROR:" in line or "protocol oracle" in line]
    return {
        "model": name,
        "taps": len(fields["taps"]),
        "seconds": seconds,
        "inputs": stats.get("number_of_executed_units", 0),
        "inputs_per_s": stats.get("average_exec_per_sec", 0),
        "coverage_edges": int(cov[-1][0]) if cov else None,
        "features": int(cov[-1][1]) if cov else None,
        "corpus": stats.get("new_units_added", 0),
        "peak_rss_mb": stats.get("peak_rss_mb"),
        "exit": proc.returncode,
        "findings": findings,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lenet5,vgg7")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("-C", "--channels", type=int, default=2)
    args = ap.parse_args()
    print(f"{'model':8} {'taps':>4} {'seconds':>7} {'inputs':>9} {'inputs/s':>8} {'edges':>6} {'findings':>8}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mirrorc-fuzz-") as tmp:
        for name in args.models.split(","):
            r = fuzz(name, args.seconds, args.channels, Path(tmp))
            rows.append(r)
            print(
                f"{r['model']:8} {r['taps']:4d} {r['seconds']:7d} {r['inputs']:9d} {r['inputs_per_s']:8d} "
                f"{r['coverage_edges'] or 0:6d} {len(r['findings']):8d}",
                flush=True,
            )
            for line in r["findings"]:
                print(f"  {line}")
    write_results(
        "ta_fuzz",
        "libFuzzer + ASan/UBSan on generated TAs (entry points, model, kernels, Internal API shim) with "
        "the protocol oracle: inputs run, inputs/s, coverage, findings",
        {
            "setup": {
                "channels": args.channels,
                "harness": "runtime_c/fuzz/ta_fuzz.c",
                "defences": {k: v for k, v in ta.fuzz_defences(1).items() if k not in ("logit_min", "logit_max")},
                "clang": _clang(),
            },
            "rows": rows,
        },
    )
    sys.exit(0 if all(r["exit"] == 0 and not r["findings"] for r in rows) else 1)


def _clang() -> str:
    out = subprocess.run(["clang", "--version"], capture_output=True, text=True).stdout
    return (out.splitlines() or ["?"])[0]


if __name__ == "__main__":
    main()
