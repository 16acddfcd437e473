#!/usr/bin/env bash
# The Omniglot recipe: meta-train on one small background set, test on the other (alphabets never
# seen in training), 5/20-way x 1/5-shot, 600 episodes each. About 30 minutes on 2 cores.
# Data: ../shared/data/omniglot (for benchmarks; pass OMNIGLOT=DIR to use another copy).
set -euo pipefail
cd "$(dirname "$0")/.."
O=${OMNIGLOT:-../shared/data/omniglot}
M=${1:-runs/omniglot-recipe}
metalite train --data "omniglot:$O/images_background_small1.zip" --algorithm protonet --ways 30 --shots 1 \
    --queries 5 --rotations --steps 1500 --val-every 250 --out "$M"
for ways in 5 20; do
  for shots in 1 5; do
    metalite evaluate "$M" --data "omniglot:$O/images_background_small2.zip" --ways $ways --shots $shots --episodes 600
  done
done
