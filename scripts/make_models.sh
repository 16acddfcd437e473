#!/usr/bin/env bash
# Rebuild the shipped bundles models/omniglot (about 75 minutes on 2 idle cores: train ~55, compress ~10,
# export + Lake-style evaluation ~5), models/omniglot-fast (the same float model with half of its filters
# removed: about 20 more minutes) and models/glyphs (about 15 minutes).
# models/omniglot uses the two small Omniglot background sets in ../shared/data/omniglot (tests and
# benchmarks data; the product itself never needs that path).
# Usage: bash scripts/make_models.sh [omniglot|omniglot-fast|glyphs|all]   (omniglot-fast needs omniglot's float model)
set -euo pipefail
cd "$(dirname "$0")/.."
O=${OMNIGLOT:-../shared/data/omniglot}
W=${WORK:-runs/models}
DATA="omniglot:$O/images_background_small1.zip,$O/images_background_small2.zip"
mkdir -p "$W" models

omniglot() {
  # metalite train's defaults are the measured recipe (docs/accuracy.md): 60-way 1-shot ProtoNet, rotations
  # as classes, half the episodes within one alphabet, augmentation, 12,000 episodes. Alphabets held out:
  # val Tagalog, test Greek and Korean (the Lake-style figures in the manifest).
  metalite train --data "$DATA" \
      --algorithm protonet --backbone conv4 --out "$W/omniglot"   # 12,000 steps, validation every 1,000
  metalite compress "$W/omniglot" --sparsity 0.5 --distill --out "$W/omniglot-pqat"
  metalite export "$W/omniglot-pqat" --out models/omniglot --edgetpu --float --tta 8 --eval-episodes 400 --force
  metalite evaluate models/omniglot --protocol lake --runs 400 --data "$DATA"
}

omniglot_fast() {
  # half of the filters of the first three conv layers removed (kernel L1 norm, per layer): 2.5x faster per
  # image than the unpruned int8 model at +0.4 pt Lake-style error (benchmarks/reference, pareto section);
  # 8,000 distilled episodes of fine-tuning (3,000 left +0.6 pt); no magnitude pruning on top.
  metalite compress "$W/omniglot" --structured 0.5 --structured-steps 8000 --sparsity 0 --qat-steps 300 \
      --distill --out "$W/omniglot-fast"
  metalite export "$W/omniglot-fast" --out models/omniglot-fast --edgetpu --float --tta 8 --eval-episodes 400 --force
  metalite evaluate models/omniglot-fast --protocol lake --runs 400 --data "$DATA"
}

glyphs() {
  metalite train --data glyphs --algorithm protonet --backbone dsconv --ways 30 --shots 1 --queries 5 \
      --augment none --within-alphabet 0 --no-rotations \
      --steps 1200 --val-every 300 --out "$W/glyphs" --force
  metalite compress "$W/glyphs" --sparsity 0.5 --out "$W/glyphs-pqat" --force
  metalite export "$W/glyphs-pqat" --out models/glyphs --edgetpu --float --force
  # the float model ships too (without checkpoints): what `fleet publish --model` keeps for `fleet update`
  rm -rf models/float/glyphs && mkdir -p models/float/glyphs
  cp "$W/glyphs"/config.json "$W/glyphs"/backbone.weights.h5 "$W/glyphs"/head.npz models/float/glyphs/
}

case "${1:-all}" in
  omniglot) omniglot ;;
  omniglot-fast) omniglot_fast ;;
  glyphs) glyphs ;;
  all) omniglot; omniglot_fast; glyphs ;;
  *) echo "usage: $0 [omniglot|omniglot-fast|glyphs|all]" >&2; exit 2 ;;
esac
