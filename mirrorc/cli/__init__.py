"""The `mirrorc` command line. Each command is a thin wrapper over a library function.

Errors in the user's input are `MirrorcError`s: printed as one line `mirrorc: error: ...` on stderr
with exit code 2, never a traceback."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mirrorc")
def main() -> None:
    """mirrorc: compile an ONNX classifier into a MirrorNet deployment.

    The backbone runs in onnxruntime in the normal world and is a poor model on its own; a narrow
    Companion Partial Monitor (CPM) runs in an OP-TEE Trusted Application and corrects the answer."""


# One module per subcommand; each owns its options and registers itself on the group.
from mirrorc.cli import attack, check, compile, evaluate, inspect, partition, profile, run  # noqa: E402

for _command in (inspect, check, partition, compile, evaluate, run, attack, profile):
    _command.register(main)
