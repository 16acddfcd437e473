"""The device page's cost: peak RSS of ``metalite device serve`` and the time from upload to answer.

    python scripts/device_page_bench.py models/omniglot [--worker "LABEL=PYTHON" ...] [--rounds 5 --calls 20]

Each worker is a ``metalite device serve`` process started by that Python (default: the runtime-only venvs
of device_tests, tflite-runtime 2.14 + numpy<2 and ai-edge-litert + numpy 2; no TensorFlow) over its own
device home running the bundle. Every server is taught the same 5 Greek characters of the test fixture
(3 drawings each), then, round by round and server by server (interleaved), recognizes 3 kinds of upload
``--calls`` times each, timed by the client from the request to the parsed answer over 127.0.0.1:

- ``drawing``: a 105x105 Omniglot PNG (as a file from a phone's gallery of scans);
- ``camera``: a 640x480 JPEG, what the page's "Snap from camera" sends;
- ``photo``: a 4032x3024 JPEG (a 12 Mpx phone photo picked as a file).

Prints a Markdown table: medians over all calls, the server's own model time, and the server's peak RSS
(VmHWM from /proc after all rounds) and RSS after start-up.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "device_tests"))
MINI = REPO / "tests" / "data" / "omniglot" / "mini2.zip"


def greek_drawings() -> dict:
    """{character: [png bytes of its 6 drawings]} for the fixture's 6 Greek characters."""
    out: dict = {}
    with zipfile.ZipFile(MINI) as z:
        for n in sorted(z.namelist()):
            m = re.search(r"/Greek/(character\d+)/.*\.png$", n)
            if m:
                out.setdefault(m.group(1), []).append(z.read(n))
    return out


def uploads(drawing: bytes) -> dict:
    """The three kinds of upload, all showing ``drawing`` (scaled up onto a larger sheet for the JPEGs)."""
    from PIL import Image

    def jpeg(w: int, h: int) -> bytes:
        sheet = Image.new("L", (w, h), 255)
        glyph = Image.open(io.BytesIO(drawing)).convert("L").resize((h * 3 // 4, h * 3 // 4))
        sheet.paste(glyph, ((w - glyph.width) // 2, (h - glyph.height) // 2))
        buf = io.BytesIO()
        sheet.convert("RGB").save(buf, "JPEG", quality=90)
        return buf.getvalue()

    return {"drawing": drawing, "camera": jpeg(640, 480), "photo": jpeg(4032, 3024)}


class Server:
    """``metalite device serve`` in a subprocess over a fresh home running ``bundle`` as v1."""

    def __init__(self, label: str, python: str, bundle: Path, tmp: Path):
        self.label = label
        home = tmp / label
        # the home layout a sync (or 'metalite device install') leaves: versions/1 + current.json
        shutil.copytree(bundle, home / "versions" / "1")
        (home / "current.json").write_text(json.dumps({"version": 1}))
        self.proc = subprocess.Popen([python, "-c", "from metalite.tools.cli import main; main()", "device", "serve",
                                      "--home", str(home), "--port", "0"], stderr=subprocess.PIPE, text=True)
        self.lines = []
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if line.startswith("serving"):
                break
        m = re.search(r"127\.0\.0\.1:(\d+)/", self.lines[-1] if self.lines else "")
        if not m:
            raise SystemExit(f"{label}: the server did not start: {self.lines}")
        self.port = int(m.group(1))
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        page = self._request("GET", "/")[1]
        self.csrf = re.search(r'const CSRF = "([^"]+)"', page).group(1)
        self.rss_start = self.memory()["VmRSS"]

    def _request(self, method: str, path: str, body=None):
        headers = {"Content-Type": "application/json", "X-CSRF-Token": getattr(self, "csrf", "")}
        self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read().decode()

    def post(self, path: str, body: dict) -> dict:
        status, text = self._request("POST", path, body)
        if status != 200:
            raise SystemExit(f"{self.label}: {path} -> {status} {text}")
        return json.loads(text)

    def memory(self) -> dict:
        """VmRSS and VmHWM of the server process in MiB."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
        return out

    def stop(self) -> None:
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(30)


def image(name: str, data: bytes) -> dict:
    return {"name": name, "data": base64.b64encode(data).decode()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--worker", action="append", default=[], metavar="LABEL=PYTHON")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20, help="uploads of each kind per server and round")
    args = ap.parse_args()
    workers = [w.split("=", 1) for w in args.worker]
    if not workers:
        import envs

        workers = [("tflite-runtime 2.14 + numpy<2", str(envs.runtime_venv("tflite"))),
                   ("ai-edge-litert + numpy 2", str(envs.runtime_venv("litert")))]
    drawings = greek_drawings()
    characters = sorted(drawings)[:5]
    kinds = uploads(drawings[characters[0]][5])
    times: dict = {(w, k): [] for w, _ in workers for k in kinds}
    model: dict = {(w, k): [] for w, _ in workers for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        servers = [Server(label, py, args.bundle, Path(tmp)) for label, py in workers]
        try:
            for s in servers:
                for c in characters:
                    s.post("/api/teach", {"label": c, "images": [image(f"{c}_{i}.png", d)
                                                                 for i, d in enumerate(drawings[c][:3])]})
            for _ in range(args.rounds):
                for s in servers:
                    for kind, data in kinds.items():
                        body = {"image": image(f"{kind}.jpg", data)}
                        for _ in range(args.calls):
                            t0 = time.perf_counter()
                            answer = s.post("/api/recognize", body)
                            times[(s.label, kind)].append((time.perf_counter() - t0) * 1000)
                            model[(s.label, kind)].append(answer["ms"])
            mem = {s.label: s.memory() for s in servers}
            start = {s.label: s.rss_start for s in servers}
            backbone = {s.label: s.lines[0] for s in servers}
        finally:
            for s in servers:
                s.stop()
    print("| server | upload | bytes | upload to answer, median ms | in the server ms | peak RSS MiB | RSS after start MiB |")
    print("|---|---|---|---|---|---|---|")
    for label, _ in workers:
        for kind, data in kinds.items():
            print(f"| {label} | {kind} | {len(data):,} | {statistics.median(times[(label, kind)]):.1f} | "
                  f"{statistics.median(model[(label, kind)]):.1f} | {mem[label]['VmHWM']:.1f} | {start[label]:.1f} |")
    for label, line in backbone.items():
        print(f"\n{label}: {line}")


if __name__ == "__main__":
    main()
