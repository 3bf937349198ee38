#!/usr/bin/env bash
# SIGTERM mid-run: the trainer finishes the step, saves a checkpoint of it, marks the record
# interrupted and exits 3; running the same command again continues with the losses of a run
# never stopped. A second signal exits at once (128 + signal) and leaves the last complete
# checkpoint valid, and a record that says "killed" (never "running"). SIGUSR1 (SLURM's warning)
# and SIGINT (Fly) stop the run the same way; under mpirun, SIGUSR1 sent to mpirun (which
# forwards it) ends the job with exit 3 as documented.
#   tests/cli/signal_test.sh build/moe-train build/moe-eval [MPIEXEC]
set -euo pipefail
train=$1 eval=$2 mpiexec=${3:-mpirun}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_signal_test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cfg=("$root/configs/tiny.yaml" --set train.steps=60 --set train.eval_every=25 --set train.log_every=1000)
fail() { echo "FAILED: $*"; exit 1; }

# Waits until the run's metrics.csv has at least $2 step rows.
wait_for_steps() {
  for _ in $(seq 600); do
    [[ -f $1/metrics.csv ]] && (($(wc -l <"$1/metrics.csv") > $2)) && return 0
    sleep 0.05
  done
  fail "$1 never reached $2 steps"
}

"$train" "${cfg[@]}" --run-dir "$work/straight" >"$work/log" 2>&1 || { cat "$work/log"; fail "reference run"; }

for sig in TERM USR1 INT; do
  run=$work/run-$sig
  "$train" "${cfg[@]}" --run-dir "$run" >"$work/log" 2>&1 &
  pid=$!
  wait_for_steps "$run" 10
  kill -s "$sig" "$pid"
  rc=0; wait "$pid" || rc=$?
  ((rc == 3)) || { cat "$work/log"; fail "SIG$sig: exit code $rc, expected 3"; }
  grep -q "^status: interrupted" "$run/record.yaml" || fail "SIG$sig: record not marked interrupted"
  steps=$(($(wc -l <"$run/metrics.csv") - 1))
  expected=$(printf 'step-%08d' "$steps")
  [[ $(cat "$run/checkpoints/LATEST") == "$expected" ]] || fail "SIG$sig: LATEST is $(cat "$run/checkpoints/LATEST"), expected $expected (the step in progress)"
  "$eval" verify "$run/checkpoints" >/dev/null || fail "SIG$sig: checkpoint does not verify"
  "$train" "${cfg[@]}" --run-dir "$run" >"$work/log" 2>&1 || { cat "$work/log"; fail "SIG$sig: resume"; }
  grep -q "^status: completed" "$run/record.yaml" || fail "SIG$sig: resumed run did not complete"
  diff <(cut -d, -f1-6,12 "$work/straight/metrics.csv") <(cut -d, -f1-6,12 "$run/metrics.csv") >/dev/null ||
    fail "SIG$sig: resumed losses differ from the uninterrupted run"
  echo "SIG$sig: stopped after step $steps, exit 3, checkpoint verified, resume identical"
done

# Under mpirun: SIGUSR1 to mpirun is forwarded to the ranks, which stop after the same step and
# save; mpirun exits 3. (SIGTERM to mpirun makes it SIGKILL the ranks about a second after
# forwarding: its exit code is then mpirun's own, so SIGUSR1 is the documented signal.)
mpi=("$mpiexec" --oversubscribe --bind-to none -np 2)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
run=$work/run-mpirun
"${mpi[@]}" "$train" "${cfg[@]}" --set parallel.dp=2 --set train.batch_size=4 --run-dir "$run" >"$work/log" 2>&1 &
pid=$!
wait_for_steps "$run" 5
kill -s USR1 "$pid"
rc=0; wait "$pid" || rc=$?
((rc == 3)) || { cat "$work/log"; fail "SIGUSR1 to mpirun: exit code $rc, expected 3"; }
grep -q "^status: interrupted" "$run/record.yaml" || fail "SIGUSR1 to mpirun: record not marked interrupted"
"$eval" verify "$run/checkpoints" >/dev/null || fail "SIGUSR1 to mpirun: checkpoint does not verify"
echo "SIGUSR1 to mpirun: exit 3, record interrupted, checkpoint verified"

# Second signal, sent while the checkpoint the first one asked for is being written: exit at
# once (128 + 15) and leave LATEST naming the previous complete checkpoint, which still verifies.
# The save in progress must be caught in the act; a try where it finished first is repeated.
for try in 1 2 3 4 5; do
  run=$work/run-twice-$try
  "$train" "${cfg[@]}" --set checkpoint.every=5 --run-dir "$run" >"$work/log" 2>&1 &
  pid=$!
  wait_for_steps "$run" 7   # so step-00000005 exists
  before=$(cat "$run/checkpoints/LATEST")
  kill -s TERM "$pid"
  for _ in $(seq 400); do compgen -G "$run/checkpoints/.tmp-*" >/dev/null && break; sleep 0.005; done
  kill -s TERM "$pid" 2>/dev/null || true
  rc=0; wait "$pid" || rc=$?
  ((rc == 3)) && { echo "try $try: the save finished before the second signal; again"; continue; }
  ((rc == 143)) || fail "second SIGTERM: exit code $rc, expected 143"
  grep -q "^status: killed" "$run/record.yaml" || { grep "^status" "$run/record.yaml"; fail "second SIGTERM: record does not say killed"; }
  after=$(cat "$run/checkpoints/LATEST")
  [[ $after == "$before" ]] || fail "second SIGTERM: LATEST moved from $before to $after"
  "$eval" verify "$run/checkpoints" >/dev/null || fail "second SIGTERM: LATEST ($after) does not verify"
  "$train" "${cfg[@]}" --set checkpoint.every=5 --run-dir "$run" >"$work/log" 2>&1 || fail "resume after a second signal"
  grep -q "^status: completed" "$run/record.yaml" || fail "the resumed run's record does not say completed"
  echo "second SIGTERM during the save: exit 143, record killed, LATEST stays $after and verifies; the run resumes and completes"
  exit 0
done
fail "the second signal never landed during a save in 5 tries"
