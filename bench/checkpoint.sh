#!/usr/bin/env bash
# Checkpoint save speed against the disk's own sequential write speed, measured alternately in
# the same run: `dd bs=1M conv=fsync` of a file the size of the shard, then bench_checkpoint
# (a ~100M-parameter model, 1.29 GB shard); three rounds, medians compared. Also prints how long
# an async save holds up training, as a multiple of the staging copy.
#   bench/checkpoint.sh [DIR]     DIR: a folder on the disk to test (default /tmp)
#   bench/checkpoint.sh --ranks 2 [DIR]
#       instead: moe-train under mpirun (dp=N, per-host storage: every rank writes its shard), a
#       d_model 512 model saved every 3 steps (16 steps: the end of the run, which waits for the
#       last save whatever the mode, is not one of them), with synchronous and with asynchronous saves
#       (checkpoint.async: staging copy at the step boundary, writing and the collective commit in
#       a thread), alternately, 3 rounds: the loop's stall (record.yaml checkpoint_stall_seconds)
#       of async over sync (target <= 0.10).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ranks=0
if [[ ${1:-} == --ranks ]]; then ranks=$2; shift 2; fi
dir=$(mktemp -d "${1:-/tmp}/moe_checkpoint_bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
bin=${BUILD_DIR:-$root/build}/bench/bench_checkpoint
[[ -x $bin ]] || "$root/scripts/setup.sh" >/dev/null

if ((ranks > 0)); then
  train=${BUILD_DIR:-$root/build}/moe-train
  mpi=(mpirun --oversubscribe --bind-to none -np "$ranks")
  [[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
  cfg=("$root/configs/tiny.yaml" --set model.d_model=512 --set model.n_heads=8 --set model.n_kv_heads=4
       --set parallel.dp="$ranks" --set train.batch_size=4 --set train.steps=16 --set train.eval_every=0
       --set train.threads=1 --set checkpoint.every=3 --set checkpoint.save_final=false --set checkpoint.storage=per_host)
  stall() { sed -nE 's/^  checkpoint_stall_seconds: (.*)$/\1/p' "$1/record.yaml"; }
  ratios=()
  for round in 1 2 3; do
    for mode in sync async; do
      rm -rf "$dir/$mode"
      "${mpi[@]}" "$train" "${cfg[@]}" --set checkpoint.async=$([[ $mode == async ]] && echo true || echo false) \
        --set checkpoint.dir="$dir/$mode/ck" --run-dir "$dir/$mode" >"$dir/log" 2>&1 || { cat "$dir/log"; exit 1; }
    done
    bytes=$(du -sb "$dir/sync/ck/step-00000015" | cut -f1)
    ratios+=("$(awk -v a="$(stall "$dir/async")" -v s="$(stall "$dir/sync")" 'BEGIN { printf "%.3f", a / s }')")
    echo "round $round: 5 saves of $((bytes / 1048576)) MiB per step ($ranks shards): stall sync $(stall "$dir/sync") s," \
         "async $(stall "$dir/async") s, async / sync ${ratios[-1]}"
  done
  median=$(printf '%s\n' "${ratios[@]}" | sort -g | sed -n 2p)
  echo "median: asynchronous multi-rank saves stall the loop $median x as long as synchronous ones (target <= 0.10)"
  exit 0
fi

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
