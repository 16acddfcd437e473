"""Instructions executed per backbone invoke, by function, counted by valgrind's callgrind (load-independent).

    python scripts/invoke_instructions.py models/omniglot models/omniglot-fast [--invokes 50] [--top 8]

Each bundle's ``backbone.tflite`` is opened as the runtime opens it (``open_model``, 1 thread, batch 1) in
a Python process run under ``valgrind --tool=callgrind``, collecting only inside
``tflite::Subgraph::Invoke()``; counts are divided by the number of invokes. Wall-clock time on a shared
machine moves with its load; these counts do not. Caveat: valgrind emulates up to AVX2, so XNNPACK picks
its AVX2 kernels under it, not the AVX-512/VNNI ones it uses natively on such a CPU: the counts describe
that code path (the kernel names in the table say which). Needs ``valgrind`` (apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKER = """
import sys, numpy as np
from metalite.runtime.interpreter import open_model
interp = open_model(sys.argv[1], num_threads=1)[0]
d = interp.get_input_details()[0]
interp.resize_tensor_input(d["index"], [1, *d["shape"][1:]], strict=True)
interp.allocate_tensors()
interp.set_tensor(d["index"], np.zeros([1, *d["shape"][1:]], d["dtype"]))
for _ in range(int(sys.argv[2])):
    interp.invoke()
"""
TOGGLE = "tflite::Subgraph::Invoke()"


def count(model: Path, invokes: int, workdir: Path) -> tuple:
    """(instructions per invoke, [(instructions per invoke, function)] by exclusive count) for one model."""
    out = workdir / f"{model.parent.name}.callgrind"
    script = workdir / "worker.py"
    script.write_text(WORKER)
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            f"--toggle-collect={TOGGLE}",
            sys.executable,
            str(script),
            str(model),
            str(invokes),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    total, funcs = None, []
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?\S*PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", "")) / invokes
            continue
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S+?):(.+?)(?: \[.*\])?$", line)
        if m and total is not None:
            funcs.append((int(m.group(1).replace(",", "")) / invokes, m.group(3).strip()))
    if not total:
        raise SystemExit(
            f"{model}: callgrind collected nothing inside {TOGGLE} (symbol not found?)"
        )
    return total, funcs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--invokes", type=int, default=50)
    ap.add_argument("--top", type=int, default=8, help="functions listed per bundle")
    a = ap.parse_args(argv)
    if not shutil.which("valgrind") or not shutil.which("callgrind_annotate"):
        raise SystemExit("valgrind not found: apt-get install valgrind")
    from metalite.bench.machine import machine_info, processor_text

    print(
        f"Instructions per invoke (callgrind, inside {TOGGLE}, {a.invokes} invokes, batch 1, 1 thread), "
        f"host {processor_text(machine_info())}; valgrind exposes at most AVX2 to the program.\n"
    )
    totals = {}
    with tempfile.TemporaryDirectory() as td:
        for b in a.bundles:
            total, funcs = count(b / "backbone.tflite", a.invokes, Path(td))
            totals[str(b)] = total
            print(f"**{b}**: {total / 1e6:.3f} M instructions per invoke\n")
            print("| M instr. | share | function |\n|---|---|---|")
            for n, name in funcs[: a.top]:
                print(f"| {n / 1e6:.3f} | {n / total:.0%} | `{name[:110]}` |")
            print()
    if len(totals) > 1:
        first = next(iter(totals.values()))
        print(
            "Ratios to the first bundle: "
            + ", ".join(f"`{k}` {first / v:.2f}×" for k, v in totals.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
