#!/usr/bin/env bash
# Checkpoint save speed against the disk's own sequential write speed, measured alternately in
# the same run: `dd bs=1M conv=fsync` of a file the size of the shard, then bench_checkpoint
# (a ~100M-parameter model, 1.29 GB shard); three rounds, medians compared. Also prints how long
# an async save holds up training, as a multiple of the staging copy.
#   bench/checkpoint.sh [DIR]     DIR: a folder on the disk to test (default /tmp)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$(mktemp -d "${1:-/tmp}/moe_checkpoint_bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
bin=${BUILD_DIR:-$root/build}/bench/bench_checkpoint
[[ -x $bin ]] || "$root/scripts/setup.sh" >/dev/null

dd_rates=() save_rates=() stalls=()
for round in 1 2 3; do
  out=$("$bin" --dir "$dir/ck" --rounds 1 --json)
  bytes=$(sed -E 's/.*"shard_bytes": ([0-9]+).*/\1/' <<<"$out")
  save_rates+=("$(sed -E 's/.*"save_mb_per_s": ([0-9.]+).*/\1/' <<<"$out")")
  stalls+=("$(sed -E 's/.*"async_stall_over_copy": ([0-9.]+).*/\1/' <<<"$out")")
  secs=$(LC_ALL=C dd if=/dev/zero of="$dir/dd.bin" bs=1M count=$((bytes / 1048576)) conv=fsync 2>&1 |
         sed -nE 's/.* copied, ([0-9.]+) s.*/\1/p')
  rm -f "$dir/dd.bin"
  dd_rates+=("$(awk -v b=$((bytes / 1048576 * 1048576)) -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }')")
  echo "round $round: checkpoint save ${save_rates[-1]} MB/s, dd conv=fsync ${dd_rates[-1]} MB/s, async stall ${stalls[-1]} x copy"
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
save=$(median "${save_rates[@]}") disk=$(median "${dd_rates[@]}") stall=$(median "${stalls[@]}")
awk -v s="$save" -v d="$disk" -v st="$stall" 'BEGIN {
  printf "median: checkpoint save %.0f MB/s, dd %.0f MB/s: ratio %.2f (target >= 0.5)\n", s, d, s / d
  printf "median: an async save holds training for %.3f x the staging copy (target <= 1, plus noise)\n", st }'
