"""``metalite device serve``: the device page over a real server on 127.0.0.1 and the shipped Omniglot bundle.

The browser test drives Debian's chromium (Playwright) through the page: teach three classes from files,
recognize held-out drawings, correct a wrong answer with one click, rename and remove, reload, and the
page's one-line errors for a 50 MB file and a corrupt image. The others talk HTTP: the access token
beyond localhost, CSRF and Host checks, the body limit, atomic state changes and the watch mode.
Screenshots go to ``$METALITE_PAGE_SCREENSHOTS`` when set (docs/device_page.md), else to a temporary folder.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pagekit import FAKE_CAMERA, call, chromium, greek, omniglot_home, page_csrf, serving
from runtime_kit import assert_one_line

from metalite.runtime.errors import InputError
from metalite.runtime.state import load_state
from metalite.runtime.webui import Access, Teacher, Watcher

NAMES = {"character01": "alpha", "character02": "beta", "character03": "gamma"}


def b64(path: Path) -> dict:
    return {"name": path.name, "data": base64.b64encode(path.read_bytes()).decode()}


def _classes_on_page(page) -> dict:
    return {
        card.get_attribute("data-label"): card.query_selector(".count").inner_text()
        for card in page.query_selector_all("#classes .cls")
    }


def _recognize(page, path: Path) -> str:
    """Recognize one file through the page; the top answer's label."""
    page.evaluate("document.getElementById('result').replaceChildren()")
    page.set_input_files("#recognize-file", str(path))
    page.wait_for_selector("#result .time")
    return page.inner_text("#result .answer .name")


def _teach(page, label: str, paths) -> None:
    page.fill("#teach-label", label)
    page.set_input_files("#teach-files", [str(p) for p in paths])
    page.wait_for_selector(f"#pending-count:has-text('{len(paths)} images ready')")
    page.click("#teach-go")
    page.wait_for_selector(f"#notice:has-text('taught {len(paths)} images to {label}')")


def _error_line(page) -> str:
    page.wait_for_selector("#error.show")
    text = page.inner_text("#error")
    assert text and "\n" not in text and len(text) < 300, text
    return text


@pytest.mark.slow
def test_teach_recognize_correct_rename_remove_through_the_page_in_chromium(tmp_path):
    home = omniglot_home(tmp_path / "home")
    imgs = greek(tmp_path / "img")
    shots = Path(os.environ.get("METALITE_PAGE_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with chromium() as browser, serving(home) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url)
        page.wait_for_selector("#classes .empty")
        assert "bundle v1" in page.inner_text("#bundle") and "XNNPACK" in page.inner_text("#accel")
        # two classes from files, then a drawing of a third character: the answer is necessarily wrong
        for char in ("character01", "character02"):
            _teach(page, NAMES[char], imgs[char][:3])
        assert _recognize(page, imgs["character03"][3]) in ("alpha", "beta")
        # teach the third class; the wrong answer still shown now offers it: one click corrects it
        _teach(page, "gamma", imgs["character03"][:3])
        page.click("#result .fix button.correct:has-text('gamma')")
        page.wait_for_selector("#notice:has-text('corrected to gamma')")
        assert _classes_on_page(page) == {
            "alpha": "3 images",
            "beta": "3 images",
            "gamma": "4 images",
        }
        corrections = [r for r in home.outbox().oldest(100) if r["kind"] == "correction"]
        assert [(r["label"], r["version"]) for r in corrections] == [("gamma", 1)]
        # ReportingClassifier.correct records what the classifier says at correction time (gamma is known by now)
        assert corrections[0]["predicted"] in NAMES.values() and corrections[0]["height"] == 28
        st = load_state(home.state_path())
        assert st.classes == ["alpha", "beta", "gamma"] and np.bincount(
            st.support_labels
        ).tolist() == [3, 3, 4]
        # held-out drawings (other people's) of the three characters
        held_out = [
            (NAMES[c], p) for c in NAMES for p in imgs[c][3:] if p != imgs["character03"][3]
        ]
        right = sum(_recognize(page, p) == label for label, p in held_out)
        assert right >= len(held_out) - 1, f"{right}/{len(held_out)} held-out drawings recognized"
        assert "answered in" in page.inner_text("#result .time")
        page.screenshot(path=str(shots / "device_page_desktop.png"), full_page=True)
        phone = browser.new_page(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
        phone.goto(server.url)
        phone.wait_for_selector("#classes .cls")
        _recognize(phone, imgs["character01"][4])
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px phone screen"
        phone.screenshot(path=str(shots / "device_page_phone.png"), full_page=True)
        phone.close()
        # a reload shows the same classes (from the saved state)
        page.reload()
        page.wait_for_selector("#classes .cls")
        assert _classes_on_page(page) == {
            "alpha": "3 images",
            "beta": "3 images",
            "gamma": "4 images",
        }
        # rename and remove
        card = "#classes .cls[data-label='beta']"
        page.click(f"{card} button.rename")
        page.fill(f"{card} input.new-name", "beta (β)")
        page.click(f"{card} button.save")
        page.wait_for_selector("#notice:has-text('renamed to beta (β)')")
        page.click("#classes .cls[data-label='alpha'] button.remove")
        page.click("#classes .cls[data-label='alpha'] button.remove")  # the second click confirms
        page.wait_for_selector("#notice:has-text('removed alpha')")
        assert _classes_on_page(page) == {"beta (β)": "3 images", "gamma": "4 images"}
        assert load_state(home.state_path()).classes == ["beta (β)", "gamma"]
        assert _recognize(page, imgs["character02"][5]) == "beta (β)"
        # bad files: one line in the page each, nothing changed
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
        page.set_input_files("#recognize-file", str(tmp_path / "broken.png"))
        assert "broken.png: cannot decode image" in _error_line(page)
        big = tmp_path / "big.png"
        with open(big, "wb") as f:
            f.truncate(50 << 20)
        page.set_input_files("#teach-files", str(big))
        assert "big.png: 50.0 MiB is larger than" in _error_line(page)
        page.fill("#teach-label", "gamma")
        page.set_input_files("#teach-files", str(tmp_path / "broken.png"))
        page.click("#teach-go")
        page.wait_for_function(
            "() => document.getElementById('error').textContent.includes('broken.png')"
        )
        assert "broken.png: cannot decode image" in _error_line(page)
        assert _classes_on_page(page) == {"beta (β)": "3 images", "gamma": "4 images"}
        # the server's own limit, for a client that skips the page's check: the page shows its one line
        page.evaluate("""() => fetch('/api/teach', {method: 'POST', body: JSON.stringify({label: 'x',
            images: [{name: 'huge.png', data: 'A'.repeat(20 << 20)}]}),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': CSRF}})
            .then(r => r.json()).then(d => showError(d.error))""")
        assert "larger than the 16 MiB allowed per request" in _error_line(page)


@pytest.mark.slow
def test_teach_and_recognize_from_the_camera_in_chromium(tmp_path):
    """getUserMedia on localhost with chromium's fake camera (a moving test pattern) instead of a real one."""
    home = omniglot_home(tmp_path / "home")
    imgs = greek(tmp_path / "img")
    with chromium(*FAKE_CAMERA) as browser, serving(home) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["camera"], origin=server.url.rstrip("/"))
        page = context.new_page()
        page.goto(server.url)
        page.wait_for_selector("#classes .empty")
        _teach(page, "alpha", imgs["character01"][:2])
        page.click("#camera-toggle")
        page.wait_for_selector("#camera.on")
        page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
        for _ in range(2):
            page.click("#camera-teach")
        page.wait_for_selector("#pending-count:has-text('2 images ready')")
        page.fill("#teach-label", "pattern")
        page.click("#teach-go")
        page.wait_for_selector("#notice:has-text('taught 2 images to pattern')")
        st = load_state(home.state_path())
        assert st.classes == ["alpha", "pattern"] and np.bincount(st.support_labels).tolist() == [
            2,
            2,
        ]
        page.click("#camera-recognize")
        page.wait_for_selector("#result .time")
        assert page.inner_text("#result .answer .name") == "pattern"
        page.click("#camera-toggle")
        page.wait_for_selector("#camera:not(.on)", state="attached")
        assert page.evaluate("stream === null")  # the camera is released
        context.close()


def test_the_page_beyond_localhost_asks_for_the_token_and_takes_it_from_the_address(tmp_path):
    home = omniglot_home(tmp_path / "home")
    with chromium() as browser, serving(home, host="0.0.0.0", token="phone-token-1") as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(url)
        page.wait_for_selector("#token-card.show")
        assert "access token" in _error_line(page)
        page.fill("#token", "phone-token-1")
        page.click("#token-save")
        page.wait_for_selector("#classes .empty")
        assert not page.is_visible("#token-card")
        other = (
            browser.new_context().new_page()
        )  # a fresh browser profile, as a phone opening the printed address
        other.goto(url + "#token=phone-token-1")
        other.wait_for_selector("#classes .empty")
        assert other.evaluate("location.hash") == "" and other.evaluate(
            "localStorage.getItem('metalite-token')"
        )


def test_beyond_localhost_every_api_request_needs_the_token(tmp_path):
    home = omniglot_home(tmp_path / "home")
    with serving(home, host="0.0.0.0", token="s3cret-token") as server:
        assert server.access.needs_token
        csrf = page_csrf(server)  # the page itself is public: it asks for the token
        status, body = call(server, "GET", "/api/status")
        assert status == 401 and "access token" in body["error"]
        teach = {"label": "a", "images": [b64(greek(tmp_path / "img")["character01"][0])]}
        status, body = call(server, "POST", "/api/teach", teach, {"X-CSRF-Token": csrf})
        assert status == 401 and not home.state_path().exists()
        status, body = call(
            server, "POST", "/api/teach", teach, {"X-CSRF-Token": csrf, "X-Metalite-Token": "wrong"}
        )
        assert status == 401
        status, body = call(
            server,
            "POST",
            "/api/teach",
            teach,
            {"X-CSRF-Token": csrf, "X-Metalite-Token": "s3cret-token"},
        )
        assert (
            status == 200
            and body["classes"] == 1
            and load_state(home.state_path()).classes == ["a"]
        )


def test_state_changes_need_the_csrf_token_and_the_same_origin_and_localhost_names(tmp_path):
    home = omniglot_home(tmp_path / "home")
    img = greek(tmp_path / "img")["character01"][0]
    with serving(home) as server:
        assert not server.access.needs_token
        csrf = page_csrf(server)
        teach = {"label": "a", "images": [b64(img)]}
        for headers, why in (
            ({}, "CSRF"),
            ({"X-CSRF-Token": "guess"}, "CSRF"),
            ({"X-CSRF-Token": csrf, "Origin": "http://evil.example"}, "another origin"),
            ({"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}, "cross-site"),
            ({"X-CSRF-Token": csrf, "Host": "evil.example:80"}, "localhost"),
        ):
            status, body = call(server, "POST", "/api/teach", teach, headers)
            assert status == 403 and why in body["error"], (headers, body)
        status, body = call(
            server,
            "POST",
            "/api/teach",
            raw=b"label=a",
            headers={"X-CSRF-Token": csrf, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 415
        status, body = call(
            server, "GET", "/", headers={"Host": "rebound.example"}
        )  # DNS rebinding
        assert status == 403 and isinstance(body, dict)
        assert not home.state_path().exists()
        status, body = call(server, "POST", "/api/teach", teach, {"X-CSRF-Token": csrf})
        assert status == 200 and load_state(home.state_path()).classes == ["a"]


def test_oversized_and_corrupt_uploads_are_one_line_errors_and_change_nothing(tmp_path):
    home = omniglot_home(tmp_path / "home")
    imgs = greek(tmp_path / "img")["character01"]
    with serving(home) as server:
        csrf = {"X-CSRF-Token": page_csrf(server)}
        assert (
            call(server, "POST", "/api/teach", {"label": "a", "images": [b64(imgs[0])]}, csrf)[0]
            == 200
        )
        before = home.state_path().read_bytes()
        big = {
            "label": "a",
            "images": [{"name": "big.png", "data": base64.b64encode(bytes(50 << 20)).decode()}],
        }
        status, body = call(server, "POST", "/api/teach", big, csrf)
        assert status == 413 and body["error"].startswith(
            "upload of 66.7 MiB is larger than the 16 MiB"
        ), body
        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (5000, 5000), 255).save(
            buf, "PNG"
        )  # 25 Mpx: above the runtime's 4096 x 4096 budget
        cases = [
            (
                {"name": "x.png", "data": base64.b64encode(b"not an image at all").decode()},
                "x.png: cannot decode",
            ),
            ({"name": "y.png", "data": "%%%"}, "not base64"),
            (
                {"name": "wide.png", "data": base64.b64encode(buf.getvalue()).decode()},
                "decoding budget",
            ),
        ]
        for image, why in cases:
            for route, body in (
                ("/api/teach", {"label": "a", "images": [b64(imgs[1]), image]}),
                ("/api/recognize", {"image": image}),
            ):
                status, answer = call(server, "POST", route, body, csrf)
                assert status == 400 and why in answer["error"] and "\n" not in answer["error"], (
                    route,
                    answer,
                )
        for route, body, why in (
            ("/api/teach", {"label": "", "images": [b64(imgs[1])]}, "empty"),
            ("/api/teach", {"label": None, "images": [b64(imgs[1])]}, "label None"),
            ("/api/correct", {"id": 99, "label": "a"}, "no recent answer"),
            ("/api/remove", {"label": "zzz"}, "unknown class"),
            ("/api/rename", {"label": "a", "new_label": "a" * 101}, "longer than 100"),
        ):
            status, answer = call(server, "POST", route, body, csrf)
            assert status == 400 and why in answer["error"], (route, answer)
        status, answer = call(server, "POST", "/api/teach", raw=b"{not json", headers=csrf)
        assert status == 400 and "not valid JSON" in answer["error"]
        assert home.state_path().read_bytes() == before


def test_a_save_that_fails_leaves_the_saved_state_and_the_classifier_as_they_were(
    tmp_path, monkeypatch
):
    home = omniglot_home(tmp_path / "home")
    imgs = greek(tmp_path / "img")
    teacher = Teacher(home, delegate="cpu")
    teacher.teach("a", [(p.name, p.read_bytes()) for p in imgs["character01"][:2]])
    before = home.state_path().read_bytes()

    def power_cut(clf):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(home, "save", power_cut)
    with pytest.raises(OSError):
        teacher.teach("b", [(p.name, p.read_bytes()) for p in imgs["character02"][:2]])
    with pytest.raises(OSError):
        teacher.rename("a", "z")
    assert home.state_path().read_bytes() == before
    assert teacher.clf.classes == ["a"] and [c["label"] for c in teacher.status()["classes"]] == [
        "a"
    ]
    with pytest.raises(InputError) as e:
        teacher.teach("b", [("x.png", b"garbage")])
    assert_one_line(e.value, InputError)
    assert teacher.clf.classes == ["a"]


def test_rename_keeps_the_head_and_refuses_a_name_in_use(tmp_path):
    home = omniglot_home(tmp_path / "home")
    imgs = greek(tmp_path / "img")
    teacher = Teacher(home, delegate="cpu")
    for c, name in NAMES.items():
        teacher.teach(name, [(p.name, p.read_bytes()) for p in imgs[c][:2]])
    query = imgs["character02"][4]
    before = teacher.recognize(query.name, query.read_bytes())
    teacher.rename("beta", "B")
    after = teacher.recognize(query.name, query.read_bytes())
    assert [a["confidence"] for a in after["top"]] == [a["confidence"] for a in before["top"]]
    assert [a["label"] for a in after["top"]] == [
        {"beta": "B"}.get(a["label"], a["label"]) for a in before["top"]
    ]
    with pytest.raises(InputError, match="exists already"):
        teacher.rename("alpha", "gamma")
    assert load_state(home.state_path()).classes == ["alpha", "B", "gamma"]
    for label in ("alpha", "B", "gamma"):
        teacher.remove(label)
    assert not home.state_path().exists() and teacher.status()["classes"] == []
    assert Teacher(home, delegate="cpu").clf.classes == []
    with pytest.raises(InputError, match="nothing learned yet"):
        teacher.recognize(query.name, query.read_bytes())


def test_a_sync_that_switches_the_version_is_picked_up_at_the_next_request(tmp_path):
    home = omniglot_home(tmp_path / "home")
    imgs = greek(tmp_path / "img")
    teacher = Teacher(home, delegate="cpu")
    teacher.teach("alpha", [(p.name, p.read_bytes()) for p in imgs["character01"][:2]])
    query = imgs["character01"][4]
    answer = teacher.recognize(query.name, query.read_bytes())
    staging = home.staging(2)
    shutil.copytree(
        home.bundle_dir(1), staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("state.npz")
    )
    with home.lock():
        home.install(staging, 2, "")  # as a sync does (its state would be re-embedded; here: none)
    st = teacher.status()
    assert st["version"] == 2 and st["classes"] == [] and teacher.clf.version == 2
    with pytest.raises(
        InputError, match="no recent answer"
    ):  # answers of the old version are forgotten
        teacher.correct(answer["id"], "alpha")
    teacher.teach("beta", [(p.name, p.read_bytes()) for p in imgs["character02"][:2]])
    assert load_state(home.state_path(2)).classes == ["beta"]


def test_watch_mode_writes_a_json_line_per_new_image_and_goes_on_past_unreadable_files(tmp_path):
    home = omniglot_home(tmp_path / "home")
    imgs = greek(tmp_path / "img")
    teacher = Teacher(home, delegate="cpu")
    for c, name in NAMES.items():
        teacher.teach(name, [(p.name, p.read_bytes()) for p in imgs[c][:3]])
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "old.png").write_bytes(
        imgs["character01"][3].read_bytes()
    )  # there before the watch: not new
    out = io.StringIO()
    watcher = Watcher(teacher, shots, out)
    (shots / "1.png").write_bytes(imgs["character01"][4].read_bytes())
    (shots / "2.png").write_bytes(b"half a file")
    (shots / ".3.png.tmp").write_bytes(
        imgs["character02"][4].read_bytes()
    )  # being written: skipped
    (shots / "notes.txt").write_text("not an image")
    assert watcher.poll() == 0  # first sight: wait until a file stops changing
    assert watcher.poll() == 2
    (shots / ".3.png.tmp").rename(shots / "3.png")
    watcher.poll()
    assert watcher.poll() == 1 and watcher.poll() == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["1.png", "2.png", "3.png"]
    assert rows[0]["label"] == "alpha" and rows[2]["label"] == "beta" and rows[0]["version"] == 1
    assert 0 < rows[0]["confidence"] <= 1 and len(rows[0]["top"]) == 3
    assert "cannot decode image" in rows[1]["error"] and "label" not in rows[1]
    (shots / "1.png").write_bytes(
        imgs["character03"][4].read_bytes()
    )  # written again (a camera's latest.jpg)
    os.utime(
        shots / "1.png", ns=(1, 1)
    )  # another mtime even if the file system's clock ticks coarsely
    watcher.poll()
    assert watcher.poll() == 1 and json.loads(out.getvalue().splitlines()[-1])["label"] == "gamma"
    data = (shots / "3.png").read_bytes()
    shots.rename(tmp_path / "unmounted")  # the folder goes away for a while: nothing is forgotten
    assert watcher.poll() == 0
    (tmp_path / "unmounted").rename(shots)
    assert watcher.poll() == 0 and watcher.poll() == 0
    (shots / "3.png").unlink()  # moved away, then a new file of that name: a new image
    watcher.poll()
    (shots / "3.png").write_bytes(data)
    watcher.poll()
    assert watcher.poll() == 1 and watcher.classified == 5


def test_access_rules():
    assert Access("127.0.0.1").local and Access("::1").local and Access("localhost").local
    assert not Access("0.0.0.0").local and not Access("192.168.1.5").local
    a = Access("127.0.0.1")
    ok = {
        "Host": "localhost:8080",
        "X-CSRF-Token": a.csrf,
        "Content-Type": "application/json",
        "Origin": "http://localhost:8080",
    }
    assert a.refuse("POST", "/api/teach", ok) is None
    assert a.refuse("GET", "/", {"Host": "[::1]:8080"}) is None
    assert a.refuse("POST", "/api/teach", dict(ok, Origin="http://localhost:9999"))[0] == 403


# ----------------------------------------------------------------------------- the command
def _start(args, tmp_path) -> tuple:
    """``metalite device serve ARGS`` in a subprocess; (process, the first stderr lines up to 'serving ...')."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from metalite.tools.cli import main; main()",
            "device",
            "serve",
            *map(str, args),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith(("serving", "watching")):
            break
    return proc, lines


def _stop(proc) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_command_over_https_with_a_self_signed_certificate_and_the_printed_token(tmp_path):
    home = omniglot_home(tmp_path / "home")
    proc, lines = _start(
        ["--home", home.root, "--host", "0.0.0.0", "--port", 0, "--self-signed"], tmp_path
    )
    try:
        served = next((l for l in lines if l.startswith("serving")), None)
        assert served, lines
        port = int(re.search(r":(\d+)/", served).group(1))
        token = re.search(r"access token: (\S+)", served).group(1)
        assert any(f"#token={token}" in l for l in lines) and "XNNPACK" in lines[0]
        ctx = ssl.create_default_context(
            cafile=str(home.root / "tls" / "cert.pem")
        )  # the certificate it made
        ctx.check_hostname = True
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        conn.request("GET", "/api/status", headers={"X-Metalite-Token": token})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["needs_token"] is True
        conn.request("GET", "/api/status")
        assert conn.getresponse().status == 401
        conn.close()
    finally:
        _stop(proc)
    assert proc.returncode == 0, proc.stderr.read()


def test_serve_command_refuses_a_short_token_and_watches_without_a_page(tmp_path):
    home = omniglot_home(tmp_path / "home")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from metalite.tools.cli import main; main()",
            "device",
            "serve",
            "--home",
            str(home.root),
            "--token",
            "1234",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(
        "Error: the access token must"
    )
    imgs = greek(tmp_path / "img")
    teacher = Teacher(home, delegate="cpu")
    teacher.teach("alpha", [(p.name, p.read_bytes()) for p in imgs["character01"][:2]])
    teacher.teach("beta", [(p.name, p.read_bytes()) for p in imgs["character02"][:2]])
    home.close()
    shots, log = tmp_path / "shots", tmp_path / "watch.jsonl"
    shots.mkdir()
    proc, lines = _start(
        ["--home", home.root, "--watch", shots, "--watch-log", log, "--no-page"], tmp_path
    )
    try:
        assert lines and lines[-1].startswith("watching"), lines
        (shots / "a.png").write_bytes(imgs["character02"][5].read_bytes())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and log.read_text().strip()):
            time.sleep(0.2)
    finally:
        _stop(proc)
    row = json.loads(log.read_text().splitlines()[0])
    assert row["label"] == "beta" and row["image"].endswith("a.png")


def test_a_port_in_use_or_a_short_token_is_one_line(tmp_path):
    from metalite.runtime.webui import PageServer, WebError

    home = omniglot_home(tmp_path / "home")
    with serving(home) as server:
        with pytest.raises(WebError) as e:
            PageServer(("127.0.0.1", server.server_address[1]), server.teacher)
        assert_one_line(e.value, WebError)
        assert "cannot listen on 127.0.0.1" in str(e.value)
        with pytest.raises(WebError, match="at least 8 characters"):
            PageServer(("127.0.0.1", 0), server.teacher, token="1234")
