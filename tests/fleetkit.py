"""Helpers of the fleet tests: tiny real bundles, a real ``metalite serve`` subprocess, a cutting TCP proxy."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from runtime_kit import N_SHAPES, SIZE, rewrite_manifest, shapes

SERVER_START_TIMEOUT = 90  # seconds; 2 shared, loaded cores
# scale 3: confidences spread over 0.4-1.0 on the test shapes (unsure ones exist); 5 steps as a trained head would
HEAD_ADAPTATION = {"steps": 5, "lr": 0.01, "scale": 3.0, "adapt": "head"}


def _write(out: Path, model, dim: int, seed: int) -> Path:
    from metalite.export.bundle import write_bundle
    from metalite.runtime import head as headlib
    from metalite.runtime.preprocess import to_model_input

    imgs, _ = shapes(range(N_SHAPES), 8, seed=0)
    rng = np.random.default_rng(seed)
    w = (np.eye(dim) + 0.1 * rng.standard_normal((dim, dim))).astype(np.float32)
    spec = headlib.HeadSpec([(w, np.zeros(dim, np.float32))], ["linear"], dict(HEAD_ADAPTATION))
    return write_bundle(
        out,
        model,
        spec,
        to_model_input(imgs, (SIZE, SIZE)),
        {"training": {"algorithm": "test"}},
        progress=False,
    )


def build_bundles(d: Path) -> dict:
    """Real int8 bundles written by ``write_bundle``: {"v1", "v2", "bad"}.

    v1: a Conv4 with 16 filters and fixed random weights (16-d embeddings). v2: another backbone with 24-d
    embeddings, v1's followed by a fixed 16->24 isometry (orthonormal rows), so it separates the test
    shapes exactly as well as v1 and an update must re-embed the images. bad: v2 with a useless head.
    """
    from metalite.export.tfcompat import keras
    from metalite.training.models import build_backbone

    base = build_backbone(
        {"kind": "conv4", "filters": 16, "embedding_dim": 16}, input_shape=(SIZE, SIZE, 1)
    )
    rng = np.random.default_rng(
        1
    )  # Glorot-uniform kernels from numpy: the same bundle whatever ran before
    for w in base.weights:
        if "kernel" in w.name:
            fan_in, fan_out = int(np.prod(w.shape[:-1])), int(w.shape[-1])
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            w.assign(rng.uniform(-limit, limit, tuple(w.shape)).astype(np.float32))
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((24, 16)))
    inp = keras.Input((SIZE, SIZE, 1))
    lift = keras.layers.Dense(
        24, use_bias=False, kernel_initializer=keras.initializers.Constant(q.T), trainable=False
    )
    v2 = _write(d / "v2", keras.Model(inp, lift(base(inp))), 24, seed=1)
    return {
        "v1": _write(d / "v1", base, 16, seed=0),
        "v2": v2,
        "bad": broken_head_bundle(v2, d / "bad"),
    }


_BUNDLES: dict = {}


def shared_bundles(tmp_path_factory) -> dict:
    """``build_bundles`` once per test session (for every test module that needs them)."""
    if not _BUNDLES:
        _BUNDLES.update(build_bundles(tmp_path_factory.mktemp("fleet_bundles")))
    return _BUNDLES


def broken_head_bundle(src: Path, out: Path) -> Path:
    """A copy of ``src`` that verifies but whose head maps every embedding to one point (cannot tell classes apart)."""
    from metalite.runtime import head as headlib

    shutil.copytree(src, out)
    spec = headlib.load_head(out / "head.npz")
    spec.weights = [(np.zeros_like(w), np.zeros_like(b)) for w, b in spec.weights]
    headlib.save_head(spec, str(out / "head.npz"))
    rewrite_manifest(out, lambda m: None)
    return out


def write_pngs(folder: Path, images: np.ndarray, labels: list) -> list:
    """Write uint8 images as folder/<label>/<i>.png; returns the paths in order."""
    from PIL import Image

    paths = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        p = folder / str(lab) / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


class Server:
    """``metalite serve --root ROOT`` in a subprocess on 127.0.0.1 (a free port, kept across restarts)."""

    def __init__(self, root: Path, log: Path, args=()):
        self.root, self.log, self.port, self.proc, self.args = (
            Path(root),
            Path(log),
            0,
            None,
            list(args),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "metalite.tools.cli",
                    "serve",
                    "--root",
                    str(self.root),
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:].decode("utf-8", "replace")
            m = re.search(r"serving .* on http://127\.0\.0\.1:(\d+)", text)
            if m and self._healthy(int(m.group(1))):
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"metalite serve exited with {self.proc.returncode}: {text[-2000:]}"
                )
            time.sleep(0.1)
        raise RuntimeError(f"metalite serve did not come up: {self.log.read_text()[-2000:]}")

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as r:
                return json.loads(r.read())["ok"] is True
        except OSError:
            return False

    def public_key(self) -> str:
        return (self.root / "public_key.txt").read_text().strip()

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None


class CuttingProxy:
    """A TCP proxy to ``port`` that closes each connection after ``limit`` response bytes (a cut download)."""

    def __init__(self, port: int, limit: int):
        self.target, self.limit = port, limit
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))

        def forward():
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=forward, daemon=True).start()
        sent = 0
        try:
            while sent < self.limit and (data := upstream.recv(65536)):
                data = data[: self.limit - sent]
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.sock.close()


def request(srv, method, path, body=None, token=None, raw=None, timeout=30):
    """(status, decoded JSON or raw bytes) of one request to the server."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    out = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(out)
    except ValueError:
        return resp.status, out
