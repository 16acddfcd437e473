"""Instructions an emulated Cortex-A72 (a Raspberry Pi 4's core) executes per backbone invoke, under qemu.

    python scripts/arm64_instructions.py models/omniglot models/omniglot-fast [--invokes 3]

Uses device_tests' arm64 Debian rootfs and its tflite-runtime 2.14 site with the current
``metalite.runtime`` (``device_tests/envs.py``; built on first use, needs root, binfmt_misc and
qemu-user-static). qemu-user 7.2 has no instruction-counting plugin here, so each instruction is logged
instead: ``QEMU_SINGLESTEP=1`` (one instruction per translation block) with ``QEMU_LOG=exec,nochain``,
filtered (``QEMU_DFILTER``) to the interpreter's shared library, which holds the interpreter and XNNPACK;
address randomisation is off (``setarch -R``) so the library loads at the same address in every run. The
log goes through a FIFO and only its lines are counted. Runs with 0 and N invokes after the first
are subtracted, leaving N invokes' instructions. Instruction counts, not time: a real A72's cycles per
instruction differ between kernels. Slow (minutes per run: Python starts under emulation, logging).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSIDE = "/tmp/metalite-arm64-instructions"
WORKER = """
import sys, numpy as np
from metalite.runtime.interpreter import open_model
interp, acc = open_model(sys.argv[1], num_threads=1)
d = interp.get_input_details()[0]
interp.resize_tensor_input(d["index"], [1, *d["shape"][1:]], strict=True)
interp.allocate_tensors()
interp.set_tensor(d["index"], np.zeros([1, *d["shape"][1:]], d["dtype"]))
interp.invoke()
if sys.argv[2] == "probe":  # where the library sits after exactly these imports (the log filter's range)
    import ctypes, glob, tflite_runtime
    so = glob.glob(tflite_runtime.__path__[0] + "/_pywrap*.so")[0]
    print(so, ctypes.c_void_p.from_address(ctypes.CDLL(so)._handle).value)  # link_map.l_addr
    sys.exit(0)
for _ in range(int(sys.argv[2])):
    interp.invoke()
print(acc.interpreter, acc.version, acc.delegate, acc.delegated, acc.xnnpack_int8, sep="|")
"""


def _library_range(run, rootfs: Path, site: str, model: str) -> tuple:
    """The interpreter library's address range in the worker (the same imports, no logging)."""
    p = subprocess.run(
        ["setarch", "-R"]
        + run(
            ["python3", f"{INSIDE}/worker.py", f"{INSIDE}/{model}", "probe"], {"PYTHONPATH": site}
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    so, base = p.stdout.split()
    return int(base), int(base) + (rootfs / so.lstrip("/")).stat().st_size


def _count(run, site: str, work: Path, model: str, invokes: int, lib: tuple) -> tuple:
    """(logged instructions, worker's acceleration line) for one run."""
    fifo = work / f"log-{invokes}.fifo"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    got = {}

    def reader():
        n = 0
        with open(fifo, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                n += chunk.count(b"Trace ")
        got["n"] = n

    th = threading.Thread(target=reader)
    th.start()
    env = {
        "PYTHONPATH": site,
        "QEMU_LOG": "exec,nochain",
        "QEMU_SINGLESTEP": "1",
        "QEMU_DFILTER": f"{lib[0]:#x}..{lib[1]:#x}",
        "QEMU_LOG_FILENAME": f"{INSIDE}/log-{invokes}.fifo",
    }
    p = subprocess.run(
        ["setarch", "-R"]
        + run(["python3", f"{INSIDE}/worker.py", f"{INSIDE}/{model}", str(invokes)], env),
        capture_output=True,
        text=True,
    )
    th.join()
    if p.returncode != 0:
        raise SystemExit(f"{model}: the arm64 worker failed: {p.stderr.strip()[-300:]}")
    return got["n"], p.stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--invokes", type=int, default=3)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "device_tests"))
    import envs

    rootfs = envs.arm64_rootfs()
    site = envs.arm64_site(rootfs)
    run, how = envs.arm64_runner(rootfs)
    work = rootfs / INSIDE.lstrip("/")
    work.mkdir(parents=True, exist_ok=True)
    (work / "worker.py").write_text(WORKER)
    print(
        f"Emulated {envs.EMULATED_CPU['qemu']} ({how}), instructions inside the tflite-runtime library, "
        f"batch 1, 1 thread, {a.invokes} invokes after a first one:\n"
    )
    print("| bundle | M instructions per invoke | acceleration |\n|---|---|---|")
    totals = {}
    for b in a.bundles:
        name = f"{b.name}.tflite"
        shutil.copy(b / "backbone.tflite", work / name)
        lib = _library_range(run, rootfs, site, name)
        with ThreadPoolExecutor(2) as ex:  # the two runs at once: counts do not depend on load
            (base, _), (n, acc) = ex.map(
                lambda k, name=name, lib=lib: _count(run, site, work, name, k, lib), (0, a.invokes)
            )
        totals[str(b)] = (n - base) / a.invokes
        print(f"| `{b}` | {totals[str(b)] / 1e6:.3f} | {acc} |", flush=True)
    if len(totals) > 1:
        first = next(iter(totals.values()))
        print(
            "\nRatios to the first bundle: "
            + ", ".join(f"`{k}` {first / v:.2f}×" for k, v in totals.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
