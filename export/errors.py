"""The one error type of metalite.export: a one-line, user-facing message (the CLI shows it without a traceback)."""


class ExportError(ValueError):
    """Export or inspection failed for a reason the user can act on (bad path, bad model, corrupt bundle)."""
