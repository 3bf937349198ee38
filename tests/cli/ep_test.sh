#!/usr/bin/env bash
# Expert parallelism under mpirun, end to end through moe-train (the layer-level cases, skewed
# routing included, are tests/mpi/expert_parallel_test.cpp):
# - dp=2, ep=2 (each rank holds half the experts) with batch 4 per rank equals 1 rank with batch 8,
#   and dp=4, ep=4 (2 of the 8 experts per rank, --oversubscribe) with batch 2 equals it too:
#   per-step losses to 1e-5 relative and parameters to ||a-b||/||a|| <= 1e-5 after 10 steps
#   (aux loss off: it is per rank by design, see docs/parallelism.md), also with 4 experts over
#   4 ranks, and with the aux loss on in its global scope;
# - with capacity dropping (computed per rank), dp=2 ep=2 equals dp=2 ep=1;
# - a dp=2, ep=2 run stopped and resumed is bitwise the run that never stopped; its checkpoint
#   has one shard per expert shard and moe-eval merges them.
#   tests/cli/ep_test.sh build/moe-train build/moe-eval MPIEXEC
source "$(dirname "${BASH_SOURCE[0]}")/parallel_common.sh" "$@"

run one 1 --set train.batch_size=8
run ep2 2 --set train.batch_size=4 --set parallel.dp=2 --set parallel.ep=2
[[ -f $work/ep2/checkpoints/step-00000010/rank-00001.h5 ]] || fail "dp=2 ep=2 checkpoint lacks rank 1's expert shard"
same_losses one ep2 "dp=2 ep=2 vs 1 rank"
run ep4 4 --set train.batch_size=2 --set parallel.dp=4 --set parallel.ep=4
same_losses one ep4 "dp=4 ep=4 vs 1 rank"

run ep4x4 4 --set train.batch_size=2 --set parallel.dp=4 --set parallel.ep=4 --set moe.num_experts=4
run one4 1 --set train.batch_size=8 --set moe.num_experts=4
same_losses one4 ep4x4 "4 experts over 4 ranks (dp=4 ep=4) vs 1 rank"
run one_aux 1 --set train.batch_size=8 --set moe.aux_loss_coef=0.01 --set moe.aux_loss_scope=global
run ep2_aux 2 --set train.batch_size=4 --set parallel.dp=2 --set parallel.ep=2 --set moe.aux_loss_coef=0.01 \
  --set moe.aux_loss_scope=global
same_losses one_aux ep2_aux "aux loss on, global scope: dp=2 ep=2 vs 1 rank"

run cap_dp 2 --set train.batch_size=4 --set parallel.dp=2 --set moe.capacity_factor=1.0
run cap_ep 2 --set train.batch_size=4 --set parallel.dp=2 --set parallel.ep=2 --set moe.capacity_factor=1.0
awk -F, 'NR > 1 && $10 > 0 { dropped = 1 } END { exit !dropped }' "$work/cap_ep/metrics.csv" || fail "capacity 1.0 dropped nothing"
same_losses cap_dp cap_ep "capacity 1.0: dp=2 ep=2 vs dp=2 ep=1"

run resumed 2 --set train.batch_size=4 --set parallel.dp=2 --set parallel.ep=2 --stop-after 5
run resumed 2 --set train.batch_size=4 --set parallel.dp=2 --set parallel.ep=2
grep -q "^resumed_from:" "$work/resumed/record.yaml" || fail "the second dp=2 ep=2 run did not resume"
diff <(cut -d, -f1-6 "$work/ep2/metrics.csv") <(cut -d, -f1-6 "$work/resumed/metrics.csv") >/dev/null ||
  fail "resumed dp=2 ep=2 losses differ from the uninterrupted run"
"$eval" diff "$work/ep2/checkpoints" "$work/resumed/checkpoints" --tolerance 0 | tee "$work/diff"
grep -q "bitwise identical" "$work/diff" || fail "resumed dp=2 ep=2 parameters are not bitwise identical"
"$eval" verify "$work/resumed/checkpoints" >/dev/null || fail "the two-shard checkpoint does not verify"
echo "expert parallelism: equal to 1 rank (ep=2, ep=4, 4 experts on 4 ranks, global aux), equal to ep=1 under capacity dropping, resume bitwise"
