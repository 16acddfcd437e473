"""The fleet drills of issue 22 (docs/hardening.md, "The fleet link"): each prints what it observed.

    python scripts/fleet_drills.py          # as root for the full-disk and read-only drills (tmpfs mounts)

Real ``metalite serve`` / ``metalite sync`` / ``metalite fleet`` processes on 127.0.0.1, a fresh root in a
temporary directory, the shipped ``models/omniglot`` bundle.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "models" / "omniglot"
CLI = [sys.executable, "-m", "metalite.tools.cli"]


def row(drill: str, observed: str) -> None:
    print(f"| {drill} | {observed} |", flush=True)


def cli(*args, timeout=300):
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    err = [line for line in p.stderr.splitlines() if line.strip()]
    return p.returncode, (err[-1] if err else ""), len(err), "Traceback" in p.stderr, p.stdout


def start(root: Path, log: Path):
    proc = subprocess.Popen(
        [*CLI, "serve", "--root", str(root), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for _ in range(900):
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text())
        if m:
            time.sleep(0.5)
            return proc, int(m.group(1))
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.1)
    raise RuntimeError(log.read_text())


def post(port, path, token, raw, limit=160):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(
        "POST",
        path,
        body=raw,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body.decode("utf-8", "replace")[:limit]


def server_drills(d: Path) -> None:
    from metalite.fleet import FleetRoot, enroll

    token = enroll(FleetRoot(d / "root", create=True), "pi-1")
    proc, port = start(d / "root", d / "serve.log")
    try:
        row(
            "JSON nested 100,000 deep",
            "HTTP %d %s" % post(port, "/v1/report", token, b"[" * 100000 + b"]" * 100000),
        )
        ex = lambda i, **kw: {  # noqa: E731
            "id": f"ex-{i:08d}",
            "kind": "unsure",
            "height": 2,
            "width": 2,
            "pixels": "AAECAw==",
            **kw,
        }
        batch = [ex(1), ex(2, version=2**64), ex(3, label="a\ud800"), ex(4, label="a\nb"), ex(5)]
        status, text = post(
            port, "/v1/examples", token, json.dumps({"examples": batch}).encode(), limit=None
        )
        got = json.loads(text)
        row(
            "batch of 5: version 2**64, label with a lone surrogate, label with a newline, 2 valid",
            f"HTTP {status}; valid ones stored (stored {got['stored'] + got['duplicates']}); rejected: "
            + "; ".join(f"`{r['reason'][:60]}`" for r in got["rejected"]),
        )
        row(
            "report platform/reason with lone surrogates; version 2**64",
            "HTTP %d; "
            % post(
                port,
                "/v1/report",
                token,
                json.dumps(
                    {"platform": "x\ud800", "reason": "r\udcff", "event": "failed"}
                ).encode(),
            )[0]
            + "HTTP %d %s"
            % post(port, "/v1/report", token, json.dumps({"version": 2**64}).encode()),
        )
        row(
            "share class named `a\\nb`",
            "HTTP %d %s"
            % post(
                port,
                "/v1/classes",
                token,
                json.dumps(
                    {"name": "a\nb", "images": [{"height": 1, "width": 1, "pixels": "AA=="}]}
                ).encode(),
            ),
        )
        evil = "\x1b]0;owned\x07\x1b[2J\npi-9                 v99        seen 1 s ago"
        post(
            port,
            "/v1/report",
            token,
            json.dumps({"event": "failed", "reason": evil, "version": 1}).encode(),
        )
        rc, _, _, tb, out = cli("fleet", "status", "--root", d / "root")
        lines = out.splitlines()
        row(
            "`fleet status` after a report whose reason sets the title, clears the screen and forges a line",
            f"exit {rc}; {sum(l.lstrip().startswith('pi-') for l in lines)} device line; ESC bytes in output: "
            f"{out.count(chr(27))}; shown as `{next(l for l in lines if 'owned' in l).strip()[-60:]}`",
        )
        mode = {
            p.name: oct(p.stat().st_mode & 0o777)
            for p in (d / "root").iterdir()
            if p.name.startswith("fleet")
        }
        row(
            "modes of the root and its database",
            f"root {oct((d / 'root').stat().st_mode & 0o777)}, {mode}",
        )
    finally:
        proc.terminate()
        proc.wait(30)


def bundle_drill(d: Path) -> None:
    from metalite.runtime.bundle import sha256_file

    b = d / "evil-bundle"
    shutil.copytree(BUNDLE, b)
    (b / "state.npz").write_bytes(b"x")
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["state.npz"] = {"sha256": sha256_file(b / "state.npz"), "bytes": 1}
    (b / "manifest.json").write_text(json.dumps(m))
    rc, line, n, tb, _ = cli("fleet", "publish", b, "--root", d / "root2")
    row(
        "`fleet publish` of a bundle listing `state.npz`",
        f"exit {rc}, {n} line, traceback {tb}: `{line[-110:]}`",
    )


def killed_publishes(d: Path) -> None:
    from metalite.fleet import FleetRoot

    root = FleetRoot(d / "root3", create=True)
    code = (
        "import time\nfrom metalite.fleet import FleetRoot, publish, blobs\nblobs._CHUNK = 1 << 16\n"
        "f = blobs.os.fsync\nblobs.os.fsync = lambda fd: (time.sleep(60) if blobs.os.fstat(fd).st_size > 1e5 else 0, f(fd))\n"
        f"publish(FleetRoot({str(root.path)!r}), {str(BUNDLE)!r})\n"
    )
    for k in range(5):
        p = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 120
        while len(list(root.blobs.dir.glob(".in.*.tmp"))) <= k and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        p.kill()
        p.wait()
    left = list(root.blobs.dir.glob(".in.*.tmp"))
    size = sum(t.stat().st_size for t in left) / 2**20
    old = time.time() - 120
    for t in left:
        os.utime(t, (old, old))
    rc, *_ = cli("fleet", "publish", BUNDLE, "--root", root.path)
    row(
        "kill -9 five publishes mid-blob, then publish again (temporaries aged past a minute)",
        f"{len(left)} temporaries ({size:.1f} MiB) after the kills; {len(list(root.blobs.dir.glob('.in.*.tmp')))} "
        f"after the next publish (exit {rc})",
    )


class _Hostile(http.server.BaseHTTPRequestHandler):
    answer = b"[]"

    def log_message(self, *a):
        pass

    def _go(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.answer == b"endless":
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"[" * 65536)
            except OSError:
                return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    do_GET = do_POST = _go


def hostile_server_drills(d: Path) -> None:
    import numpy as np

    from metalite.runtime.sync import DeviceHome, Outbox

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    cases = [(a, True) for a in (b"[]", b'"x"', b"{}", b"endless")]
    cases += [
        (a, False)
        for a in (b"[]", b'{"release": 5, "signature": 7}', b'{"release": "{}", "signature": null}')
    ]
    for i, (answer, outbox) in enumerate(cases):
        home = DeviceHome(d / f"home-{i}")
        if outbox:  # the first call is the upload; else the offer
            Outbox(home.root / "outbox.sqlite").add("unsure", np.zeros((1, 28, 28), np.uint8))
        _Hostile.answer = answer
        t = time.perf_counter()
        p = subprocess.Popen(
            [
                *CLI,
                "sync",
                "--server",
                url,
                "--token",
                "t",
                "--allow-unsigned",
                "--home",
                home.root,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = p.communicate(timeout=300)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines = [line for line in (err + out).splitlines() if line.strip()]
        row(
            f"`metalite sync` ({'outbox of 1' if outbox else 'empty outbox'}) against a server answering "
            f"`{answer.decode()[:40]}` to everything",
            f"exit {p.returncode}, traceback {'Traceback' in err}, {time.perf_counter() - t:.1f} s, peak RSS of all "
            f"syncs so far {peak:.0f} MiB: `{lines[-1][-110:] if lines else ''}`",
        )
    srv.shutdown()


def mounted_drills(d: Path) -> None:
    from metalite.fleet import FleetRoot, enroll

    if os.geteuid() != 0:
        row("full disk, read-only root", "skipped: not root (needs tmpfs mounts)")
        return
    disk = d / "ro"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        root = FleetRoot(disk / "root", create=True)
        enroll(root, "pi-1")
        root.db().close()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for args in (
            ("fleet", "status", "--root", disk / "root"),
            ("serve", "--root", disk / "root", "--port", "0"),
        ):
            rc, line, n, tb, out = cli(*args)
            row(
                f"`{' '.join(map(str, args[:2]))}` on a read-only root",
                f"exit {rc}, {n} stderr line, traceback "
                f"{tb}: `{(line or out.splitlines()[-1])[-110:]}`",
            )
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def main():
    d = Path(tempfile.mkdtemp(prefix="fleet-drills-"))
    print(f"load {open('/proc/loadavg').read().split()[:3]}")
    print("| drill | observed |\n|---|---|")
    server_drills(d)
    bundle_drill(d)
    killed_publishes(d)
    hostile_server_drills(d)
    mounted_drills(d)
    print(f"load {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
