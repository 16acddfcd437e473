"""uvicorn's h11 protocol with a deadline for each request's headers: idle and slow clients are cut.

Plain uvicorn starts no timer before a connection's first request (only between requests, and a byte
resets it), so connections that send nothing stay open forever and count toward ``limit_concurrency``:
520 of them made every request answer 503. Here a connection must deliver the complete headers of each
request within ``HEADER_TIMEOUT`` seconds of opening (or of the previous answer) or it is closed; the
body then has ``body_timeout`` (``app._json_body``).
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0  # seconds


class DeadlineH11Protocol(H11Protocol):
    """``H11Protocol`` closing a connection whose next request headers do not arrive within ``header_timeout``."""

    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()  # nothing in progress: an idle or slow client

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # the headers of a new request arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
