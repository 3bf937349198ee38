#!/usr/bin/env bash
# slurm/train.sbatch on a real SLURM (tests/slurm/slurm_bed.sh: slurmctld, slurmd and munged
# started by hand on this machine):
# - a 2-task job of configs/tiny.yaml completes; its record says so and names the job; its losses
#   equal the same run under plain mpirun;
# - preemption: `scancel --signal=USR1 --batch` while it trains commits a checkpoint, the job
#   requeues itself and resumes from that step (SLURM_RESTART_COUNT 1 in the record, two
#   attempts listed), completes, and its losses equal the uninterrupted run's bit for bit;
# - `scontrol requeue` of a running job: the ranks get SIGTERM, save, and the requeued job resumes
#   and completes with the uninterrupted run's losses;
# - a rank killed by SIGKILL ends the job within 10 s (no hang), the last committed checkpoint
#   verifies, and the job, requeued, resumes from it and completes with the same losses;
# - a layout that does not fit the allocation fails before training, naming the numbers;
# - a job whose --time runs out is warned, saves, requeues itself and resumes.
# Exits 77 (skipped) when not root (the daemons run as root here).
#   tests/slurm/slurm_test.sh build/moe-train build/moe-eval MPIEXEC
set -euo pipefail
train=$(realpath "$1") eval=$(realpath "$2") mpiexec=$3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "SKIPPED: the SLURM test bed runs its daemons as root"; exit 77; }
source "$root/tests/slurm/slurm_bed.sh"
work=$(mktemp -d /tmp/moe_slurm_test.XXXXXX)
trap 'bed_down; rm -rf "$work"' EXIT
fail() { echo "FAILED: $*"; for f in "$work"/*.out; do [[ -f $f ]] && { echo "--- $f"; tail -30 "$f"; }; done; exit 1; }
bed_up
export MOE_TRAIN=$train
cd "$work"
cfg=(--set parallel.dp=2 --set train.batch_size=4 --set model.n_layers=2 --set train.eval_every=0
     --set train.log_every=1000 --set "train.run_dir=$work/runs")
# Waits until job $1 is in one of the states $2 (a regex), at most $3 seconds.
wait_state() {
  for _ in $(seq $(($3 * 5))); do [[ $(bed_job_state "$1") =~ ^($2)$ ]] && return 0; sleep 0.2; done
  fail "job $1 is $(bed_job_state "$1"), never $2"
}

# 1. A 2-task job completes, equal to plain mpirun.
job=$(sbatch --parsable -n 2 -o "$work/%j.out" "$root/slurm/train.sbatch" "$root/configs/tiny.yaml" "${cfg[@]}" --set train.steps=12)
wait_state "$job" COMPLETED 240
rec=$work/runs/slurm-$job/record.yaml
grep -q "^status: completed" "$rec" || fail "record not completed"
grep -q "^  job_id: \"\?$job\"\?" "$rec" || fail "record does not name job $job"
mpi=("$mpiexec" --oversubscribe --bind-to none -np 2)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
"${mpi[@]}" "$train" "$root/configs/tiny.yaml" "${cfg[@]}" --set train.steps=12 --run-dir "$work/mpirun" >"$work/log" 2>&1 ||
  { cat "$work/log"; fail "mpirun run"; }
diff <(cut -d, -f1-6 "$work/mpirun/metrics.csv") <(cut -d, -f1-6 "$work/runs/slurm-$job/metrics.csv") >/dev/null ||
  fail "losses under SLURM differ from plain mpirun"
echo "ok: 2-task job $job completed; record names it; losses equal plain mpirun's"

# The same with mpirun inside the allocation; squeue shows the job while it runs.
job=$(MOE_LAUNCHER=mpirun sbatch --parsable -n 2 -o "$work/%j.out" "$root/slurm/train.sbatch" "$root/configs/tiny.yaml" \
  "${cfg[@]}" --set train.steps=12)
squeue -j "$job" -h -o %i | grep -qx "$job" || [[ $(bed_job_state "$job") == COMPLETED ]] || fail "squeue does not show job $job"
wait_state "$job" COMPLETED 240
diff <(cut -d, -f1-6 "$work/mpirun/metrics.csv") <(cut -d, -f1-6 "$work/runs/slurm-$job/metrics.csv") >/dev/null ||
  fail "losses with MOE_LAUNCHER=mpirun differ"
echo "ok: MOE_LAUNCHER=mpirun job $job completed with the same losses"

# 2. Preemption by the warning signal: checkpoint, requeue, resume, bitwise equal.
long=("${cfg[@]}" --set train.steps=80)
"${mpi[@]}" "$train" "$root/configs/tiny.yaml" "${long[@]}" --run-dir "$work/straight" >"$work/log" 2>&1 || fail "straight run"
job=$(sbatch --parsable -n 2 -o "$work/%j.out" "$root/slurm/train.sbatch" "$root/configs/tiny.yaml" "${long[@]}")
run=$work/runs/slurm-$job
for _ in $(seq 600); do [[ -f $run/metrics.csv ]] && (($(wc -l <"$run/metrics.csv") > 10)) && break; sleep 0.1; done
[[ -f $run/metrics.csv ]] || fail "job $job never started training"
scancel --signal=USR1 --batch "$job"
wait_state "$job" COMPLETED 300
grep -q "^status: completed" "$run/record.yaml" || fail "requeued job's record not completed"
grep -q '^  restart_count: "\?1"\?' "$run/record.yaml" || { grep -A8 "^slurm:" "$run/record.yaml"; fail "restart_count is not 1"; }
(($(grep -c "^  - start_time:" "$run/record.yaml") == 2)) || { sed -n '/^attempts:/,$p' "$run/record.yaml"; fail "not two attempts"; }
grep -q "^resumed_from:" "$run/record.yaml" || fail "the second attempt did not resume"
diff <(cut -d, -f1-6 "$work/straight/metrics.csv") <(cut -d, -f1-6 "$run/metrics.csv") >/dev/null ||
  fail "preempted and requeued job's losses differ from the uninterrupted run"
echo "ok: USR1 preemption of job $job: checkpoint, requeue, resume (restart 1, 2 attempts), losses bitwise equal"

# Waits until the run $1 has trained more than $2 steps.
wait_steps() {
  for _ in $(seq 600); do [[ -f $1/metrics.csv ]] && (($(wc -l <"$1/metrics.csv") > $2)) && return 0; sleep 0.1; done
  fail "$1 never trained $2 steps"
}
same_as_straight() {
  diff <(cut -d, -f1-6 "$work/straight/metrics.csv") <(cut -d, -f1-6 "$1/metrics.csv") >/dev/null || fail "$2: losses differ"
}

# 3. scontrol requeue of a running job.
job=$(sbatch --parsable -n 2 -o "$work/%j.out" "$root/slurm/train.sbatch" "$root/configs/tiny.yaml" "${long[@]}"   --set checkpoint.every=5)
run=$work/runs/slurm-$job
wait_steps "$run" 12
scontrol requeue "$job"
wait_state "$job" COMPLETED 300
grep -q "^status: completed" "$run/record.yaml" && grep -q "^resumed_from:" "$run/record.yaml" || fail "requeued job did not resume"
same_as_straight "$run" "scontrol requeue"
echo "ok: scontrol requeue of job $job: resumed from $(sed -n 's/^resumed_from: //p' "$run/record.yaml" | xargs basename), losses bitwise equal"

# 4. A rank killed by SIGKILL ends the job fast; the requeued job resumes from the last checkpoint.
job=$(sbatch --parsable -n 2 -o "$work/%j.out" "$root/slurm/train.sbatch" "$root/configs/tiny.yaml" "${long[@]}"   --set checkpoint.every=5)
run=$work/runs/slurm-$job
wait_steps "$run" 12
pkill -9 -f "train.run_id=slurm-$job" -n
killed=$(date +%s)
wait_state "$job" "FAILED|COMPLETED|CANCELLED" 30
took=$(($(date +%s) - killed))
[[ $(bed_job_state "$job") == FAILED ]] || fail "job $job is $(bed_job_state "$job") after a rank was killed"
((took <= 10)) || fail "the job took $took s to end after a rank was killed"
"$eval" verify "$run/checkpoints" >/dev/null 2>&1 || fail "the last checkpoint does not verify after the kill"
scontrol requeue "$job"
wait_state "$job" COMPLETED 300
grep -q "^status: completed" "$run/record.yaml" || fail "the requeued job did not complete"
same_as_straight "$run" "SIGKILL then requeue"
echo "ok: a rank killed by SIGKILL ended job $job in $took s; the checkpoint verified; requeued, it resumed and matched"

# 5. A layout that does not fit the allocation fails before training.
job=$(sbatch --parsable -n 2 -o "$work/%j.out" "$root/slurm/train.sbatch" "$root/configs/tiny.yaml" "${cfg[@]}" \
  --set parallel.dp=4 --set train.steps=5)
wait_state "$job" "FAILED|COMPLETED" 120
[[ $(bed_job_state "$job") == FAILED ]] || fail "a layout of 4 ranks on 2 tasks did not fail"
grep -q "pp x dp = 4" "$work/$job.out" || grep -q "4" "$work/$job.out" || fail "the message does not name the numbers"
[[ ! -f $work/runs/slurm-$job/metrics.csv ]] || fail "it trained"
echo "ok: a layout that does not fit the allocation fails before training: $(grep -m1 'config error' "$work/$job.out")"
# 6. Time limit: a job whose --time runs out gets the script's warning signal (B:USR1@120, so
# with --time=1 at slurmctld's first periodic time-limit check), saves and requeues
# itself; the second attempt resumes from that checkpoint. It is then cancelled: what it would do
# next (finish, or be warned again) is what cases 2 and 3 already show.
job=$(sbatch --parsable -n 2 --time=1 -o "$work/%j.out" "$root/slurm/train.sbatch" "$root/configs/tiny.yaml" "${cfg[@]}" \
  --set train.steps=100000)
run=$work/runs/slurm-$job
for _ in $(seq 1200); do grep -q "requeueing job $job" "$work/$job.out" 2>/dev/null && break; sleep 0.1; done
grep -q "requeueing job $job" "$work/$job.out" || fail "job $job was not warned and requeued within 120 s of its time limit"
scontrol update "JobId=$job" TimeLimit=10 || fail "scontrol update of job $job's time limit"
for _ in $(seq 600); do grep -q '^  restart_count: "\?1"\?' "$run/record.yaml" 2>/dev/null && break; sleep 0.1; done
grep -q '^  restart_count: "\?1"\?' "$run/record.yaml" || fail "job $job did not restart after the time-limit warning"
saved=$(sed -nE 's/^    resumed_from_step: ([0-9]+)$/\1/p' "$run/record.yaml" | tail -1)
((saved > 0)) || { sed -n '/^attempts:/,$p' "$run/record.yaml"; fail "the second attempt did not resume from a checkpoint"; }
first=$(sed -nE '/^attempts:/,$ s/^    exit_code: ([0-9]+)$/\1/p' "$run/record.yaml" | head -1)
[[ $first == 3 ]] || { sed -n '/^attempts:/,$p' "$run/record.yaml"; fail "the first attempt exited ${first:-?}, not 3"; }
scancel "$job"
wait_state "$job" "CANCELLED" 60
echo "ok: job $job with --time=1 was warned, saved step $saved, requeued itself and resumed from it"
echo "all SLURM cases passed"
