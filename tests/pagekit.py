"""Helpers for the device page tests: a home running the shipped Omniglot bundle, Greek drawings from the
fixture, a real server on a free port in a thread, plain HTTP calls, and Debian's chromium via Playwright."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import threading
import zipfile
from pathlib import Path

from repo_paths import REPO
from runtime_kit import SHIPPED, installed_home

from metalite.runtime.webui import PageServer, Teacher

MINI = REPO / "tests" / "data" / "omniglot" / "mini2.zip"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FAKE_CAMERA = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)  # chromium's test pattern


def omniglot_home(path: Path):
    """A device home running a copy of ``models/omniglot`` as v1, no classes learned yet."""
    return installed_home(path, SHIPPED, 1)


def greek(dst: Path, characters=(1, 2, 3)) -> dict:
    """``{"character01": [png paths of drawers 1..6], ...}``: Greek drawings from the fixture (one of the
    shipped bundle's 18 training alphabets), extracted to ``dst``."""
    out = {}
    with zipfile.ZipFile(MINI) as z:
        for c in characters:
            name = f"character{c:02d}"
            files = sorted(n for n in z.namelist() if f"/Greek/{name}/" in n and n.endswith(".png"))
            folder = dst / name
            folder.mkdir(parents=True, exist_ok=True)
            out[name] = []
            for n in files:
                p = folder / Path(n).name
                p.write_bytes(z.read(n))
                out[name].append(p)
    return out


@contextlib.contextmanager
def serving(home, host: str = "127.0.0.1", **kwargs):
    """A ``PageServer`` over ``home`` on a free port, serving from a thread while the block runs."""
    server = PageServer((host, 0), Teacher(home, delegate="cpu"), **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def call(
    server, method: str, path: str, body=None, headers=None, raw: bytes | None = None
) -> tuple:
    """One HTTP request to ``server`` over 127.0.0.1: ``(status, parsed JSON or text)``."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Host": f"127.0.0.1:{server.server_address[1]}"}
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
    finally:
        conn.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def page_csrf(server) -> str:
    """The CSRF token the page carries (as a browser would read it)."""
    status, html = call(server, "GET", "/")
    assert status == 200
    return re.search(r'const CSRF = "([^"]+)"', html).group(1)


@contextlib.contextmanager
def chromium(*extra_args: str):
    """A headless Debian chromium driven by Playwright, or ``pytest.skip`` with the reason it cannot run."""
    import pytest

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; .ci/run installs it)")
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + list(extra_args), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
