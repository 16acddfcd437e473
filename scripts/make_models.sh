#!/usr/bin/env bash
# Rebuild the shipped bundles models/omniglot (about 75 minutes on 2 idle cores: train ~55, compress ~10,
# export + Lake-style evaluation ~5) and models/glyphs (about 15 minutes).
# models/omniglot uses the two small Omniglot background sets in ../shared/data/omniglot (tests and
# benchmarks data; the product itself never needs that path). Usage: bash scripts/make_models.sh [omniglot|glyphs]
set -euo pipefail
cd "$(dirname "$0")/.."
O=${OMNIGLOT:-../shared/data/omniglot}
W=${WORK:-runs/models}
mkdir -p "$W" models

omniglot() {
  # metalite train's defaults are the measured recipe (docs/accuracy.md): 60-way 1-shot ProtoNet, rotations
  # as classes, half the episodes within one alphabet, augmentation, 12,000 episodes. Alphabets held out:
  # val Tagalog, test Greek and Korean (the Lake-style figures in the manifest).
  metalite train --data "omniglot:$O/images_background_small1.zip,$O/images_background_small2.zip" \
      --algorithm protonet --backbone conv4 --steps 12000 --val-every 2000 --out "$W/omniglot"
  metalite compress "$W/omniglot" --sparsity 0.5 --distill --out "$W/omniglot-pqat"
  metalite export "$W/omniglot-pqat" --out models/omniglot --edgetpu --float --tta 4 --eval-episodes 400 --force
  metalite evaluate models/omniglot --protocol lake --runs 400
}

glyphs() {
  metalite train --data glyphs --algorithm protonet --backbone dsconv --ways 30 --shots 1 --queries 5 \
      --augment none --within-alphabet 0 --no-rotations \
      --steps 1200 --val-every 300 --out "$W/glyphs"
  metalite compress "$W/glyphs" --sparsity 0.5 --out "$W/glyphs-pqat"
  metalite export "$W/glyphs-pqat" --out models/glyphs --edgetpu --float --force
}

case "${1:-all}" in
  omniglot) omniglot ;;
  glyphs) glyphs ;;
  all) omniglot; glyphs ;;
  *) echo "usage: $0 [omniglot|glyphs|all]" >&2; exit 2 ;;
esac
