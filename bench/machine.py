"""The ``machine`` section of ``metalite bench``, and how busy the machine was while it timed things.

Speed figures taken on a shared machine are inflated by whatever else runs. ``LoadWatch`` records the
load average before and after a timed stretch and, on Linux, how many cores *other* processes used
meanwhile (all CPU time in /proc/stat minus this process's and its children's); the report shows both
and warns when the machine was busy.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from .fields import get

# Other processes using more than this many cores on average (or, without /proc/stat, a 1-minute load
# average above it before timing) marks the machine busy.
BUSY_CORES = 0.25


# ISA features that change which int8/float kernels XNNPACK picks, as /proc/cpuinfo spells them (x86 "flags",
# ARM "Features"); a speed ratio measured with one set need not hold with another.
ISA_FEATURES = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "sve",
    "sve2",
    "bf16",
)
# ARM CPU implementer/part codes of the cores a Raspberry Pi or Coral board uses (for a name when cpuinfo has none).
ARM_PARTS = {
    ("0x41", "0xd03"): "ARM Cortex-A53",
    ("0x41", "0xd08"): "ARM Cortex-A72",
    ("0x41", "0xd0b"): "ARM Cortex-A76",
    ("0x41", "0xd05"): "ARM Cortex-A55",
}
ARM_VENDORS = {"0x41": "ARM", "0x51": "Qualcomm", "0x61": "Apple", "0x48": "HiSilicon"}


def _cpuinfo_fields(text: str) -> dict:
    """First value of each ``key : value`` line of /proc/cpuinfo text, keys lower-cased."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def processor(cpuinfo: str | None = None) -> dict:
    """The processor timings were taken on: model name, vendor, architecture and its speed-relevant ISA features.

    ``cpuinfo`` is /proc/cpuinfo's text (read when None); off Linux the model comes from ``platform``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    f = _cpuinfo_fields(cpuinfo)
    part = ARM_PARTS.get((f.get("cpu implementer"), f.get("cpu part")))
    model = (
        f.get("model name")
        or f.get("cpu model")
        or part
        or f.get("hardware")
        or platform.processor()
    )
    vendor = f.get("vendor_id") or ARM_VENDORS.get(
        f.get("cpu implementer", ""), f.get("cpu implementer")
    )
    flags = set((f.get("flags") or f.get("features") or "").split())
    return {
        "model": model or platform.machine(),
        "vendor": vendor,
        "arch": platform.machine(),
        "isa": [x for x in ISA_FEATURES if x in flags] if flags else None,
    }


def processor_text(m: dict) -> str:
    """One phrase naming the processor and interpreter of a ``machine_info`` record, for reports and README lines."""
    p = m.get("processor") or {"model": m.get("cpu"), "arch": m.get("machine")}
    isa = p.get("isa")
    text = f"{p.get('model')} ({', '.join(v for v in (p.get('vendor'), p.get('arch')) if v)}"
    text += f"; {' '.join(isa) if isa else 'ISA features unknown'})"
    it = m.get("interpreter_stack") or {}
    if it.get("name"):
        text += (
            f", {it['name']} {it.get('version') or ''}".rstrip() + f" with {it.get('cpu_delegate')}"
        )
    return text


def interpreter_stack() -> dict:
    """The interpreter the runtime picks here and the CPU delegate it gets (``metalite.runtime.interpreter``)."""
    try:
        from metalite.runtime.interpreter import cpu_delegate, get_backend

        backend = get_backend()
        return {
            "name": backend.name,
            "version": backend.version,
            "why": backend.why,
            "cpu_delegate": cpu_delegate(backend),
        }
    except Exception as e:  # noqa: BLE001 - the report says why rather than failing
        return {"name": None, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}


def _cpu_model() -> str:
    return processor()["model"]


def version(dist):
    """Installed version of distribution ``dist``, or None."""
    try:
        from importlib.metadata import version as _v

        return _v(dist)
    except Exception:
        return None


def blas_info() -> dict:
    """BLAS library and kernel numpy uses (threadpoolctl if installed, else numpy's build config)."""
    info = {
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "threadpoolctl": version("threadpoolctl"),
    }
    try:
        from threadpoolctl import threadpool_info

        info["libraries"] = [
            {
                k: d.get(k)
                for k in (
                    "internal_api",
                    "version",
                    "architecture",
                    "num_threads",
                    "threading_layer",
                )
            }
            for d in threadpool_info()
        ]
    except ImportError:
        info["libraries"] = None
        info["note"] = (
            "threadpoolctl not installed: kernel not detected (pip install threadpoolctl)"
        )
        try:
            cfg = np.show_config(mode="dicts")
            blas = cfg.get("Build Dependencies", {}).get("blas", {})
            info["numpy_build_blas"] = {
                k: blas.get(k) for k in ("name", "version", "openblas configuration")
            }
        except Exception:
            pass
    return info


def machine_info() -> dict:
    return {
        "cpu": _cpu_model(),
        "processor": processor(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": {
            d: version(d)
            for d in (
                "numpy",
                "ai-edge-litert",
                "tflite-runtime",
                "tensorflow",
                "tensorflow-cpu",
                "tf-keras",
                "tensorflow-model-optimization",
                "matplotlib",
                "metalite",
            )
        },
        "interpreter": os.environ.get("METALITE_TFLITE") or "auto",
        "interpreter_stack": interpreter_stack(),
        "blas": blas_info(),
        "env": {
            k: os.environ.get(k)
            for k in (
                "OPENBLAS_CORETYPE",
                "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "METALITE_TFLITE",
                "TF_ENABLE_ONEDNN_OPTS",
            )
            if os.environ.get(k)
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _busy_cpu_seconds():
    """CPU seconds all processes spent busy since boot (/proc/stat), or None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadWatch:
    """Context manager: ``with LoadWatch() as w: ...`` then ``w.result`` (see ``load_report``)."""

    def __enter__(self):
        self.before = _loadavg()
        self._t, self._busy, self._own = (
            time.perf_counter(),
            _busy_cpu_seconds(),
            _own_cpu_seconds(),
        )
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._t
        busy = _busy_cpu_seconds()
        others = None
        if busy is not None and self._busy is not None and wall > 0:
            others = max(0.0, (busy - self._busy) - (_own_cpu_seconds() - self._own)) / wall
        self.result = load_report(self.before, _loadavg(), others, wall)
        return False


def load_report(before, after, others_cores, seconds) -> dict:
    """The load record of one timed stretch, with a one-line warning when the machine was busy."""
    cores = os.cpu_count() or 1
    busy = (
        (others_cores > BUSY_CORES)
        if others_cores is not None
        else bool(before and before[0] > BUSY_CORES * 2)
    )
    rec = {
        "loadavg_before": before,
        "loadavg_after": after,
        "seconds": round(seconds, 1),
        "other_processes_cores": None if others_cores is None else round(others_cores, 2),
        "cores": cores,
        "busy": busy,
        "warning": None,
    }
    if busy:
        used = (
            f"other processes used {others_cores:.1f} of {cores} cores on average"
            if others_cores is not None
            else f"1-minute load average {before[0]:.1f} before timing"
        )
        rec["warning"] = (
            f"the machine was busy while timing ({used}; load average {loadavg_text(before)} before, "
            f"{loadavg_text(after)} after): absolute times are inflated, ratios within a round are the "
            f"figures to trust"
        )
    return rec


# ----------------------------------------------------------------------------- report.md
def loadavg_text(v) -> str:
    """'0.12/0.30/0.41' of a load average triple, or 'n/a'."""
    return "/".join(f"{x:.2f}" for x in v) if v else "n/a"


def load_line(load) -> str:
    """One line on how busy the machine was while timing."""
    if not load:
        return ""
    others = load.get("other_processes_cores")
    la = loadavg_text
    return (
        f"Load average (1/5/15 min) {la(load.get('loadavg_before'))} before, {la(load.get('loadavg_after'))} after "
        f"{load.get('seconds')} s of timing"
        + (
            f"; other processes used {others:.2f} of {load.get('cores')} cores on average meanwhile"
            if others is not None
            else ""
        )
        + "."
    )


def _library_text(d: dict) -> str:
    """One threadpoolctl entry, naming only what it reports (an OpenMP runtime has no version or kernel)."""
    words = [
        d.get("internal_api"),
        d.get("version"),
        f"kernel {d['architecture']}" if d.get("architecture") else None,
    ]
    threads = f", {d['num_threads']} threads" if d.get("num_threads") is not None else ""
    return " ".join(str(w) for w in words if w) + threads


def machine_lines(report) -> list:
    m = report.get("machine", {})
    blas = m.get("blas") or {}
    libs = blas.get("libraries")
    L = [
        "## machine",
        "",
        f"{processor_text(m)}; {m.get('cores')} cores ({m.get('cores_available')} available), "
        f"{m.get('os')}, Python {m.get('python')}.",
        "",
        "Libraries: "
        + ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items() if v)
        + ".",
        "",
        "BLAS: "
        + (
            "; ".join(_library_text(d) for d in libs)
            if libs
            else f"{blas.get('note', '')} numpy build: {blas.get('numpy_build_blas')}"
        )
        + f". OPENBLAS_CORETYPE={blas.get('OPENBLAS_CORETYPE') or 'unset'}.",
        "",
    ]
    avail = get(report, "variants", "available") or {}
    L.append(
        "Variants: " + "; ".join(f"**{v['label']}** ({v['source']})" for v in avail.values()) + "."
    )
    return L
