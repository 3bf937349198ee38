#!/usr/bin/env bash
# Crash test: kill -9 the trainer at random moments, 40 times by default, many of them during a
# checkpoint save (one every step, so saves take most of the time). After every kill, the
# checkpoint root must verify with `moe-eval verify` (what a resume takes: manifest, checksums,
# every tensor and counter). Then the run is resumed to the end, and its per-step losses must
# equal those of a run never killed. Last, the process is killed (SIGKILL from inside, via
# MOE_CRASH_AT) at each named point of a save and of pruning, where random kills rarely land:
# no step folder may then lack a shard, and each resume must equal the uninterrupted run.
#   tests/cli/crash_test.sh build/moe-train build/moe-eval   # CRASH_TEST_TRIALS=40
set -euo pipefail
train=$1 eval=$2 trials=${CRASH_TEST_TRIALS:-40}
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
echo "random kills: resumed run equals the uninterrupted run over $(($(wc -l <"$work/run/metrics.csv") - 1)) steps"

# Named crash points. checkpoint.every=10 with keep 2: the third save prunes the first.
points=(save:after-shards save:after-manifest save:after-rename prune:after-rename)
every=(--set checkpoint.every=10)
for point in "${points[@]}"; do
  run=$work/point-$point
  # The first save (or prune) dies there; for save points, let two saves complete first.
  skip=()
  [[ $point == save:* ]] && skip=(--stop-after 20) && { "$train" "$root/configs/tiny.yaml" "${cfg[@]}" "${every[@]}" "${skip[@]}" --run-dir "$run" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }; }
  rc=0; MOE_CRASH_AT=$point "$train" "$root/configs/tiny.yaml" "${cfg[@]}" "${every[@]}" --run-dir "$run" >"$work/log" 2>&1 || rc=$?
  ((rc == 137)) || { cat "$work/log"; echo "$point: exit code $rc, expected 137 (SIGKILL at the crash point)"; exit 1; }
  for d in "$run"/checkpoints/step-*; do
    [[ -f $d/manifest.yaml ]] || continue
    "$eval" verify "$d" >"$work/verify" 2>&1 || { echo "$point: $d looks complete and is not:"; cat "$work/verify"; exit 1; }
  done
  "$eval" verify "$run/checkpoints" >"$work/verify" 2>&1 || { echo "$point: no checkpoint to resume from:"; cat "$work/verify"; exit 1; }
  if [[ $point == prune:* ]] && ! compgen -G "$run/checkpoints/.tmp-prune-*" >/dev/null; then
    echo "$point: no pruned folder left behind: the crash did not land while pruning"; exit 1
  fi
  "$train" "$root/configs/tiny.yaml" "${cfg[@]}" "${every[@]}" --run-dir "$run" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
  if compgen -G "$run/checkpoints/.tmp-*" >/dev/null; then echo "$point: temporaries left after the resume"; exit 1; fi
  diff <(cut -d, -f1-6,12 "$work/straight/metrics.csv") <(cut -d, -f1-6,12 "$run/metrics.csv") >"$work/diff" ||
    { echo "$point: resumed losses differ from the uninterrupted run:"; head "$work/diff"; exit 1; }
  echo "crash point $point: killed there, every step folder verifies, resume equals the uninterrupted run"
done
echo "crash test passed"
