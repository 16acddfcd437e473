"""Errors of ``metalite.runtime.sync``; each is a ``MetaliteError`` with a one-line message."""

from __future__ import annotations

from metalite.common.errors import MetaliteError


class SyncError(MetaliteError, RuntimeError):
    """Base class of the errors raised while talking to the fleet server or applying an update."""


class ServerUnreachableError(SyncError, ConnectionError):
    """The server cannot be reached (offline, refused, timed out, connection cut); nothing was lost."""


class ServerRefusedError(SyncError):
    """The server answered with an HTTP error (bad or revoked token, request too large, ...).

    Attributes:
      status: the HTTP status code.
    """

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class UpdateRefusedError(SyncError, ValueError):
    """An offered bundle was not installed: unsigned, wrongly signed, older, corrupt or failing its health check."""


class ServerBusyError(ServerRefusedError, ServerUnreachableError):
    """The server answered that it cannot take the request now (HTTP 502/503/504/507: busy, disk full,
    database read-only); like an unreachable server, nothing was lost and the device tries again later."""


class BadAnswerError(ServerRefusedError):
    """The server's answer is not what the API promises (not JSON, wrong shape, too large); status 502."""

    def __init__(self, message: str):
        super().__init__(message, 502)
