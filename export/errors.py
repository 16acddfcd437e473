"""The one error type of metalite.export, in the runtime's ``MetaliteError`` family: a one-line, user-facing message."""
from metalite.runtime.errors import MetaliteError


class ExportError(MetaliteError, ValueError):
    """Export or inspection failed for a reason the user can act on (bad path, bad model, corrupt bundle)."""
