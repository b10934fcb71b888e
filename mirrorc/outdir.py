"""Atomic output directories: a build is written beside its target and renamed into place at the end,
so a failure never leaves a half-written directory behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `target`, on any error it is removed.

    `keep` names entries of an existing `target` that are copied into the temporary directory first
    (e.g. a training checkpoint that `--resume` needs)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in keep:
            src = target / name
            if src.is_dir():
                shutil.copytree(src, tmp / name)
            elif src.exists():
                shutil.copy2(src, tmp / name)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; renamed onto it on success, removed on error."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
