#!/usr/bin/env bash
# The speed/accuracy picture of structured pruning (issue 13): compress one float model with 0, 25, 50 and
# 75% of its filters removed (then PQAT, distilled from the float model), export each to an int8 bundle and
# benchmark them together (Lake-style held-out error vs ms/image and bytes, backbones timed interleaved).
#
#   bash scripts/structured_pareto.sh FLOAT_MODEL_DIR WORK_DIR [STRUCTURED_STEPS] [QAT_STEPS]
#
# Run it on an idle machine for the timings that go into benchmarks/reference (the report warns otherwise).
set -euo pipefail
F=${1:?usage: $0 FLOAT_MODEL_DIR WORK_DIR [STRUCTURED_STEPS] [QAT_STEPS]}
W=${2:?usage: $0 FLOAT_MODEL_DIR WORK_DIR [STRUCTURED_STEPS] [QAT_STEPS]}
STEPS=${3:-3000}
QAT=${4:-300}
mkdir -p "$W"
for f in 0 0.25 0.5 0.75; do
  metalite compress "$F" --out "$W/s$f" --structured "$f" --structured-score l1 --structured-scope layer \
      --structured-steps "$STEPS" --sparsity 0 --qat-steps "$QAT" --distill
  metalite export "$W/s$f" --out "$W/b$f" --edgetpu --tta "${TTA:-8}" --force
done
DATA=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['data'])" "$F/config.json")
metalite bench "$W/b0.5" --data "$DATA" --model "$F" --model "$W/s0.5" --pareto "$W/b0" --pareto "$W/b0.25" \
    --pareto "$W/b0.75" --out "$W/bench"
