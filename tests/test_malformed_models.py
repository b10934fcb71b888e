"""Issue 13: the command line on malformed models. tests/malformed.py writes a seeded corpus (a few
hundred broken ONNX files, at test time) that goes through `mirrorc inspect` and `mirrorc partition
--report --json` in-process (click's CliRunner, a per-run alarm for hangs), a few through real
subprocesses, and a handful through `mirrorc compile --epochs 0`. Every must-fail file must end in
exit 2 with one stderr line naming the file, node or field and the real reason; nothing may end
in a traceback or a hang, or leave files behind. The fast tier runs a stratified sample."""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import pytest
from click.testing import CliRunner

from malformed import Case, write_corpus
from mirrorc.cli import main

SEED = 13
RUN_TIMEOUT_S = 120  # per command: a hang, not a slow machine (a run here takes well under a second)
COMMANDS = (("inspect",), ("partition", "--report", "--json"))
BATCH_ADVICE = "give the input a fixed batch size"


class Hang(BaseException):  # BaseException: CliRunner catches Exception into result.exception
    pass


@dataclass
class Outcome:
    case: Case
    command: str
    exit_code: int | None  # None: hung
    stderr_lines: list[str]
    traceback: str = ""
    leftovers: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything wrong with this run, as readable lines (empty when it ended as it should)."""
        c, where = self.case, f"{self.case.category}/{self.case.name} {self.command}"
        if self.exit_code is None:
            return [f"{where}: hung (over {RUN_TIMEOUT_S} s)"]
        found = []
        if self.traceback:
            found.append(f"{where}: traceback: {self.traceback}")
        if self.leftovers:
            found.append(f"{where}: left behind {self.leftovers}")
        if self.exit_code not in (0, 2):
            found.append(f"{where}: exit {self.exit_code}: {self.stderr_lines[-1:]}")
        if c.must_fail and self.exit_code == 0:
            found.append(f"{where}: accepted a must-fail file")
        if self.exit_code == 2:
            line = self.stderr_lines[0] if self.stderr_lines else ""
            if len(self.stderr_lines) != 1 or not line.startswith("mirrorc: error: "):
                found.append(f"{where}: not one 'mirrorc: error:' line: {self.stderr_lines}")
            elif c.reason and not re.search(c.reason, line, re.IGNORECASE):
                found.append(f"{where}: reason /{c.reason}/ not in: {line}")
            elif c.must_fail and BATCH_ADVICE in line and "batch" not in c.reason:
                found.append(f"{where}: the real reason swallowed: {line}")
        return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return write_corpus(tmp_path_factory.mktemp("malformed") / "corpus", seed=SEED)


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs happen in an empty folder, so anything written relative to it is a leftover."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang()


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def run_in_process(case: Case, command: tuple[str, ...], cwd: Path) -> Outcome:
    corpus_before = _listing(case.path.parent)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(RUN_TIMEOUT_S)
    try:
        result = CliRunner().invoke(main, [command[0], str(case.path), *command[1:]])
    except Hang:
        return Outcome(case, command[0], None, [])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    tb = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = f"{type(result.exception).__name__}: {result.exception}"[:300]
    elif "Traceback (most recent call last)" in result.stderr:
        tb = result.stderr.strip().splitlines()[-1]
    leftovers = sorted(_listing(cwd) | (_listing(case.path.parent) - corpus_before))
    return Outcome(case, command[0], result.exit_code, result.stderr.strip().splitlines(), tb, leftovers)


def table(outcomes: list[Outcome]) -> str:
    """Per category: files, runs refused / accepted, tracebacks, hangs, leftovers, wrong reasons."""
    rows: dict[str, Counter[str]] = {}
    files: dict[str, set[str]] = {}
    for o in outcomes:
        row = rows.setdefault(o.case.category, Counter())
        files.setdefault(o.case.category, set()).add(o.case.name)
        row["refused"] += o.exit_code == 2
        row["accepted"] += o.exit_code == 0
        row["tracebacks"] += bool(o.traceback)
        row["hangs"] += o.exit_code is None
        row["leftovers"] += bool(o.leftovers)
        row["wrong"] += bool(o.problems()) and not o.traceback and o.exit_code is not None and not o.leftovers
    cols = ("refused", "accepted", "tracebacks", "hangs", "leftovers", "wrong")
    lines = [f"{'category':<15} {'files':>5} " + " ".join(f"{c:>10}" for c in cols)]
    total: Counter[str] = Counter()
    for cat, row in rows.items():
        total.update(row)
        lines.append(f"{cat:<15} {len(files[cat]):>5} " + " ".join(f"{row[c]:>10}" for c in cols))
    n_files = sum(len(f) for f in files.values())
    lines.append(f"{'total':<15} {n_files:>5} " + " ".join(f"{total[c]:>10}" for c in cols))
    lines.append(f"({len(outcomes)} runs: {', '.join(' '.join(c) for c in COMMANDS)})")
    return "\n".join(lines)


def run_corpus(cases: list[Case], cwd: Path) -> list[Outcome]:
    outcomes = [run_in_process(c, cmd, cwd) for c in cases for cmd in COMMANDS]
    print("\n" + table(outcomes))
    problems = [p for o in outcomes for p in o.problems()]
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
    return outcomes


def _in_process_cases(cases: list[Case]) -> list[Case]:
    # a FIFO's open() blocks before any check could run in-process: it goes through a subprocess
    return [c for c in cases if c.name not in ("fifo", "symlink-dev-zero")]


def stratified_sample(cases: list[Case], per_category: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    by_cat: dict[str, list[Case]] = {}
    for c in cases:
        by_cat.setdefault(c.category, []).append(c)
    return [c for group in by_cat.values() for c in rng.sample(group, min(per_category, len(group)))]


def test_corpus_covers_the_issue(corpus: list[Case]) -> None:
    """A few hundred files over every category the issue names, mostly must-fail, seeded."""
    cats = Counter(c.category for c in corpus)
    print(dict(cats))
    assert len(corpus) >= 200
    assert set(cats) >= {
        "truncation", "bit flip", "dtype", "shape", "cycle", "dangling name", "huge dims",
        "opset/IR", "attribute", "non-UTF-8", "external data", "special file",
    }  # fmt: skip
    names = {c.name for c in corpus}
    for wanted in ("ir0", "ir-1", "init-fc.b-dtype999", "input-dtype77", "init-nodata-4611686018427387904",
                   "logits-rank1", "stride0-bN", "group0-b1", "autopad-garbage-bN", "softmax-axis5-bN",
                   "conv-in-channels-bN", "conv-bias-length", "kernel-larger-than-input-bN",
                   "gemm-transposed-weight", "conv2-weights-INT8", "non-utf8-input-name", "ext-dotdot",
                   "symlink-dev-zero"):  # fmt: skip
        assert wanted in names, wanted
    again = write_corpus(corpus[0].path.parent.parent / "again", seed=SEED)

    def content(cases: list[Case]) -> list[tuple[str, bytes]]:  # external data names its folder: left out
        return [(c.name, c.path.read_bytes()) for c in cases if c.path.is_file() and c.category != "external data"]

    assert content(again) == content(corpus)


def test_corpus_sample(corpus: list[Case], empty_cwd: Path) -> None:
    """The fast tier: three files per category, both commands."""
    run_corpus(stratified_sample(_in_process_cases(corpus), 3, SEED), empty_cwd)


@pytest.mark.slow
def test_corpus_full(corpus: list[Case], empty_cwd: Path) -> None:
    outcomes = run_corpus(_in_process_cases(corpus), empty_cwd)
    must_fail = [o for o in outcomes if o.case.must_fail]
    assert all(o.exit_code == 2 for o in must_fail) and len(must_fail) > 350


def _mirrorc_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    def limit_memory() -> None:  # reading /dev/zero unbounded would otherwise take the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", "mirrorc.cli", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
        env=env,
        preexec_fn=limit_memory,
    )


@pytest.mark.parametrize("name", ["symlink-dev-zero", "fifo", "ir-1", "init-nodata-4611686018427387904"])
def test_subprocess(corpus: list[Case], empty_cwd: Path, name: str) -> None:
    """As a user runs it: a symlink to /dev/zero and a FIFO are refused before any read (no memory
    blow-up, no blocking open), and two in-process findings hold in a real process."""
    case = next(c for c in corpus if c.name == name)
    for command in COMMANDS:
        r = _mirrorc_subprocess([command[0], str(case.path), *command[1:]], empty_cwd)
        lines = r.stderr.strip().splitlines()
        print(command[0], r.returncode, lines)
        assert r.returncode == 2 and len(lines) == 1, (command, r.stderr[-2000:])
        assert str(case.path) in lines[0] and re.search(case.reason, lines[0], re.IGNORECASE), lines[0]
    assert not _listing(empty_cwd)


def _compile_cases(corpus: list[Case]) -> Iterator[Case]:
    picks = ("ext-ok", "opset11-ok", "group0-bN", "logits-rank1", "conv-in-channels-b1", "ir2", "init-nodata-fc.w")
    return (c for c in corpus if c.name in picks)


@pytest.mark.slow
def test_compile_handful(corpus: list[Case], tiny_npz: Path, empty_cwd: Path) -> None:
    """`compile --epochs 0` on files partition accepts (they compile) and on must-fail ones (one line,
    exit 2, no half-written -o folder and no empty .<out>.checkpoints/)."""
    cases = list(_compile_cases(corpus))
    assert len(cases) == 7
    for case in cases:
        work = empty_cwd / case.name  # one folder per run: what is in it after the run, the run left
        work.mkdir()
        out = work / "build"
        args = ["compile", str(case.path), "--data", str(tiny_npz), "-o", str(out), "--epochs", "0"]
        r = _mirrorc_subprocess(args, work)
        lines = r.stderr.strip().splitlines()
        print(case.name, r.returncode, lines[-1:] if lines else "")
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        if case.must_fail:
            assert r.returncode == 2 and len(lines) == 1 and re.search(case.reason, lines[0], re.IGNORECASE), r.stderr
            assert not _listing(work), _listing(work)
        else:
            assert r.returncode == 0, r.stderr[-3000:]
            assert (out / "plan.json").is_file()
            assert {p.name for p in work.iterdir()} == {"build"}  # no .build.checkpoints/ left
