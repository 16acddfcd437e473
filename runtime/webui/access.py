"""Who may do what on the device page: the Host check, the access token beyond localhost, and CSRF.

- Bound to a loopback address (the default), only ``Host: localhost / 127.0.0.1 / [::1]`` is served, so a
  web site that rebinds its DNS name to 127.0.0.1 cannot read the page or its CSRF token.
- Bound to any other address, every ``/api`` request needs the access token (``X-Metalite-Token``),
  printed at start; the page takes it from the address (``#token=...``, never sent in a URL) or a field.
- Every state-changing request (POST) needs the page's CSRF token in ``X-CSRF-Token`` and a JSON body,
  and is refused when the browser says it comes from another site (``Origin``, ``Sec-Fetch-Site``). A
  cross-site form cannot set that header, and a cross-site script cannot read the page that holds it.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def is_loopback(host: str) -> bool:
    """True if binding ``host`` serves only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A random access token (12 URL-safe characters, 72 bits): short enough to type on a phone."""
    return secrets.token_urlsafe(9)


def _hostname(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class Access:
    """The rules for one server.

    Args:
      host: the address the server is bound to.
      token: the access token required beyond localhost (one is made if None).
    """

    def __init__(self, host: str, token: str | None = None):
        self.local = is_loopback(host)
        self.token = token or new_token()
        self.csrf = secrets.token_urlsafe(24)

    @property
    def needs_token(self) -> bool:
        """Whether ``/api`` requests need the access token (bound beyond localhost)."""
        return not self.local

    def refuse(self, method: str, path: str, headers) -> tuple | None:
        """``(status, one-line reason)`` if the request must be refused, else None."""
        if self.local and _hostname(headers.get("Host", "")) not in LOOPBACK_NAMES:
            return 403, "this server answers only as localhost (it is bound to a loopback address)"
        if not path.startswith("/api/"):
            return None
        if self.needs_token and not _same(headers.get("X-Metalite-Token", ""), self.token):
            return (
                401,
                "access token missing or wrong: use the token printed when the server started",
            )
        if method == "GET":
            return None
        if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site request refused"
        origin = headers.get("Origin")
        if (
            origin is not None
            and origin.split("://", 1)[-1].lower() != headers.get("Host", "").lower()
        ):
            return 403, "request from another origin refused"
        if not _same(headers.get("X-CSRF-Token", ""), self.csrf):
            return 403, "CSRF token missing or stale: reload the page"
        if headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            return 415, "requests must be JSON (Content-Type: application/json)"
        return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())
