"""How many idle TCP clients one ``metalite serve`` holds while devices still sync.

    python scripts/idle_clients.py [--counts 1000,3000,4000,6000] [--devices 5]

Starts a real server (default settings: header timeout 10 s, ``fleet.serve.MAX_CONNECTIONS``) on a fresh
root on 127.0.0.1; for each count, opens that many connections that send nothing, then runs ``--devices``
real device syncs (10 outbox examples each) one after another, and reports how many succeeded, their
time, and how long until a sync succeeds when the first ones were refused (the idle clients are cut
after the header timeout). Prints one JSON line per count.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from metalite.fleet import FleetRoot, enroll
from metalite.runtime.sync import DeviceHome, Outbox, sync


def start(root: Path, log: Path):
    err = open(log, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "metalite.tools.cli", "serve", "--root", str(root), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for _ in range(600):
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text())
        if m:
            time.sleep(1)
            return proc, int(m.group(1))
        time.sleep(0.1)
    raise RuntimeError(log.read_text())


def one_sync(d: Path, i: int, url: str, token: str):
    home = DeviceHome(d / f"home{i}")
    ob = Outbox(home.root / "outbox.sqlite")
    ob.add("unsure", np.random.default_rng(i).integers(0, 256, (10, 28, 28), dtype=np.uint8))
    t = time.perf_counter()
    r = sync(home, url, token, None, allow_unsigned=True, share_support=False, timeout=30)
    return (not r.offline and r.pending == 0), time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,3000,4000,6000")
    ap.add_argument("--devices", type=int, default=5)
    a = ap.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    d = Path(tempfile.mkdtemp(prefix="idle-"))
    tokens = [enroll(FleetRoot(d / "root", create=True), f"dev{i}") for i in range(a.devices)]
    proc, port = start(d / "root", d / "serve.log")
    url = f"http://127.0.0.1:{port}"
    print(
        json.dumps(
            {
                "cpu": next(
                    l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if "model name" in l
                ),
                "load": open("/proc/loadavg").read().split()[:3],
            }
        ),
        flush=True,
    )
    try:
        for run, n in enumerate(int(c) for c in a.counts.split(",")):
            t = time.perf_counter()
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
            opened = time.perf_counter() - t
            results = [one_sync(d / f"r{run}", i, url, tok) for i, tok in enumerate(tokens)]
            recovered = None
            if not all(
                ok for ok, _ in results
            ):  # wait for the header timeout to cut the idle clients
                t1 = time.perf_counter()
                for k in range(60):
                    if one_sync(d / f"r{run}-retry{k}", 0, url, tokens[0])[0]:
                        recovered = time.perf_counter() - t1
                        break
                    time.sleep(1)
            still = 0
            for s in idle:
                s.setblocking(False)
                try:
                    still += s.recv(1) != b""
                except BlockingIOError:
                    still += 1
                except OSError:
                    pass
                s.close()
            print(
                json.dumps(
                    {
                        "idle_clients": n,
                        "opened_s": round(opened, 2),
                        "syncs_ok": sum(ok for ok, _ in results),
                        "syncs": len(results),
                        "sync_s": [round(s, 2) for _, s in results],
                        "recovered_after_s": recovered and round(recovered, 1),
                        "idle_still_open_at_end": still,
                        "load": open("/proc/loadavg").read().split()[:3],
                    }
                ),
                flush=True,
            )
            time.sleep(12)  # let the server close whatever is left
    finally:
        proc.terminate()
        proc.wait(30)
    print("server log:", (d / "serve.log").read_text()[-500:].replace("\n", " | "))


if __name__ == "__main__":
    main()
