"""Shared pieces of the CLI commands: error handling, JSON output, progress bars."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from mirrorc.errors import MirrorcError

if TYPE_CHECKING:
    from tqdm import tqdm

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn MirrorcError (and a few well-known input errors) into one line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MirrorcError as e:
            click.echo(f"mirrorc: error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("mirrorc: interrupted", err=True)
            sys.exit(130)

    return wrapper


def echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm[T]:  # kwargs: tqdm's options
    """A tqdm progress bar on stderr; silent when stderr is not a terminal unless MIRRORC_PROGRESS=1,
    and when the caller says disable=True (a rank other than 0)."""
    import os

    from tqdm import tqdm

    disable = kwargs.pop("disable", False) or not (sys.stderr.isatty() or os.environ.get("MIRRORC_PROGRESS") == "1")
    return tqdm(iterable, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)
