"""What open-set answers cost on the device: predict of one image and fit, unknown off vs "auto", interleaved.

python scripts/open_set_cost.py        # shipped models/omniglot, the Omniglot test fixture, 1 thread
"""

import time
from pathlib import Path

import numpy as np

from metalite.runtime import FewShotClassifier
from metalite.training.datasets import load_data

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "data" / "omniglot"
ds = load_data(f"omniglot:{FIX / 'mini1.zip'},{FIX / 'mini2.zip'}", 28, "test")
sup = {f"c{c}": ds.images[ds.indices_of(c)[:5]] for c in range(5)}
q = ds.images[ds.labels >= 5]
clfs = {
    k: FewShotClassifier(
        REPO / "models" / "omniglot", delegate="cpu", num_threads=1, cache_size=0, unknown=u
    )
    for k, u in (("off", None), ("auto", "auto"))
}
for c in clfs.values():
    c.fit(sup)
t = {k: [] for k in clfs}
for rep in range(40):
    for k, c in clfs.items():
        i = rep % len(q)
        t0 = time.perf_counter()
        c.predict(q[i : i + 1])
        t[k].append(time.perf_counter() - t0)
for k, v in t.items():
    print(
        f"predict 1 image, unknown {k}: median {1000 * np.median(v):.2f} ms (40 calls, interleaved)"
    )
f = {k: [] for k in clfs}
for _ in range(10):
    for k, c in clfs.items():
        t0 = time.perf_counter()
        c.fit(sup)
        f[k].append(time.perf_counter() - t0)
for k, v in f.items():
    print(
        f"fit 5 classes x 5 images, unknown {k}: median {1000 * np.median(v):.1f} ms (10 fits, interleaved)"
    )
