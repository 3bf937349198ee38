#!/usr/bin/env bash
# Data parallelism under mpirun, against the single-process run:
# - dp=2 with batch b per rank equals 1 rank with batch 2b: per-step losses and the final
#   parameters to float32 tolerance (1e-5 relative) after 10 steps. The Switch aux loss is set to 0
#   here: it is computed per rank on that rank's tokens (a product of two means), so it differs by
#   design between the layouts (see docs/parallelism.md); the z-loss is a plain mean and stays on.
# - a dp=2 run stopped and resumed is bitwise the dp=2 run that never stopped;
# - a layout that does not match the launched ranks is a config error naming the numbers.
#   tests/cli/dp_test.sh build/moe-train build/moe-eval MPIEXEC
source "$(dirname "${BASH_SOURCE[0]}")/parallel_common.sh" "$@"

"$train" "${cfg[@]}" --set train.batch_size=8 --run-dir "$work/one" >"$work/log" 2>&1 || { cat "$work/log"; fail "1 rank"; }
"${mpi[@]}" -np 2 "$train" "${cfg[@]}" --set train.batch_size=4 --set parallel.dp=2 --run-dir "$work/dp2" \
  >"$work/log" 2>&1 || { cat "$work/log"; fail "dp=2"; }
grep -q "^  dp: 2" "$work/dp2/record.yaml" || fail "record does not show dp: 2"
# Per-step losses to 1e-5 relative.
paste -d, <(cut -d, -f1,2 "$work/one/metrics.csv") <(cut -d, -f2 "$work/dp2/metrics.csv") | awk -F, '
  NR > 1 { rel = ($2 - $3) / $2; if (rel < 0) rel = -rel; if (rel > worst) worst = rel; n++ }
  END { printf "dp=2 vs 1 rank: %d steps, largest relative loss difference %.2e\n", n, worst; exit !(n == 10 && worst <= 1e-5) }' ||
  fail "losses differ"
"$eval" diff "$work/one/checkpoints" "$work/dp2/checkpoints" --tolerance 1e-5 || fail "parameters differ"

# With the aux loss on, the global scope (f and P summed over the replicas before the product)
# makes dp=2 equal to 1 rank again; the local scope differs by design (checked, so this part of
# the test can fail).
glob=(--set moe.aux_loss_coef=0.01 --set moe.aux_loss_scope=global)
"$train" "${cfg[@]}" "${glob[@]}" --set train.batch_size=8 --run-dir "$work/one_aux" >"$work/log" 2>&1 || { cat "$work/log"; fail "1 rank, aux"; }
"${mpi[@]}" -np 2 "$train" "${cfg[@]}" "${glob[@]}" --set train.batch_size=4 --set parallel.dp=2 --run-dir "$work/dp2_aux" \
  >"$work/log" 2>&1 || { cat "$work/log"; fail "dp=2, global aux"; }
"$eval" diff "$work/one_aux/checkpoints" "$work/dp2_aux/checkpoints" --tolerance 1e-5 || fail "global aux: parameters differ"
"${mpi[@]}" -np 2 "$train" "${cfg[@]}" "${glob[@]}" --set moe.aux_loss_scope=local --set train.batch_size=4 \
  --set parallel.dp=2 --run-dir "$work/dp2_local" >"$work/log" 2>&1 || { cat "$work/log"; fail "dp=2, local aux"; }
! "$eval" diff "$work/one_aux/checkpoints" "$work/dp2_local/checkpoints" --tolerance 1e-4 >/dev/null ||
  fail "local aux scope matched the 1-rank run: the global-scope check above proves nothing"

# Resume of a dp=2 run is bitwise.
"${mpi[@]}" -np 2 "$train" "${cfg[@]}" --set train.batch_size=4 --set parallel.dp=2 --run-dir "$work/resumed" \
  --stop-after 5 >"$work/log" 2>&1 || { cat "$work/log"; fail "dp=2 --stop-after 5"; }
"${mpi[@]}" -np 2 "$train" "${cfg[@]}" --set train.batch_size=4 --set parallel.dp=2 --run-dir "$work/resumed" \
  >"$work/log" 2>&1 || { cat "$work/log"; fail "dp=2 resume"; }
grep -q "^resumed_from:" "$work/resumed/record.yaml" || fail "the second dp=2 run did not resume"
diff <(cut -d, -f1-6 "$work/dp2/metrics.csv") <(cut -d, -f1-6 "$work/resumed/metrics.csv") >/dev/null ||
  fail "resumed dp=2 losses differ from the uninterrupted dp=2 run"
"$eval" diff "$work/dp2/checkpoints" "$work/resumed/checkpoints" --tolerance 0 | tee "$work/diff"
grep -q "bitwise identical" "$work/diff" || fail "resumed dp=2 parameters are not bitwise identical"

# A layout that does not fit the launched ranks.
rc=0
"${mpi[@]}" -np 3 "$train" "${cfg[@]}" --set parallel.dp=2 --run-dir "$work/bad" >"$work/log" 2>&1 || rc=$?
((rc != 0)) || fail "dp=2 on 3 ranks was accepted"
grep -q "3 ranks, but pp x dp = 1 x 2 = 2" "$work/log" || { cat "$work/log"; fail "message does not name the numbers"; }
[[ ! -e $work/bad/record.yaml ]] || fail "a refused layout left a run record"
# A rank that fails mid-run (rank 0 cannot write its checkpoint after step 3 while rank 1 goes on
# into the next step's all-reduce) ends the whole job within 10 s, with that rank's message.
echo "not a folder" >"$work/file"
start=$(date +%s.%N)
rc=0
timeout 60 "${mpi[@]}" -np 2 "$train" "${cfg[@]}" --set train.batch_size=4 --set parallel.dp=2 --set checkpoint.every=3 \
  --set "checkpoint.dir=$work/file/ck" --run-dir "$work/failing" >"$work/log" 2>&1 || rc=$?
seconds=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
((rc != 0 && rc != 124)) || { cat "$work/log"; fail "the failing job exited with $rc"; }
grep -q "rank 0: error: .*cannot create checkpoint directory" "$work/log" || { cat "$work/log"; fail "the failing rank's message is missing"; }
awk -v s="$seconds" 'BEGIN { exit !(s < 10) }' || fail "the job took $seconds s to end"
echo "a failing rank ended the job in $seconds s with its message"

echo "data parallelism: equal to 1 rank, resume bitwise, bad layouts refused, failures end the job"
