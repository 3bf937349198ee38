#!/usr/bin/env bash
# Time-dilated asynchronous SGD against its baselines on a mixed-speed pair of replicas
# (figures in docs/performance.md): dp=2 on 2 ranks (mpirun on loopback), configs/tiny.yaml at
# batch 4 per rank, replica 1 slowed by simulate.slowdown = [1, F] for F = 2 and 4, the same
# token budget (--steps x the global batch) and the same data for:
#   sync       synchronous data parallelism (every step waits for the straggler)
#   diloco     lock-step DiLoCo: windows of H inner steps, blocking merges (waits for the slowest)
#   dilated    time-dilated: windows of --window seconds, non-blocking merges, staleness discount
#   dilated-nesterov   the same with DiLoCo's outer Nesterov (lr 0.7, momentum 0.9)
#   dilated-discount   the same with the staleness discount alpha = 0.5 on the rebase
#   dilated-r4, dilated-r16, dilated-adaptive   the same with the pseudo-gradient through the
#                      compressor at rank 4, 16, or adaptive in [2, 32] from 8 (blocking merges;
#                      compress.* counts in merges)
# all with AdamW inside; diloco and dilated share the outer step given by --outer "LR MOMENTUM"
# (default "1 0": averaging, the config's defaults; with it a one-replica run with the same
# outer step is the plain run itself, so the gain over sync is the asynchrony's alone).
# Reported: final eval loss and its gap to sync, rank 0's wall time (its steps' seconds, eval
# excluded), the wall time at which rank 0's eval loss first reaches the target (sync's final
# eval loss + 2%), ratios to sync and to diloco, inner steps per replica, bytes rank 0 sent.
# --net RATE runs it all over the shaped network instead (tests/net/shaped_net.sh: 2 hosts in
# network namespaces, IPv6, tbf at RATE, e.g. 100mbit; needs root).
#   bench/async.sh [--steps N] [--window SECONDS] [--h STEPS] [--slowdowns "2 4"] [--outer "LR M"] [--modes "..."]
#                  [--net RATE]   (defaults 300, 1, 10, "2 4", "1 0", "sync diloco dilated dilated-nesterov dilated-discount dilated-r4", loopback)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=300 window=1 h=10 slowdowns="2 4" outer="1 0" mode_list="sync diloco dilated dilated-nesterov dilated-discount dilated-r4" net=
while (($#)); do
  case $1 in
    --steps) steps=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --h) h=$2; shift 2 ;;
    --slowdowns) slowdowns=$2; shift 2 ;;
    --outer) outer=$2; shift 2 ;;
    --modes) mode_list=$2; shift 2 ;;
    --net) net=$2; shift 2 ;;
    *) echo "usage: $0 [--steps N] [--window SECONDS] [--h STEPS] [--slowdowns \"2 4\"] [--outer \"LR M\"] [--modes \"...\"] [--net RATE]" >&2; exit 2 ;;
  esac
done
build=${BUILD_DIR:-$root/build}
[[ -x $build/moe-train ]] || "$root/scripts/setup.sh" moe-train moe-eval >/dev/null
work=$(mktemp -d /tmp/moe_async.XXXXXX)
mpi=(mpirun --oversubscribe --bind-to none -np 2)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
link=loopback
if [[ -n $net ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "--net needs root (network namespaces)" >&2; exit 2; }
  source "$root/tests/net/shaped_net.sh"
  net_up 2 "$net"
  mpi=(net_mpirun 2)
  link="the shaped network at $net"
fi
base=(--set parallel.dp=2 --set train.batch_size=4 --set train.threads=1 --set train.log_every=100000
      --set train.steps="$steps" --set train.eval_every=25 --set train.eval_batches=4 --set checkpoint.save_final=false)
read -r outer_lr outer_m <<<"$outer"
step=(--set async.outer_lr="$outer_lr" --set async.outer_momentum="$outer_m")
declare -A modes=(
  [sync]=""
  [diloco]="--set async.enabled=true --set async.window_steps=$h --set async.blocking=true ${step[*]}"
  [dilated]="--set async.enabled=true --set async.window_seconds=$window ${step[*]}"
  [dilated-nesterov]="--set async.enabled=true --set async.window_seconds=$window --set async.outer_lr=0.7 --set async.outer_momentum=0.9"
  [dilated-discount]="--set async.enabled=true --set async.window_seconds=$window ${step[*]} --set async.staleness_alpha=0.5"
  [dilated-r4]="--set async.enabled=true --set async.window_seconds=$window ${step[*]} --set compress.enabled=true --set compress.rank=4 --set compress.min_rank=4 --set compress.max_rank=4"
  [dilated-r16]="--set async.enabled=true --set async.window_seconds=$window ${step[*]} --set compress.enabled=true --set compress.rank=16 --set compress.min_rank=16 --set compress.max_rank=16"
  [dilated-adaptive]="--set async.enabled=true --set async.window_seconds=$window ${step[*]} --set compress.enabled=true --set compress.rank=8 --set compress.min_rank=2 --set compress.max_rank=32"
)
read -ra chosen <<<"$mode_list"
[[ ${chosen[0]} == sync ]] || { echo "--modes must start with sync (the baseline)" >&2; exit 2; }
summary() { sed -nE "s/^  $2: (.*)$/\1/p" "$1/record.yaml"; }
# Rank 0's wall time (sum of step_seconds) when eval_loss first reaches $2; "-" if never.
time_to() {
  awk -F, -v target="$2" '
    NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "step_seconds") s = i; if ($i == "eval_loss") e = i }; next }
    { t += $s; if ($e != "" && $e <= target) { printf "%.1f", t; found = 1; exit } }
    END { if (!found) printf "-" }' "$1/metrics.csv"
}
# Replica 0's bytes per merge it launched (sync: "-").
bytes_per_merge() {
  awk '/^ *async_replicas:/ { on = 1; next } on && /^[^ ]/ { on = 0 }
       on && /windows:/ && w == "" { w = $2 } on && /bytes_sent:/ && b == "" { b = $2 }
       END { if (w == "" || w == 0) print "-"; else printf "%.3g", b / w }' "$1/record.yaml"
}
replica_steps() {   # inner steps of each replica from the record, "a / b"
  awk '/^ *async_replicas:/ { on = 1; next } on && /^[^ ]/ { on = 0 } on && /inner_steps:/ { v = v sep $2; sep = " / " }
       END { print (v == "" ? "-" : v) }' "$1/record.yaml"
}

echo "# bench/async.sh: dp=2 over $link, $steps steps' tokens, windows: diloco H=$h steps, dilated ${window} s, outer lr/momentum $outer_lr/$outer_m"
for f in $slowdowns; do
  for m in "${chosen[@]}"; do
    read -ra extra <<<"${modes[$m]}"
    "${mpi[@]}" "$build/moe-train" "$root/configs/tiny.yaml" "${base[@]}" "${extra[@]}" \
      --set "simulate.slowdown=[1, $f]" --run-dir "$work/$m-$f" >"$work/$m-$f.log" 2>&1 </dev/null ||
      { cat "$work/$m-$f.log"; exit 1; }
  done
  sync_loss=$(summary "$work/sync-$f" final_eval_loss)
  target=$(awk -v l="$sync_loss" 'BEGIN { printf "%.5f", l * 1.02 }')
  sync_t=$(time_to "$work/sync-$f" "$target") diloco_t=-
  [[ -d $work/diloco-$f ]] && diloco_t=$(time_to "$work/diloco-$f" "$target")
  echo; echo "## replica 1 slowed ${f}x; target eval loss $target (sync's final + 2%)"
  printf '| mode | final eval loss | gap to sync | wall s | s to target | vs sync | vs diloco | inner steps (replicas) | bytes sent (rank 0) | bytes / merge |\n'
  printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
  for m in "${chosen[@]}"; do
    d=$work/$m-$f
    l=$(summary "$d" final_eval_loss) w=$(summary "$d" train_seconds) b=$(summary "$d" comm_bytes)
    t=$(time_to "$d" "$target")
    awk -v m="$m" -v l="$l" -v sl="$sync_loss" -v w="$w" -v t="$t" -v st="$sync_t" -v dt="$diloco_t" \
      -v steps="$(replica_steps "$d")" -v b="$b" -v bpm="$(bytes_per_merge "$d")" 'BEGIN {
        r1 = (t == "-" || st == "-") ? "-" : sprintf("%.2fx", t / st)
        r2 = (t == "-" || dt == "-") ? "-" : sprintf("%.2fx", t / dt)
        printf "| %s | %.4f | %+.2f%% | %.1f | %s | %s | %s | %s | %.3g | %s |\n", m, l, (l - sl) / sl * 100, w, t, r1, r2, steps, b, bpm }'
  done
done
rm -rf "$work"
