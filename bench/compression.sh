#!/usr/bin/env bash
# SVD swarm-consensus compression against the plain bucketed all-reduce, dp=2 on 2 ranks, in one
# invocation (figures in docs/performance.md):
# 1. Loss and bytes (mpirun on loopback; the arithmetic does not depend on the link): the same
#    steps on the same data, uncompressed, fixed r = 1, 2, 4, 8, and adaptive (the rank rule);
#    final eval loss, its gap to uncompressed, bytes sent by rank 0 and plain / compressed.
#    Compression starts at --start-step (default 0; the LR warm-up of tiny.yaml is 30 steps, and
#    plain steps before the start count in the bytes).
# 2. The same for a d_model=256 variant (uncompressed and adaptive).
# 3. PyTorch's own powerSGD_hook at r = 4 as a peer (bench/powersgd_peer.py; the project's venv):
#    its eval loss next to its uncompressed DDP run and its compression rate, beside moe-train's,
#    both trained on the same token shards.
# 4. Wall time over the shaped network (tests/net/shaped_net.sh: 2 hosts, IPv6, tbf) at 1 Gbit/s
#    and 100 Mbit/s: uncompressed, r = 4 and adaptive, equal steps; ratio to uncompressed.
#   bench/compression.sh [--steps N] [--net-steps N] [--start-step N] [--modes "plain r4 ..."] [--parts "1 3"]
#   (defaults 600, 20, 0, all modes; part 4 needs root)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=600 net_steps=20 start_step=0 mode_list="plain r1 r2 r4 r8 adaptive" parts="1 2 3 4"
while (($#)); do
  case $1 in
    --steps) steps=$2; shift 2 ;;
    --net-steps) net_steps=$2; shift 2 ;;
    --start-step) start_step=$2; shift 2 ;;
    --modes) mode_list=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    *) echo "usage: $0 [--steps N] [--net-steps N] [--start-step N] [--modes \"...\"] [--parts \"1 2 3 4\"]" >&2; exit 2 ;;
  esac
done
build=${BUILD_DIR:-$root/build}
[[ -x $build/moe-train ]] || "$root/scripts/setup.sh" moe-train moe-eval >/dev/null
work=$(mktemp -d /tmp/moe_compression.XXXXXX)
mpi=(mpirun --oversubscribe --bind-to none -np 2)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
base=(--set parallel.dp=2 --set train.batch_size=4 --set train.threads=1 --set train.log_every=100000
      --set checkpoint.save_final=false --set train.eval_every=0)
on=(--set compress.enabled=true --set compress.start_step="$start_step")
declare -A modes=(
  [plain]=""
  [r1]="--set compress.rank=1 --set compress.min_rank=1 --set compress.max_rank=1"
  [r2]="--set compress.rank=2 --set compress.min_rank=2 --set compress.max_rank=2"
  [r4]="--set compress.rank=4 --set compress.min_rank=4 --set compress.max_rank=4"
  [r8]="--set compress.rank=8 --set compress.min_rank=8 --set compress.max_rank=8"
  [adaptive]="--set compress.rank=2 --set compress.min_rank=1 --set compress.max_rank=8"
)
summary() { sed -nE "s/^  $2: (.*)$/\1/p" "$1/record.yaml"; }
# run <dir> <mode> [extra...]: dp=2 on loopback
run() {
  local dir=$1 mode=$2; shift 2
  local extra=()
  [[ $mode == plain ]] || { read -ra extra <<<"${modes[$mode]}"; extra=("${on[@]}" "${extra[@]}"); }
  "${mpi[@]}" "$build/moe-train" "$root/configs/tiny.yaml" "${base[@]}" "${extra[@]}" "$@" --run-dir "$work/$dir" \
    >"$work/$dir.log" 2>&1 || { cat "$work/$dir.log"; exit 1; }
}
want() { [[ " $parts " == *" $1 "* ]]; }
table() {   # table <prefix> <modes...>
  local prefix=$1; shift
  local plain_loss plain_bytes
  plain_loss=$(summary "$work/$prefix-plain" final_eval_loss) plain_bytes=$(summary "$work/$prefix-plain" comm_bytes)
  printf '| mode | final eval loss | gap to uncompressed | bytes sent (rank 0) | plain / sent |\n| --- | --- | --- | --- | --- |\n'
  for m in "$@"; do
    local l b
    l=$(summary "$work/$prefix-$m" final_eval_loss) b=$(summary "$work/$prefix-$m" comm_bytes)
    awk -v m="$m" -v l="$l" -v pl="$plain_loss" -v b="$b" -v pb="$plain_bytes" \
      'BEGIN { printf "| %s | %.4f | %+.2f%% | %.3g | %.1fx |\n", m, l, (l - pl) / pl * 100, b, pb / b }'
  done
}

if want 1; then
echo "## 1. configs/tiny.yaml shape, dp=2, $steps steps, compression from step $start_step"
read -ra chosen <<<"$mode_list"
for m in "${chosen[@]}"; do run "tiny-$m" "$m" --set train.steps="$steps"; done
table tiny "${chosen[@]}"
fi

if want 2; then
echo; echo "## 2. d_model=256 variant, dp=2, $((steps / 2)) steps, compression from step $start_step"
for m in plain adaptive; do run "wide-$m" "$m" --set train.steps=$((steps / 2)) --set model.d_model=256 --set moe.ffn_hidden=512; done
table wide plain adaptive
fi

if want 3; then
echo; echo "## 3. PyTorch's powerSGD_hook (DDP over gloo, PyTorch 2.11) vs moe-train, dp=2, r=4, $steps steps"
# Both trainers on the same llm.c token shards (bench/powersgd_peer.py write-data), both starting
# compression at step 2 (the hook's minimum with error feedback); each against its own
# uncompressed run. moe-train's eval covers the 32 windows of eval.bin, as the peer's does.
shards=$work/shards
"$root/scripts/python-env.sh" python "$root/bench/powersgd_peer.py" write-data "$shards"
on_file=(--set data.path="$shards/train.bin" --set data.eval_path="$shards/eval.bin" --set train.eval_batches=8
         --set train.steps="$steps")
run bin-plain plain "${on_file[@]}"
run bin-r4 r4 "${on_file[@]}" --set compress.start_step=2
for m in plain powersgd; do
  "$root/scripts/python-env.sh" python "$root/bench/powersgd_peer.py" train "$shards" --mode "$m" --rank 4 --start-iter 2 \
    --steps "$steps" --out "$work/peer-$m.json" >"$work/peer-$m.log" 2>&1 || { cat "$work/peer-$m.log"; exit 1; }
done
python3 - "$work" "$steps" <<'PY'
import json, re, sys
work, steps = sys.argv[1], int(sys.argv[2])
def summary(run, key):
    text = open(f"{work}/{run}/record.yaml").read()
    return float(re.search(rf"^  {key}: (\S+)$", text, re.M).group(1))
peer = {m: json.load(open(f"{work}/peer-{m}.json")) for m in ("plain", "powersgd")}
ours = {m: summary(f"bin-{m}", "final_eval_loss") for m in ("plain", "r4")}
plain_b, r4_b = summary("bin-plain", "comm_bytes"), summary("bin-r4", "comm_bytes")
per_step = plain_b / steps  # the compressed steps' own rate: the 2 plain steps taken out
ours_rate = per_step * (steps - 2) / (r4_b - 2 * per_step)
print("| trainer | eval loss uncompressed | eval loss r=4 | gap | plain / sent, whole run | compressed steps alone |")
print("| --- | --- | --- | --- | --- | --- |")
lp, lc = peer["plain"]["final_eval_loss"], peer["powersgd"]["final_eval_loss"]
print(f"| PyTorch {peer['plain']['torch']} powerSGD_hook | {lp:.4f} | {lc:.4f} | {(lc - lp) / lp * 100:+.2f}% | "
      f"{peer['powersgd']['whole_run_ratio']:.1f}x | {peer['powersgd']['compress_rate']:.1f}x |")
print(f"| moe-train | {ours['plain']:.4f} | {ours['r4']:.4f} | {(ours['r4'] - ours['plain']) / ours['plain'] * 100:+.2f}% | "
      f"{plain_b / r4_b:.1f}x | {ours_rate:.1f}x |")
PY
fi

want 4 || { rm -rf "$work"; exit 0; }
if [[ $(id -u) -ne 0 ]]; then echo "part 4 needs root (network namespaces): skipped"; exit 0; fi
echo; echo "## 4. wall time over the shaped network, $net_steps steps"
source "$root/tests/net/shaped_net.sh"
printf '| link | mode | train seconds | vs uncompressed |\n| --- | --- | --- | --- |\n'
for rate in 1gbit 100mbit; do
  net_up 2 "$rate"
  declare -A secs=()
  for m in plain r4 adaptive; do
    extra=()
    [[ $m == plain ]] || { read -ra extra <<<"${modes[$m]}"; extra=(--set compress.enabled=true "${extra[@]}"); }
    net_mpirun 2 "$build/moe-train" "$root/configs/tiny.yaml" "${base[@]}" "${extra[@]}" --set train.steps="$net_steps" \
      --run-dir "$work/net-$rate-$m" >"$work/net.log" 2>&1 || { cat "$work/net.log"; exit 1; }
    secs[$m]=$(summary "$work/net-$rate-$m" train_seconds)
  done
  net_down
  for m in plain r4 adaptive; do
    awk -v r="$rate" -v m="$m" -v s="${secs[$m]}" -v p="${secs[plain]}" 'BEGIN { printf "| %s | %s | %.1f | %.2fx |\n", r, m, s, s / p }'
  done
done
rm -rf "$work"
