# Shared set-up of the multi-rank end-to-end tests (sourced by dp_test.sh, ep_test.sh and
# pp_test.sh): arguments, a scratch folder removed on exit, the mpirun command line, the small
# 10-step config whose aux loss is off (it is per rank by design; docs/parallelism.md), and the
# run / compare helpers.
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
# A run of the config with extra arguments on 1 rank or under mpirun, into $work/<dir>.
run() {   # run <dir> <ranks> <args...>
  local dir=$1 ranks=$2; shift 2
  if ((ranks == 1)); then "$train" "${cfg[@]}" "$@" --run-dir "$work/$dir" >"$work/log" 2>&1 || { cat "$work/log"; fail "$dir"; }
  else "${mpi[@]}" -np "$ranks" "$train" "${cfg[@]}" "$@" --run-dir "$work/$dir" >"$work/log" 2>&1 || { cat "$work/log"; fail "$dir"; }; fi
}
# Column <c> of metrics.csv is equal in runs a and b on all 10 steps (1e-5 relative).
same_column() {   # same_column <a> <b> <column> <label>
  paste -d, <(cut -d, -f1,"$3" "$work/$1/metrics.csv") <(cut -d, -f"$3" "$work/$2/metrics.csv") | awk -F, -v label="$4" '
    NR == 1 { name = $2 }
    NR > 1 { rel = ($2 - $3) / $2; if (rel < 0) rel = -rel; if (rel > worst) worst = rel; n++ }
    END { printf "%s: %d steps, largest relative %s difference %.2e\n", label, n, name, worst; exit !(n == 10 && worst <= 1e-5) }' ||
    fail "$4: column $3 differs"
}
# Runs a and b have equal per-step losses (1e-5 relative, 10 steps) and final parameters
# (||a-b||/||a|| <= 1e-5, or the tolerance given).
same_losses() {   # same_losses <a> <b> <label> [parameter tolerance]
  same_column "$1" "$2" 2 "$3"
  "$eval" diff "$work/$1/checkpoints" "$work/$2/checkpoints" --tolerance "${4:-1e-5}" || fail "$3: parameters differ"
}

