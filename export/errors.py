"""The one error type of metalite.export, in the ``MetaliteError`` family: a one-line, user-facing message."""

from metalite.common.errors import MetaliteError


class ExportError(MetaliteError, ValueError):
    """Export or inspection failed for a reason the user can act on (bad path, bad model, corrupt bundle)."""
