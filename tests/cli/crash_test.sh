#!/usr/bin/env bash
# Crash test: kill -9 the trainer at random moments, at least 20 times, many of them during a
# checkpoint save (one every step, so saves take most of the time). After every kill, LATEST
# must name a checkpoint that `moe-eval verify` accepts (manifest, checksums, shapes). Finally
# the run is resumed to the end, and its per-step losses must equal those of a run never killed.
#   tests/cli/crash_test.sh build/moe-train build/moe-eval [trials]
set -euo pipefail
train=$1 eval=$2 trials=${3:-20}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_crash_test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cfg=(--set train.steps=80 --set train.eval_every=30 --set train.log_every=1000 --set checkpoint.every=1
     --set checkpoint.keep=2)

RANDOM=${CRASH_TEST_SEED:-7}
during_save=0 verified=0
for ((i = 1; i <= trials; i++)); do
  "$train" "$root/configs/tiny.yaml" "${cfg[@]}" --run-dir "$work/run" >"$work/log" 2>&1 &
  pid=$!
  sleep "$((RANDOM % 18 / 10)).$((RANDOM % 10))$((RANDOM % 10))"   # 0.00 .. 1.79 s
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if compgen -G "$work/run/checkpoints/.tmp-*" >/dev/null; then during_save=$((during_save + 1)); fi
  if [[ -f $work/run/checkpoints/LATEST ]]; then
    if ! "$eval" verify "$work/run/checkpoints" >"$work/verify" 2>&1; then
      echo "trial $i: LATEST names a checkpoint that does not verify:"; cat "$work/verify"; exit 1
    fi
    verified=$((verified + 1))
  fi
  echo "trial $i: killed; LATEST=$(cat "$work/run/checkpoints/LATEST" 2>/dev/null || echo none)"
done
echo "$trials kills, $during_save during a save, $verified checkpoints verified after a kill"
((during_save > 0)) || { echo "no kill landed during a save: the test did not test that"; exit 1; }
((verified > 0)) || { echo "no checkpoint was ever written"; exit 1; }

"$train" "$root/configs/tiny.yaml" "${cfg[@]}" --run-dir "$work/run" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
grep -q "^status: completed" "$work/run/record.yaml"
grep -q "^resumed_from:" "$work/run/record.yaml"
"$train" "$root/configs/tiny.yaml" "${cfg[@]}" --set checkpoint.every=0 --run-dir "$work/straight" >"$work/log" 2>&1
# Columns step, loss, aux_loss, z_loss, lr, grad_norm and eval_loss (timings differ).
if ! diff <(cut -d, -f1-6,12 "$work/straight/metrics.csv") <(cut -d, -f1-6,12 "$work/run/metrics.csv") >"$work/diff"; then
  echo "resumed losses differ from the uninterrupted run:"; head "$work/diff"; exit 1
fi
echo "crash test passed: resumed run equals the uninterrupted run over $(($(wc -l <"$work/run/metrics.csv") - 1)) steps"
