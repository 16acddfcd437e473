#!/usr/bin/env bash
# The speed/accuracy picture of structured pruning: compress one float model with 0, 25, 50 and 75% of the
# filters of its first three conv layers removed (and 50% of the first two only), each fine-tuned on
# distilled episodes, then PQAT; export each to an int8 bundle (shift averaging as the shipped bundle) and
# benchmark them together: Lake-style held-out error through the runtime vs ms/image and bytes, backbones
# timed interleaved.
#
#   bash scripts/structured_pareto.sh FLOAT_MODEL_DIR WORK_DIR [STRUCTURED_STEPS]
#
# STRUCTURED_STEPS defaults to 8,000 episodes (measured on Omniglot: 3,000 leave 50% of filters removed at
# +0.64 pt, 8,000 at +0.37 pt). BUNDLE (default WORK_DIR/b0.5) is the bundle the report leads with,
# COMPRESSED its compressed model directory, OUT the report directory (default WORK_DIR/bench). The
# reference in benchmarks/reference (run it on an idle machine; the report warns otherwise):
#
#   BUNDLE=models/omniglot COMPRESSED=runs/models/omniglot-pqat OUT=benchmarks/reference \
#       bash scripts/structured_pareto.sh runs/models/omniglot runs/pareto
set -euo pipefail
F=${1:?usage: $0 FLOAT_MODEL_DIR WORK_DIR [STRUCTURED_STEPS]}
W=${2:?usage: $0 FLOAT_MODEL_DIR WORK_DIR [STRUCTURED_STEPS]}
STEPS=${3:-8000}
mkdir -p "$W"
pareto=()
for f in 0 0.25 0.5 0.75 0.5,0.5,0; do
  n=${f//,/-}
  if [ ! -f "$W/b$n/manifest.json" ]; then  # a finished bundle is kept: rerunning resumes the sweep
    metalite compress "$F" --out "$W/s$n" --structured "$f" --structured-steps "$STEPS" --sparsity 0 \
        --qat-steps 300 --distill --force
    metalite export "$W/s$n" --out "$W/b$n" --edgetpu --tta "${TTA:-8}" --force
  fi
  pareto+=(--pareto "$W/b$n")
done
DATA=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['data'])" "$F/config.json")
B=${BUNDLE:-$W/b0.5}
C=${COMPRESSED:-$W/s0.5}
echo "load average before the bench: $(cat /proc/loadavg)"
metalite bench "$B" --data "$DATA" --model "$F" --model "$C" "${pareto[@]}" --out "${OUT:-$W/bench}"
