"""User-facing errors: `MirrorcError` (defined in `passes.errors`, the lowest layer that raises it)."""

from passes.errors import MirrorcError

__all__ = ["MirrorcError"]
