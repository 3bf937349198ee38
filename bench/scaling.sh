#!/usr/bin/env bash
# Weak-scaling efficiency of data parallelism: the same per-rank batch on 1 rank and on dp=2
# ranks (one intra-op thread each), alternated three times; efficiency = tokens/s(dp=2) /
# (2 x tokens/s(1 rank)), medians compared. Also the share of a dp=2 step spent averaging
# gradients that backward does not hide (comm_seconds / step_seconds from metrics.csv), with the
# bucket all-reduces overlapped with backward (the default) and started after it
# (parallel.overlap_grad_sync=false), and the share of a dp=2, ep=2 step spent in the expert
# all-to-all exchanges (a2a_seconds / step_seconds).
#   bench/scaling.sh [--steps N]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=60
[[ ${1:-} == --steps ]] && steps=$2
build=${BUILD_DIR:-$root/build}
[[ -x $build/moe-train ]] || "$root/scripts/setup.sh" >/dev/null
work=$(mktemp -d /tmp/moe_scaling.XXXXXX)
trap 'rm -rf "$work"' EXIT
mpi=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
cfg=("$root/configs/tiny.yaml" --set train.steps="$steps" --set train.eval_every=0 --set train.log_every=100000
     --set train.threads=1 --set checkpoint.save_final=false)
tps() { sed -nE 's/^  tokens_per_s: ([0-9.e+-]+)$/\1/p' "$1/record.yaml"; }
one=() two=() comm=() late=() late_comm=() a2a=()
comm_share() { awk -F, 'NR > 6 { s += $9; c += $13 } END { printf "%.4f", c / s }' "$1/metrics.csv"; }
for round in 1 2 3; do
  "$build/moe-train" "${cfg[@]}" --run-dir "$work/one-$round" >/dev/null
  "${mpi[@]}" -np 2 "$build/moe-train" "${cfg[@]}" --set parallel.dp=2 --run-dir "$work/two-$round" >/dev/null
  "${mpi[@]}" -np 2 "$build/moe-train" "${cfg[@]}" --set parallel.dp=2 --set parallel.overlap_grad_sync=false \
    --run-dir "$work/late-$round" >/dev/null
  one+=("$(tps "$work/one-$round")") two+=("$(tps "$work/two-$round")") late+=("$(tps "$work/late-$round")")
  # Columns 9 = step_seconds, 13 = comm_seconds; the first 5 steps are warm-up.
  comm+=("$(comm_share "$work/two-$round")") late_comm+=("$(comm_share "$work/late-$round")")
  "${mpi[@]}" -np 2 "$build/moe-train" "${cfg[@]}" --set parallel.dp=2 --set parallel.ep=2 --run-dir "$work/ep-$round" >/dev/null
  # Column 15 = a2a_seconds.
  a2a+=("$(awk -F, 'NR > 6 { s += $9; c += $15 } END { printf "%.4f", c / s }' "$work/ep-$round/metrics.csv")")
  echo "round $round: 1 rank ${one[-1]} tokens/s, dp=2 ${two[-1]} tokens/s (${late[-1]} without overlap)," \
       "exposed gradient averaging ${comm[-1]} of a dp=2 step (${late_comm[-1]} without overlap)," \
       "all-to-all ${a2a[-1]} of a dp=2 ep=2 step"
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
awk -v a="$(median "${one[@]}")" -v b="$(median "${two[@]}")" -v c="$(median "${comm[@]}")" -v x="$(median "${a2a[@]}")" \
    -v l="$(median "${late[@]}")" -v lc="$(median "${late_comm[@]}")" 'BEGIN {
  printf "median: 1 rank %.0f tokens/s, dp=2 %.0f tokens/s: weak-scaling efficiency %.2f (target >= 0.85)\n", a, b, b / (2 * a)
  printf "median: without overlap dp=2 %.0f tokens/s: efficiency %.2f; overlapped / not overlapped %.3f\n", l, l / (2 * a), b / l
  printf "median: gradient averaging not hidden by backward: %.1f%% of a dp=2 step (%.1f%% without overlap)\n", 100 * c, 100 * lc
  printf "median: the expert all-to-all takes %.1f%% of a dp=2, ep=2 step\n", 100 * x }'
