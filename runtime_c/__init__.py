"""The C that mirrorc ships: freestanding kernels, OP-TEE TA templates, the GP TEE API shims and
the simulator. This module only says where those files are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
KERNEL_DIR = ROOT / "kernels"
TEMPLATE_DIR = ROOT / "ta"
SHIM_DIR = ROOT / "shim"
FUZZ_DIR = ROOT / "fuzz"


def kernel_sources() -> list[Path]:
    """The kernel library's C files (compile them with KERNEL_DIR on the include path)."""
    return sorted(KERNEL_DIR.glob("*.c"))
