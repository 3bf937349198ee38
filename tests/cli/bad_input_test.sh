#!/usr/bin/env bash
# Bad input through the real binaries: each case must exit non-zero, print a message naming the
# file and the key (or value) at fault, and leave nothing in the run directory that claims
# success. (The full tables of bad configs and data files are tests/{config,data}/*_test.cpp.)
#   tests/cli/bad_input_test.sh build/moe-train build/moe-eval
set -euo pipefail
train=$(realpath "$1") eval=$(realpath "$2")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_bad_input_test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
failures=0

# expect <name> <expected exit code> <text the message must contain>... -- <command...>
expect() {
  local name=$1 code=$2; shift 2
  local needles=()
  while [[ $1 != -- ]]; do needles+=("$1"); shift; done
  shift
  local rc=0
  "$@" >out 2>err || rc=$?
  local ok=1
  ((rc == code)) || { echo "  exit code $rc, expected $code"; ok=0; }
  for n in "${needles[@]}"; do grep -qF -- "$n" err || { echo "  message lacks '$n'"; ok=0; }; done
  if grep -rlsq "^status: completed" runs 2>/dev/null; then echo "  a record in runs/ claims success"; ok=0; fi
  if ((ok)); then echo "ok: $name"; else echo "FAILED: $name"; sed 's/^/  stderr: /' err; failures=$((failures + 1)); fi
}

printf 'model:\n  n_heads: four\n' >heads.yaml
printf 'model:\n  d_modle: 64\n' >typo.yaml
printf 'train:\n  steps: -5\n' >steps.yaml
printf 'data:\n  source: bin\n  path: %s/nope.bin\n' "$work" >nodata.yaml
printf 'garbage garbage' >bad.bin
printf 'data:\n  source: bin\n  path: %s/bad.bin\n' "$work" >baddata.yaml
printf 'parallel:\n  pp: 2\n' >pp.yaml
: >empty.yaml
printf '# nothing but a comment\n' >comments.yaml
mkdir -p folder.yaml
printf 'some text to train on\n' >corpus.txt

# train.device: cuda where there is no GPU (or no CUDA build): a config error naming the key and the file.
expect "train.device cuda without a GPU" 2 "train.device" "cuda" "tiny.yaml" -- \
  "$train" "$root/configs/tiny.yaml" --set train.device=cuda --set train.steps=1 --run-dir runs/cuda
[[ ! -e runs/cuda ]] || { echo "FAILED: train.device=cuda left runs/cuda behind"; failures=$((failures + 1)); }
expect "train.precision fp16" 2 "train.precision" "fp16" -- \
  "$train" "$root/configs/tiny.yaml" --set train.precision=fp16 --set train.steps=1 --run-dir runs/fp16

expect "wrong type" 2 "model.n_heads" "heads.yaml:2" '"four"' -- "$train" heads.yaml
expect "unknown key" 2 "model.d_modle" "typo.yaml:2" "model.d_model" -- "$train" typo.yaml
expect "out of range" 2 "train.steps" "steps.yaml:2" -- "$train" steps.yaml
expect "missing config file" 2 "absent.yaml" -- "$train" absent.yaml
expect "bad --set value" 2 "model.n_layers" "--set model.n_layers=many" -- "$train" "$root/configs/tiny.yaml" --set model.n_layers=many
expect "missing data file" 1 "data.path" "nope.bin" "no such file" -- "$train" nodata.yaml
expect "data file too short for a header" 1 "data.path" "bad.bin" "truncated header" -- "$train" baddata.yaml
expect "pipeline stages without mpirun" 2 "parallel" "pp.yaml" "mpirun -np 2" -- "$train" pp.yaml
expect "empty config file" 2 "empty.yaml" "is empty" -- "$train" empty.yaml
expect "comments-only config file" 2 "comments.yaml" "is empty" -- "$train" comments.yaml
expect "a folder as the config" 2 "folder.yaml" "is a directory" -- "$train" folder.yaml
expect "synthetic source with a data path" 2 "data.source" "data.path" "corpus.txt" -- "$train" "$root/configs/tiny.yaml" --set data.source=synthetic --set "data.path=$work/corpus.txt"
expect "resume from a missing checkpoint" 1 "nowhere" -- "$train" "$root/configs/tiny.yaml" --resume "$work/nowhere" --set train.steps=1
expect "verify a folder without a manifest" 10 "manifest.yaml" -- "$eval" verify "$work"
expect "eval a run without a record" 1 "record.yaml" -- "$eval" eval --run "$work/norun"
((failures == 0)) || { echo "$failures case(s) failed"; exit 1; }
[[ ! -d runs ]] || ! ls runs/*/record.yaml >/dev/null 2>&1 || { echo "bad input left run records:"; ls runs; exit 1; }
echo "all bad-input cases passed"
