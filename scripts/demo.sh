#!/usr/bin/env bash
# From a fresh Debian 12 to a trained model: install what is missing, build, and train the
# default tiny model on the built-in synthetic corpus (about two minutes on 2 cores).
#   scripts/demo.sh                      # configs/tiny.yaml
#   scripts/demo.sh configs/x.yaml --set train.steps=50
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
if (($# == 0)); then set -- configs/tiny.yaml; fi
exec "${BUILD_DIR:-$root/build}/moe-train" "$@"
