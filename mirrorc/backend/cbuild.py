"""Compile C with the host compiler into a cached shared library, executable or object.

Used by the kernel and lowering tests (load the .so with ctypes), by the simulated secure world and
by the benchmarks. The cache key covers the compiler, every flag and the bytes of every source and
of every header in the include directories, so a changed file always rebuilds and an unchanged one
never does. Outputs are written beside their final name and renamed into place (no half-written
library is ever loaded by a concurrent run)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirrorc.errors import MirrorcError
from runtime_c import KERNEL_DIR, kernel_sources

if TYPE_CHECKING:  # for the annotations only; the functions that use numpy import it themselves
    import numpy as np

    from passes.lower_c import Lowered

# Portable, warning-clean C99; -O3 lets gcc vectorise the conv/gemm inner loops.
DEFAULT_CFLAGS = ("-std=c99", "-O3", "-Wall", "-Wextra", "-Werror=implicit-function-declaration")
_KINDS = {"shared": ".so", "exe": "", "object": ".o"}


def cache_dir() -> Path:
    """$MIRRORC_CACHE/cbuild, else ~/.cache/mirrorc/cbuild."""
    root = os.environ.get("MIRRORC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mirrorc")
    return Path(root) / "cbuild"


def build(
    sources: Iterable[str | os.PathLike],
    *,
    kind: str = "shared",
    name: str = "lib",
    include_dirs: Iterable[str | os.PathLike] = (),
    defines: Mapping[str, object] | None = None,
    cflags: Iterable[str] = DEFAULT_CFLAGS,
    ldflags: Iterable[str] = (),
    compiler: str = "gcc",
    out_dir: str | os.PathLike | None = None,
) -> Path:
    """Compile `sources` into one output of `kind` ("shared" .so, "exe", or "object" .o: one source
    only) and return its path; a cached build with the same inputs is reused.

    `defines` maps macro names to values (None = just defined). The output is
    `<out_dir or cache_dir()>/<name>-<hash><suffix>`."""
    if kind not in _KINDS:
        raise ValueError(f"cbuild: kind must be one of {sorted(_KINDS)}, not {kind!r}")
    src_paths = [Path(s).resolve() for s in sources]
    inc_paths = [Path(d).resolve() for d in include_dirs]
    if kind == "object" and len(src_paths) != 1:
        raise ValueError("cbuild: an object file is built from exactly one source")
    for s in src_paths:
        if not s.is_file():
            raise MirrorcError(f"cbuild: source file not found: {s}")
    if shutil.which(compiler) is None:
        raise MirrorcError(f"cbuild: C compiler '{compiler}' not found on PATH")

    args = list(cflags)
    for key, value in sorted((defines or {}).items()):
        args.append(f"-D{key}" if value is None else f"-D{key}={value}")
    args += [f"-I{d}" for d in inc_paths]
    if kind == "shared":
        args += ["-shared", "-fPIC"]
    elif kind == "object":
        args += ["-c"]
    link = list(ldflags)

    digest = hashlib.sha256()
    for part in [compiler, kind, *args, *link]:
        digest.update(part.encode() + b"\0")
    for s in src_paths:
        digest.update(str(s).encode() + b"\0" + s.read_bytes())
    for d in inc_paths:  # headers can change the build without any source changing
        for h in sorted(d.glob("*.h")):
            digest.update(h.name.encode() + b"\0" + h.read_bytes())
    dest = Path(out_dir) if out_dir is not None else cache_dir()
    out = dest / f"{name}-{digest.hexdigest()[:16]}{_KINDS[kind]}"
    if out.exists():
        return out

    made_dest = not dest.is_dir()
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=dest)
    os.close(fd)
    cmd = [compiler, *args, *map(str, src_paths), "-o", tmp, *link]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if "error" in line] or proc.stderr.splitlines()
            raise MirrorcError(f"cbuild: {compiler} failed building {name}: {' ; '.join(errors[:3])}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
        if made_dest and not out.exists():  # a failed build leaves no empty directory (e.g. ta/sim/)
            with contextlib.suppress(OSError):
                dest.rmdir()
    return out


def load(path: str | os.PathLike) -> ctypes.CDLL:
    """Load a shared library built by `build`."""
    return ctypes.CDLL(str(path))


def build_kernels(**kwargs: Any) -> Path:  # `build`'s keyword options
    """The kernel library alone as a shared library (for kernel tests and ctypes callers)."""
    return build(kernel_sources(), name="mirrorc_kernels", include_dirs=[KERNEL_DIR], **kwargs)


def build_lowered(
    files: Mapping[str, str], *, name: str = "mirrorc_model", debug: bool = True, cflags: Iterable[str] = DEFAULT_CFLAGS
) -> Path:
    """Write the generated sources of `passes.lower_c.lower(...).files` into a content-addressed
    cache directory and build them (model + kernels) into one shared library. With `debug`,
    MIRRORC_DEBUG exposes `mirrorc_debug_run_final` (the MirrorNet logits)."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + files[rel].encode() + b"\0")
    src_dir = cache_dir() / f"src-{name}-{digest.hexdigest()[:16]}"
    if not src_dir.is_dir():
        src_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{src_dir.name}.", dir=src_dir.parent))
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        try:
            os.rename(tmp, src_dir)
        except OSError:  # a concurrent run got there first with the same content
            shutil.rmtree(tmp, ignore_errors=True)
    sources = sorted(p for p in src_dir.rglob("*.c"))
    include_dirs = sorted({p.parent for p in src_dir.rglob("*.h")})
    return build(
        sources, name=name, include_dirs=include_dirs, cflags=cflags, defines={"MIRRORC_DEBUG": None} if debug else None
    )


class SecureModel:
    """The generated C model (a `build_lowered` library) driven through its C interface, one
    sample at a time, as the TA drives it: reset, run_tap(0..n-1), run_final. Holds one session
    state of `state_bytes` (Lowered.sizes["state"])."""

    def __init__(self, library: str | os.PathLike, tap_floats: list[int], num_classes: int, state_bytes: int):
        self.lib = load(library)
        self.tap_floats, self.num_classes = list(tap_floats), num_classes
        self.lib.mirrorc_run_final.restype = ctypes.c_int32
        self.debug = hasattr(self.lib, "mirrorc_debug_run_final")
        if self.debug:
            self.lib.mirrorc_debug_run_final.restype = ctypes.c_int32
        self.state = ctypes.create_string_buffer(max(4, state_bytes))

    @classmethod
    def from_lowered(cls, lowered: Lowered, *, debug: bool = True, name: str = "mirrorc_model") -> SecureModel:
        """Build (cached) and load a `passes.lower_c.Lowered`."""
        lib = build_lowered(lowered.files, name=name, debug=debug)
        return cls(lib, lowered.tap_floats, lowered.num_classes, lowered.sizes["state"])

    def run(self, taps: Iterable[np.ndarray], backbone_logits: np.ndarray) -> tuple[int, np.ndarray | None]:
        """One inference; taps are float32 arrays of f_k floats each (any shape). Returns (label,
        MirrorNet logits, or None when built without debug)."""
        import numpy as np

        self.lib.mirrorc_reset(self.state)
        keep = []
        for k, tap in enumerate(taps):
            tap = np.ascontiguousarray(tap, np.float32)
            if tap.size != self.tap_floats[k]:
                raise ValueError(f"tap {k}: {tap.size} floats, expected {self.tap_floats[k]}")
            keep.append(tap)
            self.lib.mirrorc_run_tap(self.state, ctypes.c_uint(k), ctypes.c_void_p(tap.ctypes.data))
        bl = np.ascontiguousarray(backbone_logits, np.float32)
        if bl.size != self.num_classes:
            raise ValueError(f"backbone logits: {bl.size} floats, expected {self.num_classes}")
        if self.debug:
            logits = np.zeros(self.num_classes, np.float32)
            label = self.lib.mirrorc_debug_run_final(
                self.state, ctypes.c_void_p(bl.ctypes.data), ctypes.c_void_p(logits.ctypes.data)
            )
            return int(label), logits
        return int(self.lib.mirrorc_run_final(self.state, ctypes.c_void_p(bl.ctypes.data))), None


# Reads and writes `bytes` of a private buffer, a line at a time: what the CPM's data held of the caches
# is gone (the buffer is kept between calls; -1 when it cannot be allocated).
EVICT_C = r"""
static unsigned char *mirrorc_evict_buf;
static size_t mirrorc_evict_size;
static int mirrorc_evict(size_t bytes)
{
    size_t i;
    if (bytes > mirrorc_evict_size) {
        free(mirrorc_evict_buf);
        mirrorc_evict_buf = malloc(bytes);
        mirrorc_evict_size = mirrorc_evict_buf ? bytes : 0;
        if (!mirrorc_evict_buf) return -1;
    }
    for (i = 0; i < bytes; i += 64) mirrorc_evict_buf[i] += 1;
    return 0;
}
"""

_TIMER_C = r"""
#define _POSIX_C_SOURCE 199309L
#include <stddef.h>
#include <stdlib.h>
#include <time.h>
#include <stdint.h>
#include "mirrorc_model.h"
/* CPU time per inference of the generated model, measured inside C (no FFI in the loop). */
double mirrorc_time_inference(const float *const *taps, const float *logits, int iters, int32_t *label)
{
    static mirrorc_state_t state;
    struct timespec t0, t1;
    int i;
    unsigned k;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    for (i = 0; i < iters; i++) {
        mirrorc_reset(&state);
        for (k = 0; k < MIRRORC_NUM_TAPS; k++) mirrorc_run_tap(&state, k, taps[k]);
        *label = mirrorc_run_final(&state, logits);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    return ((t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec)) / iters;
}
@EVICT_C@
/* The same, cold: before every inference (untimed) `evict_bytes` of other data are read and written,
   as the normal world's backbone does between two CPM inferences on a device; each inference is
   timed on its own (CLOCK_MONOTONIC: a vDSO read, not a system call). 0 on an allocation failure. */
double mirrorc_time_inference_cold(const float *const *taps, const float *logits, int iters, size_t evict_bytes,
                                   int32_t *label)
{
    static mirrorc_state_t state;
    struct timespec t0, t1;
    double total = 0.0;
    int i;
    unsigned k;
    for (i = 0; i < iters; i++) {
        if (mirrorc_evict(evict_bytes) != 0) return 0.0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        mirrorc_reset(&state);
        for (k = 0; k < MIRRORC_NUM_TAPS; k++) mirrorc_run_tap(&state, k, taps[k]);
        *label = mirrorc_run_final(&state, logits);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        total += (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    }
    return total / iters;
}
"""


@functools.cache
def host_march(compiler: str = "gcc") -> tuple[str, ...]:
    """-march for this host's CPU as the compiler names it (-march=rocketlake rather than
    -march=native, so that the cache key differs and a build from another CPU is never reused
    here); () when the compiler cannot tell. Benchmarks and the simulator compile for the host, as
    onnxruntime's kernels pick the host's vector units too; -std=c99 keeps floating-point
    contraction off, so the results do not change."""
    try:
        out = subprocess.run(
            [compiler, "-march=native", "-Q", "--help=target"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    arch = re.search(r"^\s*-march=\s+(\S+)\s*$", out, re.M)
    return (f"-march={arch.group(1)}",) if arch else ()


def time_lowered(
    lowered: Lowered,
    taps: Iterable[np.ndarray],
    backbone_logits: np.ndarray,
    *,
    iters: int = 100,
    repeats: int = 5,
    cflags: Iterable[str] | None = None,
    evict_bytes: int = 0,
) -> tuple[float, int]:
    """Best CPU seconds per batch-1 inference of a `passes.lower_c.Lowered` (reset, every tap,
    final), timed by a loop inside C, and the label it returns; compiled for this CPU unless
    `cflags` says otherwise. With `evict_bytes`, cold: that much other data is touched before every
    inference (EVICT_C), as a device's normal world does. For benchmarks, not tests."""
    import numpy as np

    if cflags is None:
        cflags = (*DEFAULT_CFLAGS, *host_march())

    lib = load(
        build_lowered(
            dict(lowered.files, **{"model/mirrorc_timer.c": _TIMER_C.replace("@EVICT_C@", EVICT_C)}),
            name="mirrorc_timed",
            debug=False,
            cflags=cflags,
        )
    )
    lib.mirrorc_time_inference.restype = ctypes.c_double
    lib.mirrorc_time_inference_cold.restype = ctypes.c_double
    arrays = [np.ascontiguousarray(t, np.float32).ravel() for t in taps]
    for k, a in enumerate(arrays):
        if a.size != lowered.tap_floats[k]:
            raise ValueError(f"tap {k}: {a.size} floats, expected {lowered.tap_floats[k]}")
    ptrs = (ctypes.c_void_p * max(1, len(arrays)))(*[a.ctypes.data for a in arrays])
    bl = np.ascontiguousarray(backbone_logits, np.float32).ravel()
    label = ctypes.c_int32()

    def once() -> float:
        if not evict_bytes:
            return lib.mirrorc_time_inference(ptrs, ctypes.c_void_p(bl.ctypes.data), iters, ctypes.byref(label))
        seconds = lib.mirrorc_time_inference_cold(
            ptrs, ctypes.c_void_p(bl.ctypes.data), iters, ctypes.c_size_t(evict_bytes), ctypes.byref(label)
        )
        if seconds <= 0.0:
            raise MemoryError(f"time_lowered: cannot allocate {evict_bytes} bytes to evict the caches")
        return seconds

    best = min(once() for _ in range(repeats))
    return best, int(label.value)
