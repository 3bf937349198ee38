#!/usr/bin/env bash
# SVD swarm-consensus compression through moe-train under mpirun, against the uncompressed run:
# - at full rank (every matrix's rank = min(n, m)) the losses equal the plain all-reduce's (1e-5
#   relative) and the final parameters to 5e-5 (the reconstruction P P^T M goes through a QR of a
#   256 x 128 matrix, and AdamW divides a rarely routed expert's tiny gradients by their tiny
#   second moments), under dp=2, dp=2 ep=2, and pp=2 dp=2 with 2 micro-batches;
# - at low rank it trains, sends less (record: comm_bytes_over_plain), logs energy and rank;
# - a compressed run stopped and resumed is bitwise the run that never stopped (error buffers,
#   Q factors and ranks are in every rank's shard).
#   tests/cli/compress_test.sh build/moe-train build/moe-eval MPIEXEC
source "$(dirname "${BASH_SOURCE[0]}")/parallel_common.sh" "$@"

full=(--set compress.enabled=true --set compress.rank=256 --set compress.min_rank=256 --set compress.max_rank=256
      --set compress.min_ratio=0.01 --set compress.refresh_every=0)
run plain_dp2 2 --set parallel.dp=2 --set train.batch_size=4
run full_dp2 2 --set parallel.dp=2 --set train.batch_size=4 "${full[@]}"
same_losses plain_dp2 full_dp2 "dp=2, full-rank compression vs plain" 5e-5
grep -q "^  comm_bytes_over_plain:" "$work/full_dp2/record.yaml" || fail "record has no comm_bytes_over_plain"

run plain_ep2 2 --set parallel.dp=2 --set parallel.ep=2 --set train.batch_size=4
run full_ep2 2 --set parallel.dp=2 --set parallel.ep=2 --set train.batch_size=4 "${full[@]}"
same_losses plain_ep2 full_ep2 "dp=2 ep=2, full-rank compression vs plain" 5e-5

pp=(--set parallel.pp=2 --set parallel.dp=2 --set train.batch_size=4 --set train.micro_batches=2)
run plain_pp2 4 "${pp[@]}"
run full_pp2 4 "${pp[@]}" "${full[@]}"
same_losses plain_pp2 full_pp2 "pp=2 dp=2, 2 micro-batches, full-rank compression vs plain" 5e-5

# Low rank: less sent, still learning, rank and energy logged.
low=(--set compress.enabled=true --set compress.rank=2 --set compress.max_rank=8 --set compress.refresh_every=4)
run low_dp2 2 --set parallel.dp=2 --set train.batch_size=4 "${low[@]}"
ratio=$(sed -nE 's/^  comm_bytes_over_plain: (.*)$/\1/p' "$work/low_dp2/record.yaml")
awk -v r="$ratio" 'BEGIN { exit !(r > 0 && r < 0.5) }' || fail "low rank sends $ratio of the plain bytes"
awk -F, 'NR == 2 { first = $2 } END { exit !($2 < first) }' "$work/low_dp2/metrics.csv" || fail "low rank: loss did not fall"
col() { head -1 "$work/$1/metrics.csv" | tr , '\n' | grep -nx "$2" | cut -d: -f1; }
e=$(col low_dp2 compress_energy) k=$(col low_dp2 compress_rank)
awk -F, -v e="$e" -v k="$k" 'NR > 1 && $e != "" { n++; if ($e <= 0 || $e > 1 || $k < 1) bad++ } END { exit !(n >= 5 && !bad) }' \
  "$work/low_dp2/metrics.csv" || fail "compress_energy / compress_rank missing or out of range"
echo "low rank: sends $ratio of the plain all-reduce's bytes; loss falls; energy and rank logged"

# Bitwise resume of a compressed run (the refresh at step 4 and 8 falls on both sides of the stop).
run straight 2 --set parallel.dp=2 --set train.batch_size=4 "${low[@]}"
run resumed 2 --set parallel.dp=2 --set train.batch_size=4 "${low[@]}" --stop-after 6
ls "$work/resumed/checkpoints/step-00000006/"rank-0000{0,1}.h5 >/dev/null || fail "not every rank saved its shard"
run resumed 2 --set parallel.dp=2 --set train.batch_size=4 "${low[@]}"
diff <(cut -d, -f1-6 "$work/straight/metrics.csv") <(cut -d, -f1-6 "$work/resumed/metrics.csv") >/dev/null ||
  fail "resumed compressed run's losses differ"
"$eval" diff "$work/straight/checkpoints" "$work/resumed/checkpoints" --tolerance 0 || fail "resumed compressed run's parameters differ"
echo "compressed run stopped at 6 and resumed: bitwise equal to the uninterrupted run"

# After 20 compressed steps every replica holds bitwise the same parameters (each rank saved its
# own shard): dp=2, dp=4 ep=2, and pp=2 dp=2.
py=/usr/bin/python3
low20=("${low[@]}" --set train.steps=20 --set checkpoint.every=20)
run same_dp2 2 --set parallel.dp=2 --set train.batch_size=4 "${low20[@]}"
"$py" "$root/tests/python/replicas_identical.py" "$work/same_dp2/checkpoints/step-00000020" 1 || fail "dp=2 replicas differ"
run same_ep2 4 --set parallel.dp=4 --set parallel.ep=2 --set train.batch_size=2 "${low20[@]}"
"$py" "$root/tests/python/replicas_identical.py" "$work/same_ep2/checkpoints/step-00000020" 1 || fail "dp=4 ep=2 replicas differ"
run same_pp2 4 "${pp[@]}" "${low20[@]}"
"$py" "$root/tests/python/replicas_identical.py" "$work/same_pp2/checkpoints/step-00000020" 2 || fail "pp=2 dp=2 replicas differ"
echo "after 20 compressed steps the replicas are bitwise identical (dp=2, dp=4 ep=2, pp=2 dp=2)"
