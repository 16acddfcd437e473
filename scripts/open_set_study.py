"""The study behind metalite.runtime.openset (docs/open_set.md): its constants and the candidate rejection rules.

    python scripts/open_set_study.py BUNDLE OMNIGLOT_ZIP --alphabets unseen      # constants, candidate rules
    python scripts/open_set_study.py BUNDLE OMNIGLOT_ZIP --alphabets heldout --skip Early_Aramaic,Latin,Sanskrit

``unseen``: the alphabets of the training split of OMNIGLOT_ZIP (images_background.zip) that the bundle's own
training data does not contain (its manifest's omniglot files, looked up next to OMNIGLOT_ZIP): where the
constants were measured. ``val``: the validation split (for a bundle trained on all of OMNIGLOT_ZIP's training
split, which leaves no unseen training alphabets). ``heldout``: the test split (``HELDOUT_SPLIT``), minus --skip.
Embeddings come from the runtime (int8, the bundle's shift averaging), distances in the head's output space.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from statistics import NormalDist

import numpy as np

from metalite.runtime import FewShotClassifier, openset
from metalite.runtime.head import hidden_forward
from metalite.training.datasets import HELDOUT_SPLIT, load_data
from metalite.training.evaluate import auroc


def _alphabets_of(zip_path: Path) -> set:
    return {n.split("/")[1] for n in zipfile.ZipFile(zip_path).namelist() if n.count("/") >= 2}


def load(bundle: str, data: Path, which: str, skip: list):
    clf = FewShotClassifier(bundle, delegate="cpu", cache_size=0)
    if which == "unseen":
        ds = load_data(f"omniglot:{data}", 28, "train")
        spec = clf.bundle.manifest.get("training", {}).get("data", "")
        seen = set().union(
            *[_alphabets_of(data.parent / f) for f in spec.partition(":")[2].split(",") if f]
        )
        skip = sorted(set(skip) | seen)
    else:
        ds = load_data(f"omniglot:{data}", 28, "val" if which == "val" else HELDOUT_SPLIT)
    ds = ds.subset([c for c in range(ds.num_classes) if ds.groups[c] not in set(skip)])
    if ds.num_classes < 12:
        raise SystemExit(
            f"only {ds.num_classes} classes left on these alphabets; choose other --alphabets"
        )
    h = hidden_forward(clf.head_spec.weights, clf.head_spec.activations, clf.embed(ds.images))[-1]
    return ds, h.astype(np.float64)


def constants(ds, h) -> dict:
    """The spread of log leave-one-out distances within a class (5 images) and the 1-shot distance ratio."""
    idx = [ds.indices_of(c) for c in range(ds.num_classes)]
    dev = [np.log(openset.leave_one_out([h[i[:5]]])) for i in idx]
    spread = float(np.concatenate([d - d.mean() for d in dev]).std())
    rng, ratios = np.random.default_rng(0), []
    for _ in range(600):
        picks = [rng.permutation(idx[c]) for c in rng.choice(ds.num_classes, 5, replace=False)]
        p = np.stack([h[q[0]] for q in picks])
        d = ((p[:, None] - p[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        scale = np.median(d.min(1))
        for k, q in enumerate(picks):
            ratios += list(np.log(((h[q[1:6]] - p[k]) ** 2).sum(-1) / scale))
    r = np.array(ratios)
    return {
        "log_loo_spread": round(spread, 3),
        "one_shot_ratio": [round(float(r.mean()), 3), round(float(r.std()), 3)],
    }


def candidates(hidden: list, rate: float) -> dict:
    """Thresholds of the candidate rules for one support set (one (k, d) array per class)."""
    z, out = NormalDist().inv_cdf(1 - rate), {}
    loo = openset.leave_one_out(hidden)
    if len(loo):
        out["loo empirical quantile"] = float(np.quantile(loo, 1 - rate))
        out["loo per-class max"] = None  # filled per class below
        nu = 64.0  # scaled chi-square with the embedding's 64 degrees of freedom (Wilson-Hilferty)
        out["loo scaled chi2(64)"] = float(
            loo.mean() * (1 - 2 / (9 * nu) + z * np.sqrt(2 / (9 * nu))) ** 3
        )
    out["chosen (runtime.openset)"] = openset.calibrate(hidden, rate)["threshold"]
    return out


def study(ds, h, rate: float, episodes: int) -> list:
    idx = [ds.indices_of(c) for c in range(ds.num_classes)]
    rows = []
    for ways, shots in ((5, 1), (5, 2), (5, 5), (1, 2), (1, 5)):
        q = 5 if ways > 1 else 10
        rng, got, aur = np.random.default_rng(0), {}, {"distance": [], "max softmax": []}
        for _ in range(episodes):
            cls = rng.choice(ds.num_classes, 2 * ways if ways > 1 else 6, replace=False)
            picks = [rng.permutation(idx[c]) for c in cls]
            hidden = [h[p[:shots]] for p in picks[:ways]]
            known = np.concatenate([p[shots : shots + q] for p in picks[:ways]])
            unknown = np.concatenate([p[:q] for p in picks[ways:]])[
                : ways * q if ways > 1 else 5 * q
            ]
            yk = np.repeat(np.arange(ways), q)
            protos = openset.prototypes(hidden).astype(np.float64)
            dk = ((h[known][:, None] - protos[None]) ** 2).sum(-1)
            du = ((h[unknown][:, None] - protos[None]) ** 2).sum(-1)
            aur["distance"].append(auroc(du.min(1), dk.min(1)))
            if ways > 1:
                msp = lambda d: np.exp(-d + d.min(1, keepdims=True)).sum(1)  # noqa: E731  1 / max softmax
                aur["max softmax"].append(auroc(msp(du), msp(dk)))
            right = dk.argmin(1) == yk
            th = candidates(hidden, rate)
            if (
                "loo per-class max" in th
            ):  # a class's own largest leave-one-out distance (no pooling)
                per = np.array(
                    [openset.leave_one_out([x]).max() if len(x) > 1 else np.inf for x in hidden]
                )
                th["loo per-class max"] = per
            for name, t in th.items():
                if t is None:
                    continue
                tk = t[dk.argmin(1)] if isinstance(t, np.ndarray) else t
                tu = t[du.argmin(1)] if isinstance(t, np.ndarray) else t
                g = got.setdefault(name, [[], [], []])
                g[0].append(np.mean(right & (dk.min(1) <= tk)))
                g[1].append(np.mean(dk.min(1) > tk))
                g[2].append(np.mean(du.min(1) > tu))
        for name, (acc, frr, rej) in got.items():
            rows.append(
                {
                    "setting": f"{ways}-way {shots}-shot",
                    "rule": name,
                    "known_accuracy": round(np.mean(acc), 4),
                    "false_rejection": round(np.mean(frr), 4),
                    "unknown_rejected": round(np.mean(rej), 4),
                }
            )
        rows.append(
            {
                "setting": f"{ways}-way {shots}-shot",
                "auroc": {k: round(float(np.mean(v)), 4) for k, v in aur.items() if v},
            }
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("data", type=Path, help="images_background.zip")
    ap.add_argument("--alphabets", choices=["unseen", "val", "heldout"], default="unseen")
    ap.add_argument("--skip", default="", help="comma-separated alphabets to leave out")
    ap.add_argument("--rate", type=float, default=openset.DEFAULT_RATE)
    ap.add_argument("--episodes", type=int, default=300)
    a = ap.parse_args()
    ds, h = load(a.bundle, a.data, a.alphabets, [s for s in a.skip.split(",") if s])
    print(
        json.dumps(
            {"alphabets": sorted(set(ds.groups)), "classes": ds.num_classes, **constants(ds, h)}
        )
    )
    for row in study(ds, h, a.rate, a.episodes):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
