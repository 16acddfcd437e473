#!/usr/bin/env bash
# Rebuild the shipped bundles models/omniglot and models/glyphs (about 45 minutes on 2 cores).
# models/omniglot uses the two small Omniglot background sets in ../shared/data/omniglot (tests and
# benchmarks data; the product itself never needs that path). Usage: bash scripts/make_models.sh [omniglot|glyphs]
set -euo pipefail
cd "$(dirname "$0")/.."
O=${OMNIGLOT:-../shared/data/omniglot}
W=${WORK:-runs/models}
mkdir -p "$W" models

omniglot() {
  metalite train --data "omniglot:$O/images_background_small1.zip,$O/images_background_small2.zip" \
      --algorithm protonet --backbone conv4 --ways 30 --shots 1 --queries 5 --rotations --steps 1500 \
      --val-every 250 --out "$W/omniglot"
  metalite compress "$W/omniglot" --sparsity 0.5 --distill --out "$W/omniglot-pqat"
  metalite export "$W/omniglot-pqat" --out models/omniglot --edgetpu --float --force
}

glyphs() {
  metalite train --data glyphs --algorithm protonet --backbone dsconv --ways 30 --shots 1 --queries 5 \
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
