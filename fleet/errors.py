"""Errors of ``metalite.fleet`` (the server side); one-line messages, ``MetaliteError`` like the runtime's."""
from __future__ import annotations

from metalite.runtime.errors import MetaliteError


class FleetError(MetaliteError, ValueError):
    """A fleet admin operation cannot be done (unknown device, bad bundle, missing root, ...)."""
