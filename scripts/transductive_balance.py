"""Transductive refinement on unbalanced batches: inductive vs. always-soft (before issue 22) vs. ``head.refine``.

    python scripts/transductive_balance.py [--episodes 500] [--data .../images_background.zip]

20-way 1-shot episodes on held-out Omniglot alphabets the shipped ``models/omniglot`` never saw (Arcadian,
Asomtavruli, Cyrillic, Hebrew, Mkhedruli: the ``test`` split of ``images_background.zip``), embedded once
by the int8 bundle through the device runtime. Per episode: 20 random characters, one random drawing each
as support; queries: 15 drawings of one class / 15 of two classes (8 + 7) / one of each of 18 or 10
classes / one of each class (Lake's runs) / 15 of each class. The same episodes for every method. "before"
is ``refine(..., cover=0)``: soft weights always, as before issue 22.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from metalite.runtime import FewShotClassifier
from metalite.runtime import head as headlib
from metalite.training.datasets import load_data

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "omniglot"
UNSEEN = {"Arcadian", "Asomtavruli_(Georgian)", "Cyrillic", "Hebrew", "Mkhedruli_(Georgian)"}
SCENARIOS = (
    "one class x15",
    "two classes 8+7",
    "18 classes x1",
    "10 classes x1",
    "20 classes x1",
    "20 classes x15",
)


def queries(name: str, pool: list):
    if name == "one class x15":
        return pool[0][:15], np.zeros(15, int)
    if name == "two classes 8+7":
        return np.concatenate([pool[0][:8], pool[1][:7]]), np.array([0] * 8 + [1] * 7)
    if name.endswith("x1"):
        k = int(name.split()[0])
        return np.array([p[0] for p in pool[:k]]), np.arange(k)
    return np.concatenate([p[:15] for p in pool]), np.repeat(np.arange(20), 15)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--data", default="/work/shared/data/omniglot/images_background.zip")
    a = ap.parse_args()
    t0 = time.perf_counter()
    d = load_data(f"omniglot:{a.data}", 28, split="test")
    classes = [c for c in range(d.num_classes) if d.groups[c] in UNSEEN]
    clf = FewShotClassifier(BUNDLE)
    emb = clf.embed(d.images)
    spec, scale = clf.head_spec, float(clf.head_spec.adaptation["scale"])
    methods = {"inductive": None, "before (always soft)": 0.0, "now (head.refine)": headlib.COVER}
    right = {(s, m): 0 for s in SCENARIOS for m in methods}
    total = dict.fromkeys(SCENARIOS, 0)
    rng = np.random.default_rng(0)
    for _ in range(a.episodes):
        chosen = rng.choice(classes, 20, replace=False)
        pool = [rng.permutation(d.indices_of(c)) for c in chosen]
        sup = np.array([p[0] for p in pool])
        pool = [p[1:] for p in pool]
        head = headlib.adapt(spec, emb[sup], np.arange(20), 20)
        for s in SCENARIOS:
            q, truth = queries(s, pool)
            total[s] += len(q)
            for m, cover in methods.items():
                h = (
                    head
                    if cover is None
                    else headlib.refine(head, emb[sup], np.arange(20), emb[q], scale, cover=cover)
                )
                right[(s, m)] += int((h.logits(emb[q]).argmax(1) == truth).sum())
    print(
        f"{len(classes)} characters of {', '.join(sorted(UNSEEN))}; {a.episodes} episodes; "
        f"{time.perf_counter() - t0:.0f} s; load {open('/proc/loadavg').read().split()[:3]}"
    )
    print("| queries | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for s in SCENARIOS:
        print(
            f"| {s} | "
            + " | ".join(f"{100 * right[(s, m)] / total[s]:.1f}%" for m in methods)
            + " |"
        )
    print(json.dumps({s: {m: right[(s, m)] / total[s] for m in methods} for s in SCENARIOS}))


if __name__ == "__main__":
    main()
