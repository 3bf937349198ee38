#!/usr/bin/env bash
# Compression keeps the quality: configs/tiny.yaml for its full 600 steps with dp=2 (the same
# global batch), uncompressed and at rank 4 from step 0, on the same data; the compressed run's
# final eval loss must be within 1% of the uncompressed one while sending at least 15x fewer
# gradient bytes (bench/compression.sh measured +0.06% and 16.2x).
#   tests/cli/compress_quality_test.sh build/moe-train MPIEXEC
set -euo pipefail
train=$1 mpiexec=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_compress_quality.XXXXXX)
trap 'rm -rf "$work"' EXIT
mpi=("$mpiexec" --oversubscribe --bind-to none -np 2)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
cfg=("$root/configs/tiny.yaml" --set parallel.dp=2 --set train.batch_size=4 --set train.eval_every=0
     --set train.log_every=100000 --set checkpoint.save_final=false)
r4=(--set compress.enabled=true --set compress.rank=4 --set compress.min_rank=4 --set compress.max_rank=4)
"${mpi[@]}" "$train" "${cfg[@]}" --run-dir "$work/plain" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
"${mpi[@]}" "$train" "${cfg[@]}" "${r4[@]}" --run-dir "$work/r4" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
summary() { sed -nE "s/^  $2: (.*)$/\1/p" "$1/record.yaml"; }
plain=$(summary "$work/plain" final_eval_loss) comp=$(summary "$work/r4" final_eval_loss)
ratio=$(summary "$work/r4" comm_bytes_over_plain)
awk -v p="$plain" -v c="$comp" -v r="$ratio" 'BEGIN {
  gap = (c - p) / p * 100; printf "eval loss uncompressed %.4f, rank 4 %.4f (gap %+.2f%%), %.1fx fewer bytes\n", p, c, gap, 1 / r
  exit !(gap <= 1 && 1 / r >= 15) }' || { echo "FAILED: gap above 1% or fewer than 15x fewer bytes"; exit 1; }
