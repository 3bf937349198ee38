# Shared set-up of the multi-rank end-to-end tests (sourced by dp_test.sh and ep_test.sh):
# arguments, a scratch folder removed on exit, the mpirun command line, and the small 10-step
# config whose aux loss is off (it is per rank by design; docs/parallelism.md).
#   source parallel_common.sh "$@"    # build/moe-train build/moe-eval MPIEXEC
set -euo pipefail
train=$1 eval=$2 mpiexec=$3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_parallel_test.XXXXXX)
trap 'rm -rf "$work"' EXIT
mpi=("$mpiexec" --oversubscribe --bind-to none)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
cfg=("$root/configs/tiny.yaml" --set train.steps=10 --set train.eval_every=0 --set train.log_every=1000
     --set moe.aux_loss_coef=0 --set model.n_layers=2)
fail() { echo "FAILED: $*"; exit 1; }
