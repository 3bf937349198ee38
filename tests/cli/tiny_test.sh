#!/usr/bin/env bash
# The acceptance run of the default config: `moe-train configs/tiny.yaml` finishes in under
# 3 minutes and its final eval loss is within 15% of the synthetic corpus's entropy bound (both
# read from record.yaml); then `moe-eval eval --run` and `moe-eval report` work on the run.
#   tests/cli/tiny_test.sh build/moe-train build/moe-eval
set -euo pipefail
train=$1 eval=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_tiny_test.XXXXXX)
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
"$train" "$root/configs/tiny.yaml" --run-dir "$work/run" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
seconds=$(($(date +%s) - start))
record=$work/run/record.yaml
grep -q "^status: completed" "$record" || { echo "record not completed"; cat "$record"; exit 1; }
value() { sed -nE "s/^  $1: ([0-9.e+-]+)$/\1/p" "$record"; }
eval_loss=$(value final_eval_loss) bound=$(value entropy_bound) ratio=$(value eval_loss_over_bound)
echo "tiny.yaml: ${seconds} s, final eval loss $eval_loss, entropy bound $bound, ratio $ratio"
awk -v r="$ratio" 'BEGIN { exit !(r > 0 && r <= 1.15) }' || { echo "FAILED: eval loss / bound $ratio > 1.15"; exit 1; }
((seconds < 180)) || { echo "FAILED: took $seconds s (limit 180)"; exit 1; }

"$eval" eval --run "$work/run" >"$work/eval" || { cat "$work/eval"; exit 1; }
grep -q "^eval loss" "$work/eval" && grep -q "^perplexity" "$work/eval" && grep -q "^layer" "$work/eval"
"$eval" report "$work/run" -o "$work/report.md" >/dev/null
grep -q "xychart-beta" "$work/report.md"
echo "moe-eval eval and report work on the run"
