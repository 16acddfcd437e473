"""The device page's cost: peak RSS of ``metalite device serve`` and the time from upload to answer.

    python scripts/device_page_bench.py models/omniglot [--worker "LABEL=PYTHON[,ENV=VALUE...]" ...] \
        [--rounds 5 --calls 10]

Each worker is a ``metalite device serve`` process started by that Python (default: the runtime-only venvs
of device_tests, tflite-runtime 2.14 + numpy<2 and ai-edge-litert + numpy 2, each also with
OPENBLAS_NUM_THREADS=1, since numpy's BLAS threads cost tens of ms per image on a busy machine; no TensorFlow) over its own
device home running the bundle. Every server is taught the same 5 Greek characters of the test fixture
(3 drawings each), then, round by round and server by server (interleaved), recognizes 3 kinds of upload
``--calls`` times each (each upload a different image), timed by the client from the request to the parsed answer over 127.0.0.1:

- ``drawing``: a 105x105 Omniglot PNG (as a file from a phone's gallery of scans);
- ``camera``: a 640x480 JPEG of it on grainy paper, what the page's "Snap from camera" sends;
- ``photo``: a 4032x3024 JPEG of the same (a 12 Mpx phone photo picked as a file).

Prints a Markdown table: medians over all calls, the server's own model time, and the server's peak RSS
(VmHWM from /proc after all rounds) and RSS after start-up.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
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


def uploads(drawing: bytes, n: int) -> dict:
    """``n`` different uploads of each kind, all showing ``drawing``: the drawing moved by up to 2 pixels with a
    speck in a corner, and
    JPEGs of it on a sheet with paper grain (Gaussian noise, so they compress like photos). Each upload is
    different, so the classifier's embedding cache (keyed by content) never answers in place of the backbone."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    glyph = np.asarray(Image.open(io.BytesIO(drawing)).convert("L"))

    def encode(a: np.ndarray, fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return buf.getvalue()

    def sheet(w: int, h: int) -> np.ndarray:
        side = h * 3 // 4
        big = np.asarray(Image.fromarray(glyph).resize((side, side)), np.float32)
        paper = np.full((h, w), 235.0, np.float32) + rng.normal(0, 6, (h, w)).astype(np.float32)
        top, left = (h - side) // 2, (w - side) // 2
        paper[top : top + side, left : left + side] = np.minimum(
            paper[top : top + side, left : left + side], big
        )
        rgb = np.repeat(np.clip(paper, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        return rgb

    out = {"drawing": [], "camera": [], "photo": []}
    for _ in range(n):
        a = np.roll(
            glyph, tuple(rng.integers(-2, 3, 2)), axis=(0, 1)
        )  # moved by up to 2 pixels, and a speck
        r, c = rng.integers(0, 12, 2)
        a[r : r + 3, c : c + 3] = 0
        out["drawing"].append(encode(a, "PNG"))
        out["camera"].append(encode(sheet(640, 480), "JPEG"))
        out["photo"].append(encode(sheet(4032, 3024), "JPEG"))
    return out


class Server:
    """``metalite device serve`` in a subprocess over a fresh home running ``bundle`` as v1."""

    def __init__(self, label: str, python: str, bundle: Path, tmp: Path, env: dict):
        self.label = label
        home = tmp / label
        # the home layout a sync (or 'metalite device install') leaves: versions/1 + current.json
        shutil.copytree(bundle, home / "versions" / "1")
        (home / "current.json").write_text(json.dumps({"version": 1}))
        self.proc = subprocess.Popen(
            [
                python,
                "-c",
                "from metalite.tools.cli import main; main()",
                "device",
                "serve",
                "--home",
                str(home),
                "--port",
                "0",
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, **env),
        )
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
        self.conn.request(
            method, path, body=None if body is None else json.dumps(body), headers=headers
        )
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


def _worker(spec: str) -> tuple:
    """ "LABEL=PYTHON[,ENV=VALUE...]" -> (label, python, env)."""
    label, _, rest = spec.partition("=")
    python, *pairs = rest.split(",")
    return label, python, dict(p.split("=", 1) for p in pairs)


def image(name: str, data: bytes) -> dict:
    return {"name": name, "data": base64.b64encode(data).decode()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--worker", action="append", default=[], metavar="LABEL=PYTHON[,ENV=VALUE...]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--calls", type=int, default=10, help="uploads of each kind per server and round"
    )
    args = ap.parse_args()
    workers = [_worker(w) for w in args.worker]
    if not workers:
        import envs

        tflite, litert = str(envs.runtime_venv("tflite")), str(envs.runtime_venv("litert"))
        workers = [
            ("tflite-runtime 2.14 + numpy<2", tflite, {}),
            ("ai-edge-litert + numpy 2", litert, {}),
            ("tflite-runtime 2.14, OPENBLAS_NUM_THREADS=1", tflite, {"OPENBLAS_NUM_THREADS": "1"}),
            ("ai-edge-litert, OPENBLAS_NUM_THREADS=1", litert, {"OPENBLAS_NUM_THREADS": "1"}),
        ]
    drawings = greek_drawings()
    characters = sorted(drawings)[:5]
    kinds = uploads(drawings[characters[0]][5], args.calls)
    times: dict = {(w[0], k): [] for w in workers for k in kinds}
    model: dict = {(w[0], k): [] for w in workers for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        servers = [Server(label, py, args.bundle, Path(tmp), env) for label, py, env in workers]
        try:
            for s in servers:
                for c in characters:
                    s.post(
                        "/api/teach",
                        {
                            "label": c,
                            "images": [
                                image(f"{c}_{i}.png", d) for i, d in enumerate(drawings[c][:3])
                            ],
                        },
                    )
            for _ in range(args.rounds):
                for s in servers:
                    for kind, variants in kinds.items():
                        for data in variants:
                            body = {"image": image(f"{kind}.jpg", data)}
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
    print(
        "| server | upload | median bytes | upload to answer, median ms | in the server ms | peak RSS MiB | RSS after start MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, _, _ in workers:
        for kind, variants in kinds.items():
            print(
                f"| {label} | {kind} | {int(statistics.median(map(len, variants))):,} | {statistics.median(times[(label, kind)]):.1f} | "
                f"{statistics.median(model[(label, kind)]):.1f} | {mem[label]['VmHWM']:.1f} | {start[label]:.1f} |"
            )
    for label, line in backbone.items():
        print(f"\n{label}: {line}")


if __name__ == "__main__":
    main()
