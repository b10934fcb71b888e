"""Where a benchmark's figures go: `results/<name>.json` at the top of the repo (or $MIRRORC_RESULTS),
one file per table, holding the command that made it, the date, the machine and the figures. The
docs quote these files, and the partition report reads results/protection.json
(mirrorc.plan.report.results_dir finds the folder for both)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from mirrorc.plan.report import results_dir

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """What ran the benchmark: enough to tell two machines apart, and the libraries that did the work."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        m: getattr(sys.modules[m], "__version__", None)
        for m in ("onnxruntime", "torch", "numpy", "onnx")
        if m in sys.modules
    }
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "libraries": versions,
    }


def command(argv: list[str] | None = None) -> str:
    """The command line that ran this benchmark, from the repo's top (as the docs quote it)."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(shown), *argv[1:]])


def write_results(name: str, table: str, figures: dict) -> Path:
    """Write results/<name>.json for one printed table: `table` says what it is, `figures` holds its rows
    (and anything the rows share under figures["setup"]). Returns the file written."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    record = {
        "name": name,
        "table": table,
        "command": command(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": figures,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)  # a half-written results file would be read as measured
    print(f"figures written to {path}", file=sys.stderr)
    return path
