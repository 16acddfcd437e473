"""Measure the fleet on this machine: uploads per second, the time a device takes to switch bundles, the
outbox's cost on ``predict``. Figures for docs/fleet.md; timing is reported, never asserted.

    python -m metalite.bench.fleet --out runs/fleet-bench      # about 2-3 minutes on 2 cores

A real ``metalite serve`` subprocess on 127.0.0.1 and real bundles (models/glyphs and models/omniglot,
alternately published, so every sync re-embeds the support set with a different backbone). The client
threads and the server share this machine's cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def strokes(n_classes: int, per_class: int, seed: int = 0) -> tuple:
    """Synthetic 28x28 ink images: each class a random 3-stroke figure, each sample jittered by up to 2 px."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    images, labels = [], []
    for c in range(n_classes):
        segs = rng.uniform(4, 24, (3, 4))
        for _ in range(per_class):
            img = np.full((28, 28), 255, np.uint8)
            dy, dx = rng.integers(-2, 3, 2)
            for y0, x0, y1, x1 in segs:
                t = np.linspace(0, 1, 40)[:, None, None]
                py, px = y0 + dy + t * (y1 - y0), x0 + dx + t * (x1 - x0)
                img[(np.min((yy - py) ** 2 + (xx - px) ** 2, axis=0) <= 2.0)] = 0
            images.append(img)
            labels.append(f"c{c}")
    return np.stack(images), labels


class Server:
    """``metalite serve`` in a subprocess on a free port."""

    def __init__(self, root: Path):
        self.log = open(root.parent / "serve.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metalite.tools.cli",
                "serve",
                "--root",
                str(root),
                "--port",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        for _ in range(600):
            m = re.search(r"on (http://127\.0\.0\.1:\d+)", (root.parent / "serve.log").read_text())
            if m:
                self.url = m.group(1)
                time.sleep(0.5)
                return
            time.sleep(0.1)
        raise RuntimeError("metalite serve did not start")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def bench_uploads(fleet, server: Server, tmp: Path, devices: int, per_device: int) -> dict:
    """``devices`` threads each drain an outbox of ``per_device`` 28x28 examples in batches of 64."""
    from metalite.fleet import enroll
    from metalite.runtime.sync import FleetClient, Outbox, upload_outbox

    rng = np.random.default_rng(0)
    jobs = []
    for i in range(devices):
        ob = Outbox(tmp / f"up{i}.sqlite", capacity=per_device)
        ob.add(
            "unsure",
            rng.integers(0, 256, (per_device, 28, 28), dtype=np.uint8),
            predicted=["x"] * per_device,
        )
        jobs.append((ob, FleetClient(server.url, enroll(fleet, f"uploader{i}"))))
    t0, server_cpu, client_cpu = time.perf_counter(), server.cpu_seconds(), time.process_time()
    threads = [threading.Thread(target=upload_outbox, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    server_cpu, client_cpu = server.cpu_seconds() - server_cpu, time.process_time() - client_cpu
    left = sum(ob.pending() for ob, _ in jobs)
    n = devices * per_device - left
    return {
        "devices": devices,
        "examples": n,
        "seconds": dt,
        "examples_per_s": n / dt,
        "requests_per_s": n / 64 / dt,
        "left_in_outboxes": left,
        "server_cpu_ms_per_example": 1e3 * server_cpu / n,
        "client_cpu_ms_per_example": 1e3 * client_cpu / n,
    }


def bench_switch(fleet, server: Server, tmp: Path, rounds: int, classes: int, shots: int) -> dict:
    """A device with ``classes`` x ``shots`` support images syncs to a new bundle ``rounds`` times."""
    from metalite.fleet import enroll, publish
    from metalite.runtime.sync import DeviceHome, parse_public_key, sync

    token, key = enroll(fleet, "switcher"), parse_public_key(fleet.public_key())
    home = DeviceHome(tmp / "switcher")
    bundles = [REPO / "models" / "glyphs", REPO / "models" / "omniglot"]
    publish(fleet, bundles[0])
    sync(home, server.url, token, key, delegate="cpu")
    images, labels = strokes(classes, shots)
    home.save(home.classifier(delegate="cpu").fit(images, labels))
    runs = []
    for r in range(rounds):
        publish(fleet, bundles[(r + 1) % 2])
        res = sync(home, server.url, token, key, delegate="cpu", max_drop=1.0)
        u = res.update
        if u is None or u.status != "switched":
            raise RuntimeError(f"round {r}: {u}")
        runs.append({"to": bundles[(r + 1) % 2].name, **u.seconds, "health": u.health})
    phases = ("download", "verify", "reembed", "switch", "total")
    return {
        "support_images": classes * shots,
        "rounds": runs,
        "median": {p: float(np.median([x[p] for x in runs])) for p in phases},
        "min": {p: float(np.min([x[p] for x in runs])) for p in phases},
        "max": {p: float(np.max([x[p] for x in runs])) for p in phases},
    }


def _block(predict, queries: np.ndarray, batch: int, outbox) -> tuple:
    """(wall, CPU of this process) seconds per image, ``batch`` images per ``predict`` call. The wall time
    stops after the last call; the CPU time also covers committing the rows the block queued."""
    w, c = time.perf_counter(), time.process_time()
    for i in range(0, len(queries), batch):
        predict(queries[i : i + batch] if batch > 1 else queries[i])
    wall = time.perf_counter() - w
    if outbox is not None:
        outbox.flush()
    return wall / len(queries), (time.process_time() - c) / len(queries)


def bench_outbox(tmp: Path, rounds: int, calls: int) -> dict:
    """Interleaved A/B: ``predict`` plain vs. with the outbox at several unsure rates, 1 and 32 images per call.

    Each round runs every variant once (order reversed every other round); the overhead is the median
    over rounds of (variant / plain of the same batch size in the same round) - 1, in wall time and in
    the process's CPU time (which includes the background writer and is not inflated by other processes).
    """
    from metalite.runtime import FewShotClassifier
    from metalite.runtime.sync import Outbox, ReportingClassifier

    bundle = REPO / "models" / "omniglot"
    sup, lab = strokes(20, 5, seed=1)
    queries, _ = strokes(20, calls // 20 + 1, seed=2)
    queries = queries[:calls]
    opts = dict(delegate="cpu", num_threads=1, cache_size=0)
    plain = FewShotClassifier(bundle, **opts).fit(sup, lab)
    conf = np.sort(plain.predict_proba(queries).max(axis=1))
    variants = {}
    for batch in (1, 32):
        variants[f"plain_b{batch}"] = (plain.predict, batch, None)
        for pct, threshold, durable in (
            (0, 0.0, False),
            (20, float(conf[len(conf) // 5]), False),
            (100, 1.01, False),
            (100, 1.01, True),
        ):
            if durable and batch > 1:
                continue
            name = f"outbox_{pct}pct{'_durable' if durable else ''}_b{batch}"
            ob = Outbox(
                tmp / f"{name}.sqlite", durable=durable
            )  # default capacity (1000), as on a device
            clf = ReportingClassifier(bundle, outbox=ob, threshold=threshold, **opts).fit(sup, lab)
            variants[name] = (clf.predict, batch, ob)
    wall, cpu = {k: [] for k in variants}, {k: [] for k in variants}
    order = list(variants)
    for r in range(rounds):  # A B C ..., ... C B A, A B C ...
        for k in order if r % 2 == 0 else order[::-1]:
            predict, batch, outbox = variants[k]
            w, c = _block(predict, queries, batch, outbox)
            wall[k].append(w)
            cpu[k].append(c)

    def overhead(t):
        return {
            k: 100.0 * float(np.median(np.array(v) / np.array(t[f"plain_b{variants[k][1]}"]) - 1.0))
            for k, v in t.items()
            if not k.startswith("plain")
        }

    return {
        "images_per_round": len(queries),
        "rounds": rounds,
        "recorded_fraction": {
            k: (v[2].pending() + v[2].dropped) / (rounds * len(queries))
            for k, v in variants.items()
            if v[2]
        },
        "ms_per_image_wall": {
            k: {
                "median": 1e3 * float(np.median(v)),
                "min": 1e3 * float(np.min(v)),
                "max": 1e3 * float(np.max(v)),
            }
            for k, v in wall.items()
        },
        "ms_per_image_cpu": {k: {"median": 1e3 * float(np.median(v))} for k, v in cpu.items()},
        "overhead_pct_wall": overhead(wall),
        "overhead_pct_cpu": overhead(cpu),
    }


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Report directory.",
)
@click.option("--devices", default=8, show_default=True, help="Concurrent uploading devices.")
@click.option(
    "--per-device", default=10000, show_default=True, help="Examples each device uploads."
)
@click.option("--switch-rounds", default=6, show_default=True)
@click.option("--ab-rounds", default=40, show_default=True)
@click.option(
    "--parts", default="uploads,switch,outbox", show_default=True, help="Which measurements to run."
)
def main(out, devices, per_device, switch_rounds, ab_rounds, parts):
    """Run the fleet measurements and write OUT/fleet_bench.json."""
    from metalite.fleet import FleetRoot

    parts = set(parts.split(","))
    out.mkdir(parents=True, exist_ok=True)
    report = {"loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if parts & {"uploads", "switch"}:
            fleet = FleetRoot(tmp / "root", create=True)
            server = Server(fleet.path)
            try:
                if "uploads" in parts:
                    click.echo("uploads ...", err=True)
                    report["uploads"] = bench_uploads(fleet, server, tmp, devices, per_device)
                if "switch" in parts:
                    click.echo("bundle switches ...", err=True)
                    report["switch"] = bench_switch(
                        fleet, server, tmp, switch_rounds, classes=20, shots=5
                    )
            finally:
                server.stop()
        if "outbox" in parts:
            click.echo("outbox cost on predict ...", err=True)
            report["outbox"] = bench_outbox(tmp, ab_rounds, calls=320)
    report["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    (out / "fleet_bench.json").write_text(json.dumps(report, indent=2))
    for line in summary(report):
        click.echo(line)


def summary(report: dict) -> list:
    """The report's headline figures as text lines."""
    lines = []
    if "uploads" in report:
        u = report["uploads"]
        lines.append(
            f"uploads: {u['examples_per_s']:.0f} examples/s ({u['requests_per_s']:.1f} requests of 64/s), "
            f"{u['devices']} devices, {u['examples']} examples in {u['seconds']:.1f} s; server CPU "
            f"{u['server_cpu_ms_per_example']:.3f} ms/example (= {1 / u['server_cpu_ms_per_example']:.0f}k "
            f"examples/s per core), client CPU {u['client_cpu_ms_per_example']:.3f} ms/example"
        )
    if "switch" in report:
        s = report["switch"]
        lines.append(
            f"switch ({s['support_images']} support images), median s: "
            + ", ".join(f"{k} {v:.3f}" for k, v in s["median"].items())
            + f"; total min {s['min']['total']:.3f} max {s['max']['total']:.3f}"
        )
    if "outbox" in report:
        o = report["outbox"]
        lines.append(
            "predict, ms/image median wall: "
            + ", ".join(f"{k} {v['median']:.3f}" for k, v in o["ms_per_image_wall"].items())
        )
        lines.append(
            "outbox overhead (wall / CPU): "
            + ", ".join(
                f"{k} {o['overhead_pct_wall'][k]:+.1f}% / {o['overhead_pct_cpu'][k]:+.1f}% "
                f"({100 * o['recorded_fraction'][k]:.0f}% recorded)"
                for k in o["overhead_pct_wall"]
            )
        )
    lines.append(
        f"load average: start {' '.join(report['loadavg_start'])}, end {' '.join(report['loadavg_end'])}"
    )
    return lines


if __name__ == "__main__":
    main()
