#!/bin/sh
# Install metalite and the bundle of this folder on a device (written by `metalite package`; docs/install.md).
#
#   sh install.sh      checks every file against SHA256SUMS, makes a venv with the system's python3 that sees
#                      its packages (Debian's numpy and Pillow: apt install python3-numpy python3-pil), pip
#                      installs the wheel of this folder with the interpreter extra that fits this machine,
#                      then `metalite device install bundle --home ...` (checksums again, atomic switch).
#
# Environment: METALITE_VENV [~/metalite], METALITE_HOME [~/metalite-home], PYTHON [python3],
# METALITE_EXTRA [litert on aarch64/x86_64 with Python 3.10-3.14 (ai-edge-litert has wheels there), else tflite],
# METALITE_SYSTEM_NUMPY [1: keep the system's numpy if it has one; 0: let pip choose].
# Running it again is safe: pip keeps an installed wheel of the same version; an unchanged bundle stays as it is.
set -eu

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
venv=${METALITE_VENV:-$HOME/metalite}
home=${METALITE_HOME:-$HOME/metalite-home}
python=${PYTHON:-python3}

command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (it is in coreutils)"
(cd "$here" && sha256sum --check --strict --quiet SHA256SUMS) \
    || die "$here: a file does not match SHA256SUMS; the copy is damaged or changed: copy the folder again"
say "checksums of $(wc -l < "$here/SHA256SUMS") files verified"

command -v "$python" >/dev/null 2>&1 || die "$python not found: sudo apt install python3"
"$python" -c 'import ensurepip' 2>/dev/null || die "$python cannot make a venv: sudo apt install python3-venv"

extra=${METALITE_EXTRA:-$("$python" -c 'import platform, sys
ok = platform.machine() in ("aarch64", "arm64", "x86_64", "AMD64") and (3, 10) <= sys.version_info[:2] <= (3, 14)
print("litert" if ok else "tflite")')}
wheel=$(ls "$here"/metalite-*.whl)

if [ ! -x "$venv/bin/python" ]; then
    say "making the venv $venv ($("$python" --version 2>&1), with the system's packages)"
    "$python" -m venv --system-site-packages "$venv"
fi
# pip would otherwise put a newer numpy in the venv beside Debian's (seen on bookworm: numpy 2.4 over 1.24)
pin=""
sys_numpy=$("$python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
if [ -n "$sys_numpy" ] && [ "${METALITE_SYSTEM_NUMPY:-1}" = 1 ]; then
    pin=$(mktemp)
    trap 'rm -f "$pin"' EXIT
    printf 'numpy==%s\n' "$sys_numpy" > "$pin"
    say "keeping the system's numpy $sys_numpy (METALITE_SYSTEM_NUMPY=0 lets pip choose)"
fi
say "pip install $(basename "$wheel")[$extra,images] into $venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet ${pin:+-c "$pin"} "$wheel[$extra,images]"
"$venv/bin/metalite" device install "$here/bundle" --home "$home"
say "done: $venv/bin/metalite device adapt SUPPORT_DIR --home $home, then device predict IMAGE... --home $home"
