"""HTTP client for the fleet server, standard library only (urllib): JSON calls and checked downloads.

Every failure is one of ``ServerUnreachableError`` (no answer, connection cut: try again later),
``ServerBusyError`` (HTTP 502/503/504/507: try again later), ``ServerRefusedError`` (another HTTP error,
with the server's one-line reason), ``BadAnswerError`` (an answer that is too long, not JSON or, in the
callers' checks, of the wrong shape) or, for downloads, ``UpdateRefusedError`` (truncated, too long or
wrong sha256). Every read is bounded by what the answer can legitimately be.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..names import terminal_safe
from .errors import (
    BadAnswerError,
    ServerBusyError,
    ServerRefusedError,
    ServerUnreachableError,
    SyncError,
    UpdateRefusedError,
)

_CHUNK = 1 << 16
MAX_ANSWER = (
    1 << 20
)  # bytes of a JSON answer unless the call says more (a shared class: ``classes.MAX_CLASS_ANSWER``)
_BUSY = (502, 503, 504, 507)  # the server cannot take it now: try again at the next sync
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
)


def _detail(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read(4096).decode("utf-8", "replace"))
        detail = body.get("detail") if isinstance(body, dict) else None
    except (ValueError, OSError, RecursionError, http.client.HTTPException):
        detail = None
    text = str(detail or err.reason or "").strip()
    return terminal_safe(text.splitlines()[0][:300]) if text else ""


class FleetClient:
    """Talks to one fleet server.

    Args:
      server: base URL, ``http://host:port`` or ``https://...``.
      token: the device token from ``metalite fleet enroll`` (None: only public endpoints work).
      timeout: seconds to wait for each connect/read.
    """

    def __init__(self, server: str, token: str | None, timeout: float = 30.0):
        url = urllib.parse.urlsplit(str(server))
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SyncError(f"server must be an http:// or https:// URL, got {server!r}")
        self.server = str(server).rstrip("/")
        self.token = token
        self.timeout = float(timeout)

    def _open(self, method: str, path: str, body: bytes | None = None):
        headers = {"Accept": "application/json", "User-Agent": "metalite-sync"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.server + path, data=body, headers=headers, method=method)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            kind = ServerBusyError if e.code in _BUSY else ServerRefusedError
            raise kind(f"{method} {path}: HTTP {e.code} {_detail(e)}".rstrip(), e.code) from None
        except _NETWORK_ERRORS as e:
            reason = getattr(e, "reason", None) or e
            raise ServerUnreachableError(f"cannot reach {self.server} ({reason})") from None

    def call(
        self,
        method: str,
        path: str,
        payload=None,
        missing_ok: bool = False,
        max_bytes: int = MAX_ANSWER,
    ):
        """Send JSON (or nothing), return the decoded JSON answer; None for HTTP 404 if ``missing_ok``.

        An answer longer than ``max_bytes``, not JSON or nested too deeply is a ``BadAnswerError``: a hostile
        or broken server costs at most ``max_bytes`` of memory.
        """
        body = (
            None if payload is None else json.dumps(payload, separators=(",", ":")).encode("utf-8")
        )
        try:
            with self._open(method, path, body) as resp:
                data = resp.read(max_bytes + 1)
        except ServerRefusedError as e:
            if missing_ok and e.status == 404:
                return None
            raise
        except _NETWORK_ERRORS as e:
            raise ServerUnreachableError(f"{method} {path}: connection cut ({e})") from None
        if len(data) > max_bytes:
            raise BadAnswerError(
                f"{method} {path}: the server's answer is longer than {max_bytes} bytes; ignored"
            )
        try:
            return json.loads(data.decode("utf-8")) if data else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadAnswerError(f"{method} {path}: the server's answer is not JSON") from None

    def download(self, path: str, dest, expected_bytes: int, expected_sha256: str) -> None:
        """Stream ``path`` into the file ``dest``, checking its size and sha256 on the way.

        Raises:
          UpdateRefusedError: the body is shorter or longer than ``expected_bytes`` or its hash differs
            (``dest`` is removed).
          ServerRefusedError, ServerUnreachableError: as for ``call``.
        """
        dest = Path(dest)
        h, n = hashlib.sha256(), 0
        try:
            with self._open("GET", path) as resp, open(dest, "wb") as f:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) != expected_bytes:
                    raise UpdateRefusedError(
                        f"{dest.name}: the server sends {length} bytes, the signed release says "
                        f"{expected_bytes}; refused"
                    )
                while True:
                    try:
                        block = resp.read(min(_CHUNK, expected_bytes - n + 1))
                    except (
                        http.client.IncompleteRead,
                        ConnectionError,
                        socket.timeout,
                        TimeoutError,
                    ) as e:
                        raise UpdateRefusedError(
                            f"{dest.name}: download cut after {n} of {expected_bytes} bytes "
                            f"({type(e).__name__}); refused"
                        ) from None
                    if not block:
                        break
                    n += len(block)
                    if n > expected_bytes:
                        raise UpdateRefusedError(
                            f"{dest.name}: server sent more than the signed {expected_bytes} "
                            "bytes; refused"
                        )
                    h.update(block)
                    f.write(block)
                f.flush()
                os.fsync(f.fileno())
            if n != expected_bytes:
                raise UpdateRefusedError(
                    f"{dest.name}: truncated download ({n} of {expected_bytes} bytes, the "
                    "connection ended early); refused"
                )
            if h.hexdigest() != expected_sha256:
                raise UpdateRefusedError(
                    f"{dest.name}: sha256 {h.hexdigest()[:12]}… does not match the signed "
                    f"{expected_sha256[:12]}…; refused"
                )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
