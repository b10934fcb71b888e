"""User-facing errors: one line, naming the file, node or field, exit code 2.

The class lives with the passes, the lowest layer that raises it, so that `passes/` imports nothing
from `mirrorc`; `mirrorc.errors` is the name the rest of mirrorc uses."""


class MirrorcError(Exception):
    """An error caused by the user's input. The CLI prints `mirrorc: error: <msg>` and exits 2."""

    exit_code = 2
