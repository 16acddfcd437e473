"""Hypothesis properties of the fleet link, both ways, over real HTTP on 127.0.0.1.

- The server (a real ``metalite serve`` with real SQLite) answers any request body with a 2xx, or a 4xx
  whose ``detail`` is one line: never a 500, never a dropped connection.
- The device, talking to a hostile server that answers anything at all, raises only its typed one-line
  errors (``SyncError`` subclasses) and keeps running what it ran.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetkit import Server, request

from metalite.fleet import FleetRoot, enroll
from metalite.runtime.sync import (
    BadAnswerError,
    DeviceHome,
    FleetClient,
    Outbox,
    SyncError,
    fetch_class,
    shared_classes,
    sync,
)


def profile(n: int):
    return settings(
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        max_examples=n,
    )


# JSON values a hostile client or server would send: huge integers, lone surrogates, control characters,
# floats out of range, wrong types, nesting
TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["a\ud800", "\x1b[2J", "x\ny", "", " ", "a/b", "state.npz"]),
)
ATOM = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    ATOM,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


def _field(valid, bad=JSON):
    return st.one_of(st.just(valid), bad)


EXAMPLE = st.fixed_dictionaries(
    {},
    optional={
        "id": _field("ex-12345678"),
        "kind": _field("unsure"),
        "label": _field("cat"),
        "predicted": _field(3),
        "confidence": _field(0.5),
        "version": _field(1),
        "created": _field(1.7e9),
        "height": _field(2),
        "width": _field(2),
        "pixels": _field("AAECAw=="),
    },
)
REPORT = st.fixed_dictionaries(
    {},
    optional={
        "version": _field(1),
        "pending": _field(0),
        "has_state": _field(True),
        "platform": _field("Linux"),
        "event": _field("failed"),
        "offered": _field(2),
        "reason": _field("bad"),
        "health": JSON,
        "seconds": JSON,
    },
)
IMAGE = st.fixed_dictionaries(
    {}, optional={"height": _field(1), "width": _field(1), "pixels": _field("AA==")}
)
CLASS = st.fixed_dictionaries(
    {},
    optional={
        "name": _field("cls"),
        "images": st.one_of(st.lists(IMAGE, max_size=3), JSON),
        "version": _field(1),
        "replace": _field(True),
    },
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet22p")
    token = enroll(FleetRoot(d / "root", create=True), "dev-p")
    srv = Server(d / "root", d / "serve.log").start()
    yield srv, token
    srv.stop()
    assert "Traceback" not in (d / "serve.log").read_text()


def _only_4xx_with_a_reason(status: int, got) -> None:
    assert status < 500, (status, got)
    if status >= 400:
        assert isinstance(got, dict) and isinstance(got.get("detail"), str) and got["detail"], got
        assert "\n" not in got["detail"]


@profile(60)
@given(
    body=st.one_of(
        st.fixed_dictionaries({"examples": st.lists(st.one_of(EXAMPLE, JSON), max_size=5)}), JSON
    )
)
def test_any_upload_body_is_answered_2xx_or_4xx_with_a_reason(fleet, body):
    srv, token = fleet
    status, got = request(srv, "POST", "/v1/examples", body, token)
    _only_4xx_with_a_reason(status, got)
    if status == 200:
        assert got["stored"] + got["duplicates"] + len(got["rejected"]) == len(body["examples"])


@profile(50)
@given(body=st.one_of(REPORT, JSON))
def test_any_report_body_is_answered_2xx_or_4xx_with_a_reason(fleet, body):
    srv, token = fleet
    _only_4xx_with_a_reason(*request(srv, "POST", "/v1/report", body, token))


@profile(50)
@given(body=st.one_of(CLASS, JSON), name=TEXT)
def test_any_class_share_or_lookup_is_answered_2xx_or_4xx_with_a_reason(fleet, body, name):
    import urllib.parse

    srv, token = fleet
    _only_4xx_with_a_reason(*request(srv, "POST", "/v1/classes", body, token))
    quoted = urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
    _only_4xx_with_a_reason(*request(srv, "GET", "/v1/classes/" + quoted, token=token))


# ---------------------------------------------------------------------------------------------- hostile server
class Hostile(http.server.ThreadingHTTPServer):
    """Answers every request with ``self.answers[(method, path prefix)]`` = (status, body bytes)."""

    daemon_threads = True

    def __init__(self):
        self.answers: dict = {}
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        key = next(
            (k for k in self.server.answers if k[0] == method and self.path.startswith(k[1])), None
        )
        status, body = self.server.answers.get(key, (404, b'{"detail": "no"}'))
        if body == "endless":
            self.send_response(status)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"[" * 65536)
            except OSError:
                return
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")


@pytest.fixture(scope="module")
def hostile():
    srv = Hostile()
    yield srv
    srv.shutdown()


def _body(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return json.dumps(value).encode("utf-8", "surrogatepass")


ANSWER = st.one_of(
    JSON,
    st.binary(max_size=30),
    st.sampled_from([[], "x", 7, {}, {"ids": "x"}, {"ids": [], "stored": -1, "duplicates": 0}]),
)
OFFER = st.one_of(
    ANSWER,
    st.fixed_dictionaries(
        {"version": JSON, "release": st.one_of(TEXT, JSON), "signature": st.one_of(TEXT, JSON)}
    ),
)
STATUS = st.sampled_from([200, 200, 200, 201, 400, 404, 413, 500, 503, 507])


def _one_line_sync_error(e: BaseException) -> None:
    assert isinstance(e, SyncError), f"{type(e).__name__}: {e}"
    assert "\n" not in str(e) and str(e)


@profile(60)
@given(
    upload=st.tuples(STATUS, ANSWER),
    offer=st.tuples(STATUS, OFFER),
    report=st.tuples(STATUS, ANSWER),
)
def test_the_device_survives_any_server_answer_with_a_typed_one_line_error(
    hostile, tmp_path_factory, upload, offer, report
):
    home = DeviceHome(tmp_path_factory.mktemp("home"))
    Outbox(home.root / "outbox.sqlite").add("unsure", np.zeros((1, 2, 2), np.uint8))
    hostile.answers = {
        ("POST", "/v1/examples"): (upload[0], _body(upload[1])),
        ("GET", "/v1/releases/latest"): (offer[0], _body(offer[1])),
        ("POST", "/v1/report"): (report[0], _body(report[1])),
    }
    try:
        r = sync(
            home, hostile.url, "tok", None, allow_unsigned=True, share_support=False, timeout=10
        )
    except Exception as e:  # noqa: BLE001 - the property: only SyncError, one line
        _one_line_sync_error(e)
    else:
        assert r.update is None or r.update.status in ("refused", "failed"), r.update
        assert "\n" not in (r.update.reason if r.update else "")
    assert home.version is None  # nothing was installed from garbage
    assert Outbox(home.root / "outbox.sqlite").pending() <= 1


@profile(60)
@given(
    listing=st.tuples(STATUS, ANSWER),
    one=st.tuples(
        STATUS,
        st.one_of(
            ANSWER, st.fixed_dictionaries({"images": st.lists(st.one_of(IMAGE, JSON), max_size=3)})
        ),
    ),
)
def test_class_library_calls_survive_any_server_answer(hostile, listing, one):
    hostile.answers = {
        ("GET", "/v1/classes/"): (one[0], _body(one[1])),
        ("GET", "/v1/classes"): (listing[0], _body(listing[1])),
    }
    client = FleetClient(hostile.url, "tok", timeout=10)
    for call in (lambda: shared_classes(client), lambda: fetch_class(client, "cat")):
        try:
            call()
        except Exception as e:  # noqa: BLE001
            _one_line_sync_error(e)


def test_an_endless_answer_is_cut_at_its_bound(hostile):
    hostile.answers = {("GET", "/v1/classes"): (200, "endless")}
    client = FleetClient(hostile.url, "tok", timeout=10)
    t = time.monotonic()
    with pytest.raises(BadAnswerError, match="longer than"):
        shared_classes(client)
    assert time.monotonic() - t < 10
