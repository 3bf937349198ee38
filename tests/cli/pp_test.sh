#!/usr/bin/env bash
# Pipeline parallelism under mpirun, end to end through moe-train (the schedules themselves are
# unit-tested in tests/parallel/pipeline_schedule_test.cpp):
# - pp=2 with 4 micro-batches equals 1 rank with the same batch and micro-batches, for GPipe and
#   1F1B: per-step losses to 1e-5 relative and parameters to ||a-b||/||a|| <= 1e-5 after 10 steps,
#   and in fact bitwise (a pipeline alone changes no arithmetic);
#   also with the aux loss on (each stage injects its layers' aux gradients in their backward),
#   where the logged aux loss and the final evaluation (forward through the stages) match too;
# - pp=2, dp=2, ep=2 on 4 ranks (--oversubscribe) equals 1 rank with the same global batch;
# - an uneven partition (3 layers over 2 stages) and a stage without MoE layers (its layers dense)
#   equal 1 rank too, and so does an explicit partition;
# - a pp=2, dp=2 run stopped and resumed is bitwise the run that never stopped; its checkpoint
#   holds one shard per stage and moe-eval merges them;
# - the measured bubble is in metrics.csv and the record.
#   tests/cli/pp_test.sh build/moe-train build/moe-eval MPIEXEC
source "$(dirname "${BASH_SOURCE[0]}")/parallel_common.sh" "$@"
mb=(--set train.micro_batches=4)
# A pipeline alone changes no arithmetic (same micro-batches, same kernels per layer; the clipping
# norm is summed in float64): its parameters must be bitwise those of 1 rank.
bitwise() {   # bitwise <a> <b> <label>
  "$eval" diff "$work/$1/checkpoints" "$work/$2/checkpoints" --tolerance 0 >"$work/diff" || true
  grep -q "bitwise identical" "$work/diff" || { cat "$work/diff"; fail "$3: parameters are not bitwise identical"; }
}

run one 1 "${mb[@]}"
run gpipe 2 "${mb[@]}" --set parallel.pp=2 --set parallel.schedule=gpipe
same_losses one gpipe "pp=2 GPipe vs 1 rank"
bitwise one gpipe "pp=2 GPipe vs 1 rank"
run 1f1b 2 "${mb[@]}" --set parallel.pp=2 --set parallel.schedule=1f1b
same_losses one 1f1b "pp=2 1F1B vs 1 rank"
bitwise one 1f1b "pp=2 1F1B vs 1 rank"
run one_aux 1 "${mb[@]}" --set moe.aux_loss_coef=0.01
run 1f1b_aux 2 "${mb[@]}" --set parallel.pp=2 --set moe.aux_loss_coef=0.01
same_losses one_aux 1f1b_aux "aux loss on (injected on each stage in its backward): pp=2 1F1B vs 1 rank"
same_column one_aux 1f1b_aux 3 "aux loss on: pp=2 1F1B vs 1 rank"
# The final evaluation runs forward through the stages: the same loss as on 1 rank.
eval_loss() { sed -nE 's/^  final_eval_loss: ([0-9.e+-]+)$/\1/p' "$work/$1/record.yaml"; }
awk -v a="$(eval_loss one_aux)" -v b="$(eval_loss 1f1b_aux)" 'BEGIN { d = (a - b) / a; if (d < 0) d = -d;
  printf "final eval loss through 2 stages %s vs 1 rank %s\n", b, a; exit !(a > 0 && d <= 1e-5) }' ||
  fail "the pipelined evaluation differs from 1 rank's"
ck=$work/1f1b/checkpoints/step-00000010
[[ -f $ck/rank-00001.h5 ]] || fail "the pp=2 checkpoint lacks stage 1's shard"
# Each shard holds only its stage (HDF5 keeps dataset names as plain text in the file).
grep -q "embed_tokens" "$ck/rank-00000.h5" && ! grep -q "lm_head" "$ck/rank-00000.h5" || fail "stage 0's shard holds the wrong tensors"
grep -q "lm_head" "$ck/rank-00001.h5" && ! grep -q "embed_tokens" "$ck/rank-00001.h5" || fail "stage 1's shard holds the wrong tensors"
"$eval" verify "$work/1f1b/checkpoints" >/dev/null || fail "the two-stage checkpoint does not verify"
grep -q "pipeline_bubble:" "$work/1f1b/record.yaml" || fail "the record has no pipeline bubble"
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "bubble") c = i } NR > 1 && !($c > 0 && $c < 1) { bad = 1 }
         END { exit bad || !c }' "$work/1f1b/metrics.csv" || fail "metrics.csv lacks a bubble share in (0, 1) on every step"

run one_global 1 --set train.batch_size=8 "${mb[@]}"
run 3d 4 --set train.batch_size=4 --set train.micro_batches=2 --set parallel.pp=2 --set parallel.dp=2 --set parallel.ep=2
same_losses one_global 3d "pp=2 dp=2 ep=2 (4 ranks) vs 1 rank"

three=(--set model.n_layers=3 --set moe.first_dense_layers=2 "${mb[@]}")
run one3 1 "${three[@]}"
run uneven 2 "${three[@]}" --set parallel.pp=2
same_losses one3 uneven "3 layers over 2 stages (2 dense + 1 MoE; stage 0 without MoE layers) vs 1 rank"
bitwise one3 uneven "3 layers over 2 stages"
run partition 2 "${three[@]}" --set parallel.pp=2 --set "parallel.partition=[1, 2]"
same_losses one3 partition "an explicit partition [1, 2] vs 1 rank"

run dp 4 --set train.batch_size=4 "${mb[@]}" --set parallel.pp=2 --set parallel.dp=2
run resumed 4 --set train.batch_size=4 "${mb[@]}" --set parallel.pp=2 --set parallel.dp=2 --stop-after 5
run resumed 4 --set train.batch_size=4 "${mb[@]}" --set parallel.pp=2 --set parallel.dp=2
grep -q "^resumed_from:" "$work/resumed/record.yaml" || fail "the second pp=2 dp=2 run did not resume"
diff <(cut -d, -f1-6 "$work/dp/metrics.csv") <(cut -d, -f1-6 "$work/resumed/metrics.csv") >/dev/null ||
  fail "resumed pp=2 dp=2 losses differ from the uninterrupted run"
"$eval" diff "$work/dp/checkpoints" "$work/resumed/checkpoints" --tolerance 0 | tee "$work/diff"
grep -q "bitwise identical" "$work/diff" || fail "resumed pp=2 dp=2 parameters are not bitwise identical"
echo "pipeline parallelism: GPipe and 1F1B equal to 1 rank, 3D equal to 1 rank, uneven and MoE-free stages, resume bitwise"
