#!/usr/bin/env bash
# The acceptance run of the default config: `moe-train configs/tiny.yaml` finishes in under
# 3 minutes and its final eval loss is within 15% of the synthetic corpus's entropy bound (both
# read from record.yaml); then `moe-eval eval --run` and `moe-eval report` work on the run. The
# same config in bf16 autocast (train.precision: bf16) ends within 2% of the fp32 run's eval loss.
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

"$train" "$root/configs/tiny.yaml" --set train.precision=bf16 --run-dir "$work/bf16" >"$work/log" 2>&1 ||
  { cat "$work/log"; exit 1; }
grep -q "^precision: bf16" "$work/bf16/record.yaml" || { echo "FAILED: the bf16 run's record says no bf16"; exit 1; }
bf16_loss=$(sed -nE "s/^  final_eval_loss: ([0-9.e+-]+)$/\1/p" "$work/bf16/record.yaml")
fp32_tps=$(value tokens_per_s) bf16_tps=$(sed -nE "s/^  tokens_per_s: ([0-9.e+-]+)$/\1/p" "$work/bf16/record.yaml")
awk -v a="$bf16_loss" -v b="$eval_loss" -v ta="$bf16_tps" -v tb="$fp32_tps" 'BEGIN {
  gap = (a - b) / b; printf "bf16: final eval loss %s vs fp32 %s (%+.2f%%); tokens/s %.0f vs %.0f (%.2fx)\n", a, b, 100 * gap, ta, tb, ta / tb
  exit !(gap <= 0.02 && gap >= -0.02) }' || { echo "FAILED: bf16 ends more than 2% from fp32"; exit 1; }
