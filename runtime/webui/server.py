"""The device page's HTTP server (standard library ``http.server``): one page and a small JSON API.

    GET  /                 the page (inline CSS and JS, no external assets)
    GET  /api/status       bundle version, accuracy, how the backbone runs, classes with thumbnails, outbox
    POST /api/teach        {"label": L, "images": [{"name": N, "data": BASE64}, ...]}
    POST /api/recognize    {"image": {"name": N, "data": BASE64}}  -> top classes, confidences, ms, id
    POST /api/correct      {"id": ID, "label": L}    (to the outbox as a correction, and learned)
    POST /api/rename       {"label": L, "new_label": M}
    POST /api/remove       {"label": L}

Errors are ``{"error": "one line"}`` with a 4xx status. Bodies are limited to ``max_body`` bytes (413
beyond; a body up to ``DRAIN_LIMIT`` is read and dropped first so the browser sees the answer instead of
a reset connection); images are decoded within the runtime's pixel budget. ``access.py`` has the rules.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from metalite.common.errors import MetaliteError, one_line

from .access import Access
from .tls import WebError

log = logging.getLogger("metalite.runtime.webui")

MAX_BODY = 16 << 20  # bytes per request (a phone photo is 2-5 MB, base64 adds a third)
DRAIN_LIMIT = 128 << 20  # an oversized body up to this is read and dropped before answering 413
BODIES = (
    2  # request bodies held in memory at once (others wait): memory stays bounded with many clients
)
MIN_TOKEN = 8  # characters of a token given with --token
PAGE = Path(__file__).with_name("page.html")


class PageServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the ``Teacher``, the ``Access`` rules and the page.

    Args:
      address: (host, port); port 0 picks a free one (see ``server_address``).
      teacher: a ``metalite.runtime.webui.Teacher``.
      token: the access token beyond localhost (made if None; ``access.token``).
      max_body: largest request body in bytes.
      tls: an ``ssl.SSLContext`` to serve https, or None.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address,
        teacher,
        token: str | None = None,
        max_body: int = MAX_BODY,
        tls: ssl.SSLContext | None = None,
    ):
        try:
            super().__init__(address, Handler)
        except OSError as e:
            raise WebError(
                f"cannot listen on {address[0]}:{address[1]}: {e.strerror or e}"
            ) from None
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        if token is not None and len(token) < MIN_TOKEN:
            raise WebError(
                f"the access token must have at least {MIN_TOKEN} characters (a short PIN can be guessed)"
            )
        self.teacher, self.max_body, self.https = teacher, int(max_body), tls is not None
        self.access = Access(address[0], token)
        self.bodies = threading.BoundedSemaphore(BODIES)
        self.page = PAGE.read_text(encoding="utf-8")

    @property
    def url(self) -> str:
        """The address to open: the bound host, or this machine's LAN address when bound to all of them."""
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = lan_address()
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.https else 'http'}://{host}:{port}/"


def lan_address() -> str:
    """This machine's address on its default route (what a phone on the same network types), or 127.0.0.1.

    Connecting a UDP socket sends nothing; it only makes the kernel pick the outgoing interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class _Refused(MetaliteError, ValueError):
    """A request the page refuses before it reaches the teacher; ``status`` is the HTTP status that fits."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    """One request: access rules, then the route."""

    server: PageServer
    timeout = 60  # seconds a client may stall mid-request
    disable_nagle_algorithm = (
        True  # headers and body are two writes: Nagle + delayed ACK would add 40 ms
    )
    server_version = "metalite-device"
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    sys_version = ""

    def log_message(
        self, fmt, *args
    ) -> None:  # http.server prints to stderr; the library logs instead
        log.info("%s %s", self.address_string(), fmt % args)

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": " ".join(str(message).split())[:500]})

    def _body(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _Refused(411, "the request needs a Content-Length")
        n, limit = int(length), self.server.max_body
        if n > limit:
            self.close_connection = True
            left = n if n <= DRAIN_LIMIT else 0
            while (
                left > 0
            ):  # read it (and drop it) so the browser gets the answer, not a reset connection
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
            raise _Refused(
                413,
                f"upload of {int(length) / 2**20:.1f} MiB is larger than the "
                f"{limit / 2**20:.0f} MiB allowed per request",
            )
        try:
            body = json.loads(self.rfile.read(n))
        except ValueError:
            raise _Refused(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Refused(400, "the request body must be a JSON object")
        return body

    def _check(self) -> bool:
        refused = self.server.access.refuse(self.command, self.path.split("?")[0], self.headers)
        if refused is not None:
            if self.command == "POST":
                self.close_connection = True  # the body was not read
            self._error(*refused)
            return False
        return True

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:
        if not self._check():
            return
        path = self.path.split("?")[0]
        if path in ("/", "/index.html"):
            nonce = secrets.token_urlsafe(12)
            page = (
                self.server.page.replace("__CSRF__", self.server.access.csrf)
                .replace("__NEEDS_TOKEN__", "true" if self.server.access.needs_token else "false")
                .replace("__MAX_BODY__", str(self.server.max_body))
                .replace("__NONCE__", nonce)
            )
            csp = (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data: blob:; "
                "media-src blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'"
            )
            self._send(
                200,
                page.encode(),
                "text/html; charset=utf-8",
                {"Content-Security-Policy": csp, "X-Frame-Options": "DENY"},
            )
        elif path == "/api/status":
            self._run(
                lambda t, _: dict(
                    t.status(),
                    needs_token=self.server.access.needs_token,
                    max_body=self.server.max_body,
                ),
                body=False,
            )
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._error(404, f"no such page: {path[:100]}")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._check():
            return
        route = ROUTES.get(self.path.split("?")[0])
        if route is None:
            self.close_connection = True
            self._error(404, f"no such action: {self.path[:100]}")
            return
        self._run(route)

    def _run(self, route, body: bool = True) -> None:
        if body and not self.server.bodies.acquire(timeout=30):
            self.close_connection = True
            self._error(503, "the device is busy with other uploads; try again")
            return
        try:
            result = route(self.server.teacher, self._body() if body else None)
        except _Refused as e:
            self._error(e.status, str(e))
        except MetaliteError as e:
            self._error(400, str(e))
        except OSError as e:
            log.exception("request failed")
            self._error(500, f"the device could not save it: {e.strerror or e}")
        except Exception as e:  # a bug: the page still gets one line, the log gets the traceback
            log.exception("request failed")
            self._error(500, f"internal error: {one_line(e)}")
        else:
            self._json(200, result)
        finally:
            if body:
                self.server.bodies.release()


def _image(item, what: str) -> tuple:
    """``{"name": N, "data": BASE64}`` (or a data: URL) -> (name, bytes)."""
    if not isinstance(item, dict) or not isinstance(item.get("data"), str):
        raise _Refused(400, f'{what}: expected {{"name": ..., "data": base64}}')
    name = str(item.get("name") or what)[:100]
    data = item["data"]
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(400, f"{name}: the image data is not base64") from None
    if not raw:
        raise _Refused(400, f"{name}: empty file")
    return name, raw


def _teach(t, body):
    images = body.get("images")
    if not isinstance(images, list):
        raise _Refused(400, 'teach needs "images": a list')
    return t.teach(
        body.get("label"), [_image(item, f"image {i + 1}") for i, item in enumerate(images)]
    )


ROUTES = {
    "/api/teach": _teach,
    "/api/recognize": lambda t, b: t.recognize(*_image(b.get("image"), "image")),
    "/api/correct": lambda t, b: t.correct(b.get("id"), b.get("label")),
    "/api/rename": lambda t, b: t.rename(b.get("label"), b.get("new_label")),
    "/api/remove": lambda t, b: t.remove(b.get("label")),
}
