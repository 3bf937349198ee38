#!/usr/bin/env bash
# From a fresh Debian 12 to a trained model: install what is missing, build, and train the
# default tiny model on the built-in synthetic corpus. Builds only the two apps (tests and
# benchmarks are scripts/test.sh's); figures in docs/performance.md.
#   scripts/demo.sh                      # configs/tiny.yaml
#   scripts/demo.sh configs/x.yaml --set train.steps=50
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" moe-train moe-eval
cd "$root"
if (($# == 0)); then set -- configs/tiny.yaml; fi
exec "${BUILD_DIR:-$root/build}/moe-train" "$@"
