"""Errors of ``metalite.fleet`` (the server side); one-line messages, ``MetaliteError`` like the runtime's."""

from __future__ import annotations

from metalite.common.errors import MetaliteError


class FleetError(MetaliteError, ValueError):
    """A fleet admin operation cannot be done (unknown device, bad bundle, missing root, ...)."""


class RequestRefused(FleetError):
    """A client request the server refuses; ``status`` is the HTTP status (4xx) that fits, the message names
    the field."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status
