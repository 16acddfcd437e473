#!/usr/bin/env bash
# The main job end to end on the built-in glyph data: install, meta-train, evaluate, compress,
# export an int8 bundle, inspect it, then teach it new classes and predict with the device runtime.
# Usage: bash scripts/demo.sh [WORKDIR]   (default: runs/demo; about 2 minutes on 2 cores after the install,
# plus rendering the glyph dataset on the very first run: 3.8 min of CPU time measured)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-runs/demo}
STEPS=${DEMO_STEPS:-600}
python -m pip install -q -e ".[train,dev]"
mkdir -p "$W"

echo "== 1. meta-train ProtoNet on the built-in glyphs (held-out classes validate) =="
metalite train --data glyphs --algorithm protonet --ways 20 --shots 1 --queries 5 \
    --steps "$STEPS" --val-every 200 --out "$W/float" --force

echo "== 2. evaluate on held-out test glyph classes, adapting head-only like the device =="
metalite evaluate "$W/float" --ways 5 --shots 1 --episodes 300
metalite evaluate "$W/float" --ways 20 --shots 1 --episodes 300

echo "== 3. compress: 50% magnitude pruning + pruning-preserving QAT =="
metalite compress "$W/float" --sparsity 0.5 --out "$W/pqat" --force

echo "== 4. export a full-int8 TFLite bundle (+ Edge TPU report) and inspect it =="
metalite export "$W/pqat" --out "$W/bundle" --edgetpu --force
metalite inspect "$W/bundle"

echo "== 5. on the 'device': learn 5 new glyph classes from 5 images each, then predict 15 unseen images of each =="
python - "$W" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from metalite.training.datasets import load_data
w = Path(sys.argv[1])
data = load_data("glyphs", 28, "test", progress=False)
for c in np.random.default_rng(0).choice(data.num_classes, 5, replace=False):  # 5 held-out classes
    idx = data.indices_of(c)
    name = data.class_names[c].split(" ", 1)[0].replace("+", "")
    for sub, picks in (("support", idx[:5]), ("query", idx[5:20])):
        d = w / sub / name
        d.mkdir(parents=True, exist_ok=True)
        for i in picks:
            Image.fromarray(data.images[i]).save(d / f"{i}.png")
PY
metalite adapt "$W/bundle" "$W/support" --out "$W/state.npz"
metalite predict "$W/bundle" --state "$W/state.npz" "$W"/query/*/*.png --json > "$W/predictions.json"
python - "$W" <<'PY'
import json, sys
from pathlib import Path
rows = json.loads((Path(sys.argv[1]) / "predictions.json").read_text())
rows = rows if isinstance(rows, list) else rows["predictions"]
right = {}
for r in rows:
    truth = Path(r["image"]).parent.name
    right.setdefault(truth, []).append(r["label"] == truth)
for label, ok in right.items():
    print(f"  {label:8s} {sum(ok):2d}/{len(ok)} held-out images right")
n, k = sum(len(v) for v in right.values()), sum(sum(v) for v in right.values())
print(f"5-way 5-shot on the device, taught classes never seen in training: {k}/{n} = {100 * k / n:.1f}% right")
PY
echo "done: model in $W/float, compressed in $W/pqat, bundle in $W/bundle"
