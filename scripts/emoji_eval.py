#!/usr/bin/env python3
"""Cross-artist one-shot on the held-out emoji categories: bundles beside the simple baselines, same episodes.

    python scripts/emoji_eval.py --data emoji:~/.cache/metalite/emoji/data models/emoji models/omniglot \\
        --ways 5 20 --episodes 600 --out runs/emoji_eval.json

Each N-way 1-shot episode takes N concepts of the held-out test categories ("Animals & Nature", "Food &
Drink"; ``metalite.training.datasets.emoji_split``), the support image drawn by one artist and the query by
another (``metalite.training.crossdrawer``). Bundles answer through ``FewShotClassifier`` (``fit`` on the
support, ``predict`` on the queries, the images given at the data's size as RGB arrays); the baselines are
nearest neighbour on raw RGB pixels at 28 px and on a colour histogram. Prints one line per method and
setting (mean ± 95% CI over episodes, and the per-category means) and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def bundle_classifier(path: str, images, tta=None):
    from metalite.runtime import FewShotClassifier

    clf = FewShotClassifier(
        path, num_threads=1, delegate="cpu", cache_size=len(images) + 10, tta=tta
    )

    def classify(s_idx, q_idx):
        clf.fit(images[s_idx], list(range(len(s_idx))))
        return clf.predict(images[q_idx])

    return classify, clf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="*", help="bundle directories to measure")
    ap.add_argument("--data", required=True, help="emoji:PATH (scripts/fetch_emoji.py)")
    ap.add_argument(
        "--split", default="test", help="split of the data (default: the held-out test categories)"
    )
    ap.add_argument(
        "--size",
        type=int,
        default=64,
        help="size the images are loaded at (and given to the bundles)",
    )
    ap.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--artists",
        default=None,
        help="only these artists, e.g. 1,2 (01 Noto, 02 Twemoji, 03 OpenMoji)",
    )
    ap.add_argument(
        "--tta",
        type=int,
        nargs="+",
        default=[None],
        help="shift-averaging copies to measure each bundle with (0, 4, 8) [default: the bundle's]",
    )
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    from metalite.training import crossdrawer as cd
    from metalite.training.datasets import load_data

    data = load_data(args.data, args.size, args.split, channels=3)
    print(
        f"{args.data} [{args.split}]: {data.num_classes} concepts, {len(data.images)} images, "
        f"categories {sorted(set(data.groups))}",
        flush=True,
    )
    methods = {}
    if not args.no_baselines:
        methods["raw RGB pixels, 28 px, nearest neighbour"] = cd.nearest_neighbour(
            cd.pixel_features(data, 28)
        )
        methods["colour histogram (8x8x8), nearest neighbour"] = cd.nearest_neighbour(
            cd.histogram_features(data), "l1"
        )
    info = {}
    for b in args.bundles:
        for tta in args.tta:
            classify, clf = bundle_classifier(b, data.images, tta)
            name = b if len(args.tta) == 1 else f"{b} (tta {clf.tta})"
            methods[name] = classify
            info[name] = {
                "input_shape": list(clf.bundle.input_shape),
                "tta": clf.tta,
                "backend": clf.backend,
            }
    results = {
        "data": args.data,
        "split": args.split,
        "size": args.size,
        "seed": args.seed,
        "bundles": info,
        "artists": args.artists,
        "episodes": args.episodes,
        "concepts": data.num_classes,
        "results": {},
    }
    for ways in args.ways:
        artists = None if args.artists is None else {int(a) for a in args.artists.split(",")}
        eps = cd.episodes(data, ways, args.episodes, seed=args.seed + ways, drawers=artists)
        for name, classify in methods.items():
            t0 = time.time()
            r = cd.score(classify, data, eps)
            r["seconds"] = round(time.time() - t0, 1)
            results["results"].setdefault(name, {})[f"{ways}way1shot"] = r
            cats = ", ".join(f"{g} {100 * v['mean']:.1f}%" for g, v in r["per_category"].items())
            pairs = ", ".join(
                f"{k} {100 * v['mean']:.0f}%" for k, v in r["per_drawer_pair"].items()
            )
            print(
                f"{ways:>2}-way 1-shot  {100 * r['mean']:5.1f}% ± {100 * r['ci95']:.1f}  {name}  [{cats}] [{pairs}]",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
