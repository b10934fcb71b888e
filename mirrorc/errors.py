"""User-facing errors: one line, naming the file, node or field, exit code 2."""


class MirrorcError(Exception):
    """An error caused by the user's input. The CLI prints `mirrorc: error: <msg>` and exits 2."""

    exit_code = 2
