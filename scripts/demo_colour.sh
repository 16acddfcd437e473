#!/usr/bin/env bash
# Colour, checked by eye: teach the shipped colour bundle models/emoji the emoji of the committed fixture
# (tests/data/emoji) that it never trained on, one Noto drawing each, ask it Twemoji's and OpenMoji's drawings,
# and write a contact sheet of its answers. No network, no training: a few seconds after the install.
# Usage: bash scripts/demo_colour.sh [WORKDIR] [options of scripts/demo_colour.py, e.g. --data ~/.cache/metalite/emoji/data]
#        (default WORKDIR: runs/demo-colour; install first: scripts/demo.sh does, or `pip install -e ".[litert,images]"`)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-runs/demo-colour}
shift || true

echo "== the bundle takes colour =="
metalite inspect models/emoji | grep -E "^  (input: int8 NHWC|accuracy int8_5way1shot)"

echo "== teach it emoji of its held-out categories from one artist, ask another artist's drawings =="
python scripts/demo_colour.py --out "$W" "$@"
