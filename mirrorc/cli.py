"""The `mirrorc` command line. Each command is a thin wrapper over a library function.

Errors in the user's input are `MirrorcError`s: printed as one line `mirrorc: error: ...` on stderr
with exit code 2, never a traceback."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mirrorc")
def main():
    """mirrorc: compile an ONNX classifier into a MirrorNet deployment.

    The backbone runs in onnxruntime in the normal world and is a poor model on its own; a narrow
    Companion Partial Monitor (CPM) runs in an OP-TEE Trusted Application and corrects the answer."""


# Commands are registered by their modules' `register(main)` below; each module owns its options.
def _register_all():
    import importlib

    for name in ("mirrorc.cmd_core", "mirrorc.cmd_partition", "mirrorc.cmd_train", "mirrorc.cmd_secure", "mirrorc.cmd_attack"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # not written yet
                continue
            raise
        mod.register(main)


_register_all()

if __name__ == "__main__":
    main()
