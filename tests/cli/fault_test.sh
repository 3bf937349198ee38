#!/usr/bin/env bash
# What comes from disk is not trusted: each case is a defect an audit found (issue 11), run
# through the real binaries. Each case fails on the code before the fix.
#   tests/cli/fault_test.sh build/moe-train build/moe-eval
set -euo pipefail
train=$(realpath "$1") eval=$(realpath "$2")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/moe_fault_test.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
small=(--set model.n_layers=2 --set train.eval_every=0 --set train.log_every=1000 --set train.eval_batches=2
       --set checkpoint.every=5)
T() { "$train" "$root/configs/tiny.yaml" "${small[@]}" "$@"; }
status() { sed -n 's/^status: //p' "$1/record.yaml"; }
final_loss() { sed -nE 's/^  final_train_loss: (.*)$/\1/p' "$1/record.yaml"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

T --set train.steps=20 --run-dir "$work/straight" >"$work/log" 2>&1 || { cat "$work/log"; fail "reference run"; }

# 1. A rerun with a smaller train.steps never relabels a checkpoint (it changes nothing and says
#    so); continuing to the full length then equals the uninterrupted run.
R=$work/relabel
T --set train.steps=20 --stop-after 10 --run-dir "$R" >"$work/log" 2>&1 || { cat "$work/log"; fail "first part"; }
before=$(sha "$R/checkpoints/step-00000005/rank-00000.h5")
rc=0; T --set train.steps=5 --run-dir "$R" >"$work/log" 2>"$work/err" || rc=$?
((rc == 2)) || { cat "$work/log" "$work/err"; fail "train.steps below the checkpoint: exit $rc, expected 2"; }
grep -q "already at step 10" "$work/err" || { cat "$work/err"; fail "the message does not say the checkpoint is past train.steps"; }
[[ $(sha "$R/checkpoints/step-00000005/rank-00000.h5") == "$before" ]] || fail "step-00000005 was rewritten"
[[ $(cat "$R/checkpoints/LATEST") == step-00000010 ]] || fail "LATEST moved to $(cat "$R/checkpoints/LATEST")"
[[ $(status "$R") == interrupted ]] || fail "the record changed to $(status "$R")"
T --set train.steps=20 --run-dir "$R" >"$work/log" 2>&1 || { cat "$work/log"; fail "continuing"; }
[[ $(final_loss "$R") == "$(final_loss "$work/straight")" ]] ||
  fail "continued final loss $(final_loss "$R") != uninterrupted $(final_loss "$work/straight")"
echo "ok 1: train.steps below the checkpoint: exit 2, nothing changed; the run continues bit for bit"

# 2. A checkpoint of a bigger model does not load into a smaller one (every tensor accounted for).
rc=0; T --set train.steps=25 --set model.n_layers=1 --run-dir "$R" >"$work/log" 2>"$work/err" || rc=$?
((rc == 1)) || { cat "$work/err"; fail "4-layer checkpoint into a smaller model: exit $rc"; }
grep -q "model.layers.1.* is in the checkpoint but not in the model" "$work/err" || { cat "$work/err"; fail "no tensor named"; }
echo "ok 2: a bigger model's checkpoint is refused, naming a tensor the model lacks"

# 3. Records end with the truth: every checkpoint corrupt -> failed; a malformed metrics row is
#    dropped with a note and the run completes.
C=$work/corrupt
T --set train.steps=10 --stop-after 10 --run-dir "$C" >/dev/null 2>&1 || true
T --set train.steps=20 --stop-after 15 --run-dir "$C" >/dev/null 2>&1 || true
for f in "$C"/checkpoints/step-*/rank-00000.h5; do printf 'XXXX' | dd of="$f" bs=1 seek=5000 conv=notrunc 2>/dev/null; done
rc=0; T --set train.steps=20 --run-dir "$C" >"$work/log" 2>"$work/err" || rc=$?
((rc == 1)) || fail "all checkpoints corrupt: exit $rc"
[[ $(status "$C") == failed ]] || fail "all checkpoints corrupt: the record says $(status "$C")"
grep -q "^error: .*no checkpoint verifies" "$C/record.yaml" || fail "the record's error does not say why"
M=$work/metrics
T --set train.steps=20 --stop-after 10 --run-dir "$M" >/dev/null 2>&1
echo ',,garbage' >>"$M/metrics.csv"
T --set train.steps=20 --run-dir "$M" >"$work/log" 2>"$work/err" || { cat "$work/err"; fail "a malformed metrics row stops the run"; }
grep -q "metrics.csv:12: dropping a malformed row" "$work/err" || { cat "$work/err"; fail "no note about the dropped row"; }
[[ $(status "$M") == completed ]] || fail "metrics row: record says $(status "$M")"
(($(wc -l <"$M/metrics.csv") == 21)) || fail "metrics.csv has $(wc -l <"$M/metrics.csv") lines, expected 21"
echo "ok 3: corrupt checkpoints -> record failed with the reason; a malformed metrics row is dropped with a note"

# 4. A newest checkpoint whose checksums pass but whose tensors are another model's: resume
#    falls back to the older valid one, saying why (and ends equal to the uninterrupted run).
F=$work/fallback
T --set train.steps=20 --stop-after 10 --run-dir "$F" >/dev/null 2>&1
T --set train.steps=20 --set model.n_layers=1 --stop-after 10 --run-dir "$work/other" >/dev/null 2>&1
step10=$F/checkpoints/step-00000010
cp "$work/other/checkpoints/step-00000010/rank-00000.h5" "$step10/rank-00000.h5"
sed -i -E "s/^    bytes: .*/    bytes: $(stat -c %s "$step10/rank-00000.h5")/; s/^    sha256: .*/    sha256: $(sha "$step10/rank-00000.h5")/" \
  "$step10/manifest.yaml"
"$eval" verify "$step10" >/dev/null 2>&1 && fail "verify accepts another model's shard"
T --set train.steps=20 --run-dir "$F" >"$work/log" 2>"$work/err" || { cat "$work/err"; fail "no fallback"; }
grep -q "skipping checkpoint .*step-00000010: .*missing" "$work/err" || { cat "$work/err"; fail "fallback without saying why"; }
grep -q "resumed from .*step-00000005" "$work/log" || fail "did not resume from step 5"
[[ $(final_loss "$F") == "$(final_loss "$work/straight")" ]] || fail "after the fallback the run differs"
echo "ok 4: a checkpoint that checksums fine but holds the wrong tensors is skipped, saying why"

# 6. LATEST is a hint naming a sibling step folder; anything else is ignored with a message.
L=$work/latest
T --set train.steps=20 --stop-after 10 --run-dir "$L" >/dev/null 2>&1
mkdir -p "$work/foreign/checkpoints/step-00000020"
echo ../../foreign/checkpoints/step-00000020 >"$L/checkpoints/LATEST"
T --set train.steps=20 --stop-after 12 --run-dir "$L" >"$work/log" 2>"$work/err"
grep -q "is not a step folder's name; ignored" "$work/err" || { cat "$work/err"; fail "a foreign LATEST not reported"; }
grep -q "resumed from .*step-00000010" "$work/log" || fail "did not resume from its own step 10"
echo step-00000005 >"$L/checkpoints/LATEST"
T --set train.steps=20 --stop-after 14 --run-dir "$L" >"$work/log" 2>"$work/err"
grep -q "names step-00000005, but step-00000012 is the newest" "$work/err" || { cat "$work/err"; fail "an older LATEST not reported"; }
grep -q "resumed from .*step-00000012" "$work/log" || fail "followed an older LATEST"
rm -f "$L/checkpoints/LATEST"; mkdir "$L/checkpoints/LATEST"
T --set train.steps=20 --run-dir "$L" >"$work/log" 2>"$work/err" || { cat "$work/err"; fail "a LATEST folder breaks the run"; }
[[ -f $L/checkpoints/LATEST && $(cat "$L/checkpoints/LATEST") == step-00000020 ]] || fail "LATEST not replaced by the final save"
[[ $(final_loss "$L") == "$(final_loss "$work/straight")" ]] || fail "LATEST games changed the losses"
echo "ok 6: a foreign, an older and a folder LATEST are reported and never followed"

# 8. A data path that is not a regular file is refused at once.
rc=0; timeout 20 "$train" "$root/configs/tiny.yaml" --set data.source=bin --set data.path=/dev/zero \
  --run-dir "$work/zero" >"$work/log" 2>"$work/err" || rc=$?
((rc == 1)) || fail "data.path=/dev/zero: exit $rc (124 = still reading after 20 s)"
grep -q "/dev/zero: is not a regular file" "$work/err" || { cat "$work/err"; fail "/dev/zero not named"; }
echo "ok 8: data.path=/dev/zero refused at once"

# 10. verify's exit codes: a shard that is a folder is a missing shard (12); an empty LATEST
#     still verifies the checkpoint a resume takes (0).
V=$work/verify
T --set train.steps=10 --run-dir "$V" >/dev/null 2>&1
: >"$V/checkpoints/LATEST"
"$eval" verify "$V/checkpoints" >"$work/log" 2>"$work/err" || { cat "$work/err"; fail "empty LATEST: verify exit $?"; }
rm "$V/checkpoints/step-00000010/rank-00000.h5"; mkdir "$V/checkpoints/step-00000010/rank-00000.h5"
rc=0; "$eval" verify "$V/checkpoints/step-00000010" >/dev/null 2>"$work/err" || rc=$?
((rc == 12)) || { cat "$work/err"; fail "a shard that is a folder: exit $rc, expected 12"; }
echo "ok 10: verify exits 0 with an empty LATEST and 12 for a shard that is a folder"
echo "all fault cases passed"
