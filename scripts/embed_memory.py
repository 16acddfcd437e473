"""Peak RSS of ``FewShotClassifier.embed`` on N images of SIDE x SIDE, blocked (now) and unblocked (before).

    python scripts/embed_memory.py [--n 10000] [--side 105] [--repeat 2]

Each measurement runs in a fresh child: open the shipped bundle (``models/omniglot``, tta from its head),
embed two images, reset the peak (``/proc/self/clear_refs`` = 5), embed the uint8 (N, SIDE, SIDE) array
(cache off), report ``VmHWM - VmRSS(before)``. ``unblocked`` converts the whole array first, as before issue 22.
Linux only.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "omniglot"

CHILD = r"""
import json, sys, time
import numpy as np
from metalite.runtime import FewShotClassifier
import metalite.runtime.classifier as c
n, side, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if mode == "unblocked":
    c._blocks = lambda images: None
def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
clf = FewShotClassifier(sys.argv[4], cache_size=0)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
clf.embed(x[:2])
base = kib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
e = clf.embed(x)
print(json.dumps({"mode": mode, "n": n, "side": side, "peak_above_mib": (kib("VmHWM") - base) / 1024,
                  "seconds": time.perf_counter() - t, "shape": list(e.shape)}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--side", type=int, default=105)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    for _ in range(a.repeat):
        for mode in ("blocked", "unblocked"):
            out = (
                subprocess.run(
                    [sys.executable, "-c", CHILD, str(a.n), str(a.side), mode, str(BUNDLE)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            print(
                json.dumps({**json.loads(out), "load": open("/proc/loadavg").read().split()[:3]}),
                flush=True,
            )


if __name__ == "__main__":
    main()
