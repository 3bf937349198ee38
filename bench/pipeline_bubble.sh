#!/usr/bin/env bash
# The measured pipeline bubble of 1F1B with P=2 stages and m = 2, 4, 8 micro-batches next to the
# textbook (P-1)/(m+P-1), and the throughput of those runs against 1 rank with the same batch and
# micro-batches (run in the same loop). configs/tiny.yaml (4 layers: 2 per stage), batch 8 x 128,
# one compute thread per rank. The bubble is each stage's time blocked in receives (and at the
# end waiting for the other stages to finish) over its step time, averaged over stages and over steps 6..N
# (metrics.csv column `bubble`; record.yaml's summary.pipeline_bubble has it per stage).
#   bench/pipeline_bubble.sh [--steps N]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=40
[[ ${1:-} == --steps ]] && steps=$2
build=${BUILD_DIR:-$root/build}
[[ -x $build/moe-train ]] || "$root/scripts/setup.sh" >/dev/null
work=$(mktemp -d /tmp/moe_bubble.XXXXXX)
trap 'rm -rf "$work"' EXIT
mpi=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
cfg=("$root/configs/tiny.yaml" --set train.steps="$steps" --set train.eval_every=0 --set train.log_every=100000
     --set train.threads=1 --set checkpoint.save_final=false --set parallel.schedule=1f1b)
tps() { sed -nE 's/^  tokens_per_s: ([0-9.e+-]+)$/\1/p' "$1/record.yaml"; }
column_mean() {   # column_mean <metrics.csv> <column name>: mean after 5 warm-up steps
  awk -F, -v name="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
    NR > 6 { s += $c; n++ } END { printf "%.4f", s / n }' "$1"
}
printf '| m | theory (P-1)/(m+P-1) | measured bubble | measured / theory | pp=2 / 1 rank tokens/s |\n|---:|---:|---:|---:|---:|\n'
for m in 2 4 8; do
  "$build/moe-train" "${cfg[@]}" --set train.micro_batches=$m --run-dir "$work/one-$m" >/dev/null
  "${mpi[@]}" -np 2 "$build/moe-train" "${cfg[@]}" --set train.micro_batches=$m --set parallel.pp=2 \
    --run-dir "$work/pp-$m" >/dev/null
  awk -v m=$m -v b="$(column_mean "$work/pp-$m/metrics.csv" bubble)" -v a="$(tps "$work/one-$m")" -v p="$(tps "$work/pp-$m")" \
    'BEGIN { t = 1 / (m + 1); printf "| %d | %.3f | %.3f | %.2f | %.2f |\n", m, t, b, b / t, p / a }'
done
