#!/usr/bin/env bash
# The main job end to end on the built-in glyph data: install, meta-train, evaluate, compress,
# export an int8 bundle, inspect it, then teach it new classes and predict with the device runtime.
# Usage: bash scripts/demo.sh [WORKDIR]   (default: runs/demo; about 15-25 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-runs/demo}
STEPS=${DEMO_STEPS:-600}
python -m pip install -q -e ".[train,dev]"
mkdir -p "$W"

echo "== 1. meta-train ProtoNet on the built-in glyphs (held-out classes validate) =="
metalite train --data glyphs --algorithm protonet --ways 20 --shots 1 --queries 5 \
    --steps "$STEPS" --val-every 200 --out "$W/float"

echo "== 2. evaluate on held-out test glyph classes, adapting head-only like the device =="
metalite evaluate "$W/float" --ways 5 --shots 1 --episodes 300
metalite evaluate "$W/float" --ways 20 --shots 1 --episodes 300

echo "== 3. compress: 50% magnitude pruning + pruning-preserving QAT =="
metalite compress "$W/float" --sparsity 0.5 --out "$W/pqat"

echo "== 4. export a full-int8 TFLite bundle (+ Edge TPU report) and inspect it =="
metalite export "$W/pqat" --out "$W/bundle" --edgetpu --force
metalite inspect "$W/bundle"

echo "== 5. on the 'device': learn 5 new classes from 5 images each, then predict =="
python - "$W" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from metalite.training.datasets import load_data
w = Path(sys.argv[1])
data = load_data("glyphs", 28, "test")
for c in range(5):
    idx = data.indices_of(c)
    d = w / "support" / data.class_names[c].split(" ", 1)[0].replace("+", "")
    d.mkdir(parents=True, exist_ok=True)
    for i in idx[:5]:
        Image.fromarray(data.images[i]).save(d / f"{i}.png")
    q = w / "query"; q.mkdir(exist_ok=True)
    Image.fromarray(data.images[idx[10]]).save(q / f"{d.name}.png")
PY
metalite adapt "$W/bundle" "$W/support" --out "$W/state.npz"
metalite predict "$W/bundle" --state "$W/state.npz" "$W"/query/*.png
echo "done: model in $W/float, compressed in $W/pqat, bundle in $W/bundle"
