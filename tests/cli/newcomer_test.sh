#!/usr/bin/env bash
# What a new user meets first, through the real binary:
# - `--set data.path=FILE` without data.source trains on that file (its format read from the
#   file), never silently on the synthetic corpus;
# - progress output: plain lines, no \r or ESC[K, under mpirun even though Open MPI gives the rank
#   a pty (output through a pipe, as a batch log is); `--progress live` still redraws (so the
#   check can fail), and a real terminal (script(1)) gets the live line by default.
#   tests/cli/newcomer_test.sh build/moe-train MPIEXEC
set -euo pipefail
train=$(realpath "$1") mpiexec=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_newcomer_test.XXXXXX)
trap 'rm -rf "$work"' EXIT
mpi=("$mpiexec" --oversubscribe --bind-to none -np 1)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
fail() { echo "FAILED: $*"; exit 1; }
small=(--set train.steps=4 --set train.eval_every=0 --set train.log_every=1 --set model.n_layers=1
       --set train.batch_size=2 --set train.seq_len=32 --set train.eval_batches=1 --set checkpoint.save_final=false)

# A text file given as data.path alone: trained on as bytes (vocab 256).
for i in $(seq 200); do echo "line $i of a small corpus for the newcomer test"; done >"$work/corpus.txt"
"$train" "$root/configs/tiny.yaml" "${small[@]}" --set model.vocab_size=256 --set "data.path=$work/corpus.txt" \
  --run-dir "$work/text" >"$work/log" 2>&1 || { cat "$work/log"; fail "training on data.path alone"; }
grep -q "^    source: text" "$work/text/record.yaml" || fail "record's resolved config does not say source: text"
grep -q "^data: .*corpus.txt" "$work/text/record.yaml" || { grep "^data:" "$work/text/record.yaml"; fail "record's data is not the file"; }
echo "ok: data.path alone trains on the file ($(grep '^data:' "$work/text/record.yaml"))"

has_redraws() { grep -q $'\r\|\x1b\[K' "$1"; }
# Under mpirun into a pipe: plain lines.
"${mpi[@]}" "$train" "$root/configs/tiny.yaml" "${small[@]}" --run-dir "$work/mpi" 2>&1 | cat >"$work/mpi.log"
grep -q "^step 4/4 | loss" "$work/mpi.log" || { cat -A "$work/mpi.log"; fail "no plain progress line under mpirun"; }
if has_redraws "$work/mpi.log"; then cat -A "$work/mpi.log" | head; fail "control sequences in the mpirun log"; fi
echo "ok: under mpirun through a pipe the log has $(grep -c '^step' "$work/mpi.log") plain progress lines and no \\r or ESC[K"
# Asked for, the live line is drawn under mpirun too.
"${mpi[@]}" "$train" "$root/configs/tiny.yaml" "${small[@]}" --progress live --run-dir "$work/live" 2>&1 | cat >"$work/live.log"
has_redraws "$work/live.log" || { cat -A "$work/live.log"; fail "--progress live drew no live line"; }
echo "ok: --progress live redraws under mpirun"
# On a terminal without a launcher, the default is the live line.
script -qec "$train $root/configs/tiny.yaml ${small[*]} --run-dir $work/tty" /dev/null >"$work/tty.log" 2>&1 ||
  { cat "$work/tty.log"; fail "run under script(1)"; }
has_redraws "$work/tty.log" || { cat -A "$work/tty.log"; fail "no live line on a terminal"; }
echo "ok: a terminal gets the live line by default"
echo "all newcomer cases passed"
