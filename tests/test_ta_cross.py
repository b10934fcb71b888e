"""The generated TA sources (entry points + model + kernels) compile for aarch64 as a TA would:
freestanding C99 against the Internal Core API header, no libc beyond the freestanding headers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mirrorc.backend import ta
from test_ta_support import write_fixture_build

CROSS = "aarch64-linux-gnu-gcc"
SIZE = "aarch64-linux-gnu-size"
pytestmark = pytest.mark.skipif(shutil.which(CROSS) is None, reason=f"{CROSS} not installed")


def cross_compile(ta_dir: Path, out: Path) -> dict[str, int]:
    """Compile every TA source to an aarch64 object; return the summed section sizes (size -A)."""
    includes = [f"-I{d}" for d in [ta.SHIM, *ta.ta_include_dirs(ta_dir)]]
    totals: dict[str, int] = {}
    for src in ta.ta_sources(ta_dir):
        obj = out / (src.stem + ".o")
        proc = subprocess.run(
            [CROSS, "-std=c99", "-ffreestanding", "-O2", "-Wall", "-Werror", *includes, "-c", str(src), "-o", str(obj)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{src.name}: {proc.stderr}"
        # nothing outside the TA: every undefined symbol is a GP Internal API function or a kernel
        nm = subprocess.run(["aarch64-linux-gnu-nm", "-u", str(obj)], capture_output=True, text=True).stdout
        for sym in nm.split():
            if sym != "U":
                assert sym.startswith(("TEE_", "mc_", "mirrorc_")), f"{src.name} needs '{sym}' from outside the TA"
        sizes = subprocess.run([SIZE, "-A", str(obj)], capture_output=True, text=True, check=True).stdout
        for line in sizes.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith((".text", ".rodata", ".bss", ".data")) and parts[1].isdigit():
                key = "." + parts[0].split(".")[1]
                totals[key] = totals.get(key, 0) + int(parts[1])
    return totals


def test_fixture_ta_cross_compiles(tmp_path):
    write_fixture_build(tmp_path)
    sizes = cross_compile(tmp_path / "ta", tmp_path)
    print("fixture TA (aarch64):", sizes)
    assert sizes.get(".text", 0) > 0
