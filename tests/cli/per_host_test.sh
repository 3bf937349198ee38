#!/usr/bin/env bash
# Per-host checkpoint storage (checkpoint.storage: per_host) and asynchronous multi-rank saves, on
# one machine: each rank plays a host of its own (MOE_HOST_ID) with its own checkpoint folder, the
# way Fly Machines each have a volume (tests/fly runs the real thing in network namespaces).
# - dp=2 stopped at step 5 and resumed from the two folders: bitwise the uninterrupted run;
# - a newer step planted on one folder only is skipped (not every host verifies it);
# - one folder emptied (a lost volume): that rank takes the state from its replica, bitwise;
# - pp=2 (no replica of a stage) with one folder emptied: refused, naming the host and the step;
# - moe-eval reads the pp=2 run from its two folders (comma-separated), not from one;
# - checkpoint.async with 2 ranks (the commit in a thread of its own): stopped and resumed, bitwise
#   the run with synchronous saves (the stall it saves: bench/checkpoint.sh --ranks 2); and killed
#   (SIGKILL inside the commit thread, MOE_CRASH_AT) at each named point of a save and of pruning:
#   the folder verifies, and the resumed run is bitwise the same again.
#   tests/cli/per_host_test.sh build/moe-train build/moe-eval MPIEXEC
set -euo pipefail
train=$(realpath "$1") eval=$(realpath "$2") mpiexec=$3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_per_host_test.XXXXXX)
trap 'rm -rf "$work"' EXIT
mpi=("$mpiexec" --oversubscribe --bind-to none)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
fail() { echo "FAILED: $*"; exit 1; }
cfg=("$root/configs/tiny.yaml" --set train.steps=10 --set train.eval_every=0 --set model.n_layers=2
     --set train.batch_size=4 --set train.threads=1 --set checkpoint.every=3 --set checkpoint.storage=per_host)
# hosts <dir> <layout args> -- <extra args>: one rank per host a and b, each with its own folder.
hosts() {
  local dir=$1; shift
  local layout=()
  while [[ $1 != -- ]]; do layout+=("$1"); shift; done
  shift
  local one=("$train" "${cfg[@]}" "${layout[@]}" --run-dir "$work/$dir/run" "$@")
  "${mpi[@]}" -np 1 -x MOE_HOST_ID=a "${one[@]}" --set checkpoint.dir="$work/$dir/a" : \
              -np 1 -x MOE_HOST_ID=b "${one[@]}" --set checkpoint.dir="$work/$dir/b" >"$work/log" 2>&1
}
dp=(--set parallel.dp=2)
"${mpi[@]}" -np 2 "$train" "${cfg[@]}" "${dp[@]}" --set checkpoint.storage=shared --run-dir "$work/ref" >"$work/log" 2>&1 ||
  { cat "$work/log"; fail "the reference run"; }

# Stop, resume from both folders.
hosts stop "${dp[@]}" -- --stop-after 5 || { cat "$work/log"; fail "per-host run to step 5"; }
for h in a b; do
  [[ -f $work/stop/$h/step-00000005/manifest.yaml ]] || fail "host $h has no step 5"
  grep -q "^host: $h" "$work/stop/$h/step-00000005/manifest.yaml" || fail "host $h's manifest does not name it"
done
grep -q "rank-00001.h5" "$work/stop/a/step-00000005/manifest.yaml" && fail "host a's manifest lists host b's shard"
cp -r "$work/stop" "$work/lost"
cp -r "$work/stop" "$work/planted"
hosts stop "${dp[@]}" -- || { cat "$work/log"; fail "resume"; }
grep -q "resumed from .*/a/step-00000005" "$work/log" || { cat "$work/log"; fail "did not resume from step 5"; }
for h in a b; do "$eval" diff "$work/stop/$h" "$work/ref/checkpoints" --tolerance 0 >/dev/null || fail "resumed host $h differs"; done
echo "ok: per-host stop at 5 and resume: both hosts bitwise equal to the uninterrupted run"

# A newer step on host a's folder only (a consistent copy of step 5 named step 6): skipped.
cp -r "$work/planted/a/step-00000005" "$work/planted/a/step-00000006"
sed -i 's/^step: 5$/step: 6/' "$work/planted/a/step-00000006/manifest.yaml"
mkdir "$work/planted/b/.tmp-step-00000009"   # a save killed on host b: its own rank 0 removes it
hosts planted "${dp[@]}" -- || { cat "$work/log"; fail "resume beside a planted step"; }
[[ ! -e $work/planted/b/.tmp-step-00000009 ]] || fail "host b's stale temporary folder was left"
grep -q "step 6 is not on every host's volume; skipped" "$work/log" || { cat "$work/log"; fail "the planted step was not skipped"; }
grep -q "resumed from .*/a/step-00000005" "$work/log" || { cat "$work/log"; fail "did not resume from step 5"; }
"$eval" diff "$work/planted/b" "$work/ref/checkpoints" --tolerance 0 >/dev/null || fail "planted: host b differs"
echo "ok: a step on one volume only is skipped; the run resumes from step 5, bitwise; host b's stale .tmp removed"

# Host b's volume lost: rank 1 takes step 5 from its replica (rank 0), and the run goes on bitwise.
rm -rf "$work/lost/b"
hosts lost "${dp[@]}" -- || { cat "$work/log"; fail "resume with a lost volume"; }
grep -q "rank 1 (host b): its checkpoint folder .* was empty; took step 5 from a replica" "$work/log" ||
  { cat "$work/log"; fail "no recovery message"; }
for h in a b; do "$eval" diff "$work/lost/$h" "$work/ref/checkpoints" --tolerance 0 >/dev/null || fail "lost: host $h differs"; done
echo "ok: an emptied volume is recovered from the replica; bitwise equal"

# pp=2: the stages have no replica. moe-eval needs both folders; a lost one is refused by name.
pp=(--set parallel.pp=2 --set train.micro_batches=2)
hosts pp "${pp[@]}" -- --stop-after 5 || { cat "$work/log"; fail "pp=2 per-host run"; }
"$eval" eval --checkpoint "$work/pp/a,$work/pp/b" >"$work/eval" 2>&1 || { cat "$work/eval"; fail "moe-eval of the two folders"; }
grep -q "^eval loss" "$work/eval" || fail "moe-eval printed no eval loss"
"$eval" eval --checkpoint "$work/pp/a" >"$work/eval" 2>&1 && fail "moe-eval loaded a pp=2 model from one host's folder"
grep -q "is missing" "$work/eval" || { cat "$work/eval"; fail "moe-eval's refusal names no missing tensor"; }
rm -rf "$work/pp/b"
rc=0
hosts pp "${pp[@]}" -- || rc=$?
((rc != 0)) || fail "pp=2 with a lost volume resumed"
grep -q "rank 1 (host b) lost its checkpoint folder .*, and no replica holds step 5" "$work/log" ||
  { cat "$work/log"; fail "the refusal names no host and step"; }
echo "ok: moe-eval reads the two folders; a lost stage without replica is refused (exit $rc) naming host b and step 5"

# Asynchronous saves with 2 ranks: the commit in a thread of its own; bitwise.
async=("$root/configs/tiny.yaml" --set train.steps=12 --set train.eval_every=0 --set model.n_layers=2 --set parallel.dp=2
       --set train.batch_size=4 --set train.threads=1 --set checkpoint.every=2 --set checkpoint.save_final=false)
"${mpi[@]}" -np 2 "$train" "${async[@]}" --set checkpoint.async=true --run-dir "$work/async" --stop-after 7 >"$work/log" 2>&1 ||
  { cat "$work/log"; fail "async run to step 7"; }
[[ -f $work/async/checkpoints/step-00000006/manifest.yaml ]] || fail "no step 6 from the async saves"
"${mpi[@]}" -np 2 "$train" "${async[@]}" --set checkpoint.async=true --set checkpoint.save_final=true --run-dir "$work/async" \
  >"$work/log" 2>&1 || { cat "$work/log"; fail "async resume"; }
"${mpi[@]}" -np 2 "$train" "${async[@]}" --set checkpoint.save_final=true --run-dir "$work/sync" >"$work/log" 2>&1 ||
  { cat "$work/log"; fail "sync run"; }
"$eval" diff "$work/async/checkpoints" "$work/sync/checkpoints" --tolerance 0 >/dev/null || fail "async-saved run differs"
echo "ok: asynchronous multi-rank saves, stopped at 7 and resumed: bitwise equal to synchronous saves"

# The commit thread killed at each named point of a save and of pruning (MOE_CRASH_AT raises SIGKILL
# there, on the rank that commits): the job dies; what is left verifies; the resume is bitwise.
for point in save:after-shards save:after-manifest save:after-rename prune:after-rename; do
  run=$work/crash-${point//:/-}
  rc=0
  MOE_CRASH_AT=$point "${mpi[@]}" -np 2 -x MOE_CRASH_AT "$train" "${async[@]}" --set checkpoint.async=true \
    --set checkpoint.save_final=true --run-dir "$run" >"$work/log" 2>&1 || rc=$?
  ((rc != 0)) || { cat "$work/log"; fail "$point: the job was not killed"; }
  if [[ -f $run/checkpoints/LATEST ]]; then
    "$eval" verify "$run/checkpoints" >"$work/verify" 2>&1 || { cat "$work/verify"; fail "$point: left a checkpoint that does not verify"; }
  fi
  "${mpi[@]}" -np 2 "$train" "${async[@]}" --set checkpoint.async=true --set checkpoint.save_final=true --run-dir "$run" \
    >"$work/log" 2>&1 || { cat "$work/log"; fail "$point: resume"; }
  "$eval" diff "$run/checkpoints" "$work/sync/checkpoints" --tolerance 0 >/dev/null || fail "$point: resumed run differs"
  echo "ok: async commit killed at $point (exit $rc): verifies, resumes bitwise"
done
