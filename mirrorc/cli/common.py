"""Shared pieces of the CLI commands: error handling, JSON output, progress bars."""

from __future__ import annotations

import functools
import json
import sys

import click

from mirrorc.errors import MirrorcError


def user_errors(fn):
    """Turn MirrorcError (and a few well-known input errors) into one line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MirrorcError as e:
            click.echo(f"mirrorc: error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("mirrorc: interrupted", err=True)
            sys.exit(130)

    return wrapper


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr; silent when stderr is not a terminal unless MIRRORC_PROGRESS=1."""
    import os

    from tqdm import tqdm

    disable = not (sys.stderr.isatty() or os.environ.get("MIRRORC_PROGRESS") == "1")
    return tqdm(iterable, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)
