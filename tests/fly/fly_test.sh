#!/usr/bin/env bash
# shellcheck disable=SC2086 # lists of Machine indices ("1 2 3") are split on purpose
# fly/entrypoint.sh, unchanged, on a simulated Fly.io app (tests/fly/fly_sim.sh: Machines as
# network + UTS + PID + mount namespaces on a bridge, each with its own volume at /data, dnsmasq as
# Fly's resolver at fdaa::3, sshd per Machine, mpirun from the leader over ssh on eth0):
# - two:     2 Machines x 1 rank (dp=2) train; losses equal `mpirun -np 2` to 1e-5 (relative),
#            and every volume's final checkpoint equals its parameters (moe-eval diff);
# - three:   3 Machines (dp=3) likewise against `mpirun -np 3`; it is the uninterrupted run the
#            next cases are compared with, bit for bit;
# - stop:    the kill signal to one (non-leader) Machine mid-run: every Machine exits 3 and every
#            volume holds the same newest step; started again, the Machines resume from their own
#            volumes and finish bitwise equal to `three` (losses, moe-eval diff --tolerance 0);
# - kill:    kill -9 of one Machine (everything in it): the others exit within 10 s (measured); a
#            newer step planted on one volume only is skipped at the restart, which resumes from
#            the newest step every volume holds and finishes bitwise equal to `three`;
# - empty:   one Machine's volume emptied before a restart: it gets its shard from a replica and
#            the run finishes bitwise equal to `three`;
# - noreplica: pp=3 dp=1 over 3 Machines with one volume emptied: the job refuses, naming that
#            Machine (host) and the step;
# - dns:     the resolver lists 2 of 3 Machines: every entrypoint waits MOE_PEER_TIMEOUT, then
#            fails naming the Machines it found;
# - nothing (namespace, process, mount, /etc/netns entry) is left behind.
# Every case runs even when one before it failed; the test fails if any did.
# Exits 77 (skipped) when not root or when namespaces cannot be made.
#   tests/fly/fly_test.sh build/moe-train build/moe-eval [MPIEXEC]
# FLY_TEST_CASES="two stop" runs only those cases (and what they compare with).
set -euo pipefail
train=$(realpath "$1") eval=$(realpath "$2") mpiexec=${3:-mpirun}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "SKIPPED: the simulated Fly needs root (namespaces)"; exit 77; }
# shellcheck disable=SC2015
ip netns add "moe-probe-$$" 2>/dev/null && ip netns del "moe-probe-$$" &&
  unshare --uts --mount --pid --fork --mount-proc true 2>/dev/null ||
  { echo "SKIPPED: cannot make network/UTS/PID/mount namespaces here"; exit 77; }
for tool in dnsmasq dig ssh ssh-keygen /usr/sbin/sshd unshare pgrep; do
  command -v "$tool" >/dev/null ||
    { echo "FAILED: $tool is missing (scripts/setup.sh installs dnsmasq-base, bind9-dnsutils, openssh-server)"; exit 1; }
done
unset FLY_APP_NAME FLY_MACHINE_ID
work=$(mktemp -d /tmp/moe_fly_test.XXXXXX)
source "$root/tests/fly/fly_sim.sh"
trap 'sim_down; rm -rf "$work"' EXIT
export SIM_ENTRYPOINT=$root/fly/entrypoint.sh
cases=${FLY_TEST_CASES:-two three stop kill empty noreplica dns}
want() { [[ " $cases " == *" $1 "* ]]; }

small=(--set model.n_layers=2 --set train.batch_size=4 --set train.eval_every=0 --set train.threads=1
       --set train.log_every=1000)
steps=30
dp3=("${small[@]}" --set parallel.dp=3 --set "train.steps=$steps" --set checkpoint.every=5)
# What every Machine gets besides Fly's variables. PMIx's shared-memory store and hwloc's shared
# topology must stay off when all "hosts" are one machine (tests/net/shaped_net.sh).
menv=(MOE_ROOT="$root" MOE_TRAIN="$train" MOE_CONFIG="$root/configs/tiny.yaml" MOE_PEER_TIMEOUT=30
      MOE_STORAGE="${FLY_TEST_STORAGE-per_host}" PMIX_MCA_gds=hash MOE_SSHD_SETENV=PMIX_MCA_gds=hash
      "MOE_MPIRUN_ARGS=-x PMIX_MCA_gds --mca rtc_hwloc_vmhole none")

boot_log() { awk '/^=== boot/ {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$(sim_log "$1")"; }
fail() {
  echo "FAILED: $*"
  local i
  for ((i = 1; i <= sim_n; i++)); do echo "--- Machine $i (${sim_ids[i]}), last boot:"; boot_log "$i" | tail -25; done
  exit 1
}
# The leader of Machines $@ (indices): the lowest id.
leader_of() {
  local i best=
  for i in "$@"; do [[ -z $best || ${sim_ids[i]} < ${sim_ids[best]} ]] && best=$i; done
  echo "$best"
}
# fly_boot <run id> "<indices>" <moe-train args...>: boots those Machines as one app.
fly_boot() {
  local id=$1 ms=$2 i; shift 2
  for i in $ms; do
    sim_start "$i" "${menv[@]}" MOE_MACHINES="$(wc -w <<<"$ms")" MOE_RUN_ID="$id" "MOE_TRAIN_ARGS=$*"
  done
}
fly_wait() {  # fly_wait "<indices>" [seconds]
  local i
  for i in $1; do sim_wait "$i" "${2:-300}" || fail "Machine $i (${sim_ids[i]}) still running after ${2:-300} s"; done
}
# fly_job <run id> "<indices>" <args...>: boots, waits; again (at most twice, saying so) when Open
# MPI's daemons did not start (not what this test tests; see tests/net/net_test.sh).
fly_job() {
  local id=$1 ms=$2 try leader
  leader=$(leader_of $ms)
  for try in 1 2 3; do
    fly_boot "$@"
    fly_wait "$ms"
    boot_log "$leader" | grep -q "ORTE was unable to reliably start" || return 0
    echo "note: Open MPI's daemons did not start (try $try); again"
  done
}
rcs() { local i out=(); for i in $1; do out+=("${sim_rc[i]}"); done; echo "${out[*]}"; }
expect_rcs() {  # expect_rcs "<indices>" <code> <what>
  local i
  for i in $1; do [[ ${sim_rc[i]} == "$2" ]] || fail "$3: Machine $i (${sim_ids[i]}) exited ${sim_rc[i]}, expected $2 (all: $(rcs "$1"))"; done
}
rows() { [[ -f $1 ]] && echo $(($(wc -l <"$1") - 1)) || echo 0; }
wait_rows() {  # wait_rows <metrics.csv> <n> <leader>: at most 120 s, while the leader runs
  for _ in $(seq 1200); do
    (($(rows "$1") >= $2)) && return 0
    sim_running "$3" || { sim_wait "$3" 1 || true; fail "the job ended (leader exit ${sim_rc[$3]}) before step $2"; }
    sleep 0.1
  done
  fail "$1 never reached $2 steps"
}
# same_losses <a/metrics.csv> <b/metrics.csv> <relative tolerance, 0 = identical text>
same_losses() {
  [[ -f $1 && -f $2 ]] || fail "no metrics.csv ($1, $2)"
  if [[ $3 == 0 ]]; then diff <(cut -d, -f1,2 "$1") <(cut -d, -f1,2 "$2") >/dev/null; return; fi
  awk -F, -v tol="$3" 'NR == FNR {a[$1] = $2; n++; next}
    FNR > 1 {m++; d = $2 - a[$1]; if (d < 0) d = -d; s = a[$1] < 0 ? -a[$1] : a[$1]; if (!($1 in a) || d > tol * s) bad++}
    END {exit (bad || n != m + 1)}' "$1" "$2"
}
ckpt() { echo "$(sim_data "$1")/checkpoints/$2"; }   # Machine i's checkpoint root of run $2
run_dir() { echo "$(sim_data "$1")/runs/$2"; }        # the run dir (on the leader's volume)
latest() { cat "$(ckpt "$1" "$2")/LATEST" 2>/dev/null || echo none; }
ms3="1 2 3"

passed=() failed=()
# run_case <name> "<Machines the resolver lists>" <function>: the function in a subshell; a
# failure stops its Machines.
run_case() {
  local t0=$SECONDS
  want "$1" || return 0
  echo "=== $1"
  # shellcheck disable=SC2086 # a list of indices
  sim_dns $2
  if (trap 'for ((k = 1; k <= sim_n; k++)); do sim_running $k && sim_hard_kill $k; done; true' EXIT; "$3"); then
    passed+=("$1 ($((SECONDS - t0)) s)")
  else
    failed+=("$1 ($((SECONDS - t0)) s)")
  fi
}

mpi=("$mpiexec" --oversubscribe --bind-to none)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
local_ref() {  # local_ref <dir> <ranks> <args...>
  local dir=$1 np=$2; shift 2
  [[ -f $work/$dir/metrics.csv ]] && return 0
  "${mpi[@]}" -np "$np" "$train" "$root/configs/tiny.yaml" "$@" --run-dir "$work/$dir" >"$work/$dir.log" 2>&1 ||
    { cat "$work/$dir.log"; fail "local reference run $dir"; }
}

sim_up 3
L3=$(leader_of $ms3)
F3=$((L3 == 1 ? 3 : 1))   # a follower; the other follower:
G3=$((6 - L3 - F3))
echo "simulated app $sim_app: Machines ${sim_ids[*]} at ${sim_addr[*]}; resolver fdaa::3; leader of 3 is Machine $L3"

# volumes_equal <reference checkpoints> <run id> <Machines> <tolerance> <what> <reference name>: each
# Machine's final checkpoint of the run equals the reference within the tolerance (moe-eval diff).
volumes_equal() {
  local i
  for i in $3; do
    "$eval" diff "$1" "$(ckpt "$i" "$2")" --tolerance "$4" >"$work/diff.log" 2>&1 ||
      { cat "$work/diff.log"; fail "$5: Machine $i's final checkpoint differs from $6"; }
  done
}

case_two() {
  local ms="1 2" L
  L=$(leader_of $ms)
  local_ref ref2 2 "${small[@]}" --set parallel.dp=2 --set train.steps=20
  fly_job two "$ms" "${small[@]}" --set parallel.dp=2 --set train.steps=20
  expect_rcs "$ms" 0 "2 Machines dp=2"
  same_losses "$work/ref2/metrics.csv" "$(run_dir "$L" two)/metrics.csv" 1e-5 || fail "2 Machines: losses differ from mpirun -np 2"
  volumes_equal "$work/ref2/checkpoints" two "$ms" 1e-5 "2 Machines" "mpirun -np 2's"
  echo "ok: 2 Machines x 1 rank (dp=2): exit 0 on both; 20 losses equal mpirun -np 2 (1e-5); both volumes hold the final parameters"
}

case_three() {
  local i
  local_ref ref3 3 "${dp3[@]}"
  fly_job three "$ms3" "${dp3[@]}"
  expect_rcs "$ms3" 0 "3 Machines dp=3"
  same_losses "$work/ref3/metrics.csv" "$(run_dir "$L3" three)/metrics.csv" 1e-5 || fail "3 Machines: losses differ from mpirun -np 3"
  for i in $ms3; do
    [[ $(latest "$i" three) == "$(printf 'step-%08d' $steps)" ]] || fail "Machine $i's volume: LATEST is $(latest "$i" three)"
  done
  volumes_equal "$work/ref3/checkpoints" three "$ms3" 1e-5 "3 Machines" "mpirun -np 3's"
  echo "ok: 3 Machines (dp=3): exit 0 on all; $steps losses equal mpirun -np 3 (1e-5); every volume holds step $steps and equals it"
}

# restart_resumes <case> <step> <label>: the 3 Machines started again exit 0, the leader's record
# says they resumed from <step>, and the run ends bitwise equal to the uninterrupted one (case three).
restart_resumes() {
  local record
  fly_job "$1" "$ms3" "${dp3[@]}"
  expect_rcs "$ms3" 0 "$3"
  record=$(run_dir "$L3" "$1")/record.yaml
  grep -q "^resumed_from:.*$(printf 'step-%08d' "$2")" "$record" ||
    fail "$3: did not resume from step $2: $(grep '^resumed_from' "$record")"
  bitwise_three "$1" "$3"
}

# bitwise_three <run id> <what>: the finished run equals `three` bit for bit.
bitwise_three() {
  [[ -f $(run_dir "$L3" three)/metrics.csv ]] || fail "$2: no uninterrupted run to compare with (case three)"
  grep -q "^status: completed" "$(run_dir "$L3" "$1")/record.yaml" || fail "$2: the record is not completed"
  same_losses "$(run_dir "$L3" three)/metrics.csv" "$(run_dir "$L3" "$1")/metrics.csv" 0 ||
    fail "$2: losses differ from the uninterrupted run"
  volumes_equal "$(ckpt "$L3" three)" "$1" "$ms3" 0 "$2" "the uninterrupted run's"
}

case_stop() {
  local i step t0
  fly_boot stop "$ms3" "${dp3[@]}"
  wait_rows "$(run_dir "$L3" stop)/metrics.csv" 8 "$L3"
  sim_signal "$F3" USR1
  t0=$SECONDS
  fly_wait "$ms3" 120
  expect_rcs "$ms3" 3 "kill signal to Machine $F3"
  step=$(rows "$(run_dir "$L3" stop)/metrics.csv")
  for i in $ms3; do
    [[ $(latest "$i" stop) == "$(printf 'step-%08d' "$step")" ]] ||
      fail "after the stop Machine $i's volume has LATEST $(latest "$i" stop), expected step $step (the step in progress)"
  done
  echo "ok: kill signal (SIGUSR1) to Machine $F3 only: every Machine exited 3 within $((SECONDS - t0)) s; every volume saved step $step"
  restart_resumes stop "$step" "restart after the stop"
  echo "ok: started again, the Machines resumed from step $step on their own volumes and finished bitwise equal to the uninterrupted run"
}

case_kill() {
  local i t0 took step plant pdir
  fly_boot kill "$ms3" "${dp3[@]}"
  wait_rows "$(run_dir "$L3" kill)/metrics.csv" 17 "$L3"
  sim_hard_kill "$G3"
  t0=$(date +%s%N)
  for i in $ms3; do ((i == G3)) || sim_wait "$i" 30 || fail "Machine $i still running 30 s after Machine $G3 was killed"; done
  took=$((($(date +%s%N) - t0) / 1000000))   # ms
  sim_wait "$G3" 5 || true
  for i in $ms3; do ((i == G3)) || ((sim_rc[i] != 0)) || fail "Machine $i exited 0 after Machine $G3 was killed"; done
  ((took <= 10000)) || fail "the others took $took ms to exit after Machine $G3 was killed"
  echo "ok: kill -9 of Machine $G3: the others exited ($(rcs "$ms3")) within $took ms"
  # The newest step on every volume; then a newer one planted on the leader's volume only.
  step=$steps
  for i in $ms3; do
    s=$(latest "$i" kill)
    [[ $s == step-* ]] || fail "no checkpoint on Machine $i's volume after the kill"
    s=$((10#${s#step-}))
    ((s >= step)) || step=$s
  done
  plant=$((step + 5 <= steps ? step + 5 : steps))
  pdir=$(ckpt "$L3" kill)/$(printf 'step-%08d' "$plant")
  rm -rf "$pdir"
  cp -a "$(ckpt "$L3" kill)/$(printf 'step-%08d' "$step")" "$pdir"
  sed -i "s/^step: .*/step: $plant/" "$pdir/manifest.yaml"
  printf 'step-%08d\n' "$plant" >"$(ckpt "$L3" kill)/LATEST"
  restart_resumes kill "$step" "restart after kill -9 (step $plant planted on Machine $L3 only)"
  echo "ok: restart skipped step $plant (on Machine $L3's volume only), resumed from step $step, finished bitwise equal"
}

case_empty() {
  local i
  fly_job empty "$ms3" "${dp3[@]}" --stop-after 10
  expect_rcs "$ms3" 0 "--stop-after 10"
  for i in $ms3; do [[ $(latest "$i" empty) == step-00000010 ]] || fail "Machine $i's volume: LATEST $(latest "$i" empty), expected step 10"; done
  find "$(sim_data "$F3")" -mindepth 1 -delete
  restart_resumes empty 10 "restart with Machine $F3's volume empty"
  echo "ok: Machine $F3's volume emptied at step 10: it got its shard from a replica; finished bitwise equal"
}

case_noreplica() {
  local pp3=(--set model.n_layers=3 --set train.batch_size=4 --set train.micro_batches=2 --set train.eval_every=0
             --set train.threads=1 --set train.log_every=1000 --set parallel.pp=3 --set train.steps=10)
  fly_job noreplica "$ms3" "${pp3[@]}" --stop-after 4
  expect_rcs "$ms3" 0 "pp=3 --stop-after 4"
  find "$(sim_data "$F3")" -mindepth 1 -delete
  fly_job noreplica "$ms3" "${pp3[@]}"
  [[ ${sim_rc[L3]} != 0 ]] || fail "pp=3 with Machine $F3's volume empty and no replica: the job did not refuse"
  local msg
  msg=$(boot_log "$L3" | grep -v '^\[entrypoint' | grep "${sim_ids[F3]}" | grep -m1 -iE 'step[- :]*0*4\b') ||
    fail "the refusal does not name host ${sim_ids[F3]} and step 4"
  echo "ok: pp=3, Machine $F3's volume empty, no replica: refused (exit $(rcs "$ms3")): $msg"
}

case_dns() {
  local i t0 took line
  t0=$SECONDS
  for i in $ms3; do sim_start "$i" "${menv[@]}" MOE_MACHINES=3 MOE_PEER_TIMEOUT=4 MOE_RUN_ID=dns "MOE_TRAIN_ARGS=${small[*]}"; done
  fly_wait "$ms3" 60
  took=$((SECONDS - t0))
  expect_rcs "$ms3" 1 "2 of 3 Machines in DNS"
  ((took >= 4 && took <= 20)) || fail "the entrypoints gave up after $took s (MOE_PEER_TIMEOUT=4)"
  for i in 1 2; do
    line=$(boot_log "$i" | grep "expected 3 Machine(s) after 4s") || fail "Machine $i does not say what it expected"
    [[ $line == *"found 2"* && $line == *"${sim_ids[1]}"* && $line == *"${sim_ids[2]}"* && $line != *"${sim_ids[3]}"* ]] ||
      fail "Machine $i's message does not name the 2 Machines it found: $line"
  done
  boot_log 3 | grep -q "this Machine (${sim_ids[3]}) is not listed" || fail "Machine 3 does not say it is not listed"
  echo "ok: resolver lists 2 of 3: all 3 entrypoints failed after $took s (MOE_PEER_TIMEOUT=4), exit 1: $line"
}

run_case two "1 2" case_two
run_case three "$ms3" case_three
run_case stop "$ms3" case_stop
run_case kill "$ms3" case_kill
run_case empty "$ms3" case_empty
run_case noreplica "$ms3" case_noreplica
run_case dns "1 2" case_dns

prefix=$sim_prefix simdir=$sim_dir
sim_down
left=$(ip netns list | grep -c "^$prefix" || true)
[[ $left == 0 ]] || failed+=("cleanup: $left namespaces left behind")
! ls -d /etc/netns/"$prefix"* >/dev/null 2>&1 || failed+=("cleanup: /etc/netns entries left behind")
! pgrep -f "$simdir|/run/moe/sshd/sshd_config" >/dev/null || failed+=("cleanup: processes left behind")
echo "passed: ${passed[*]:-none}"
((${#failed[@]} == 0)) || { echo "FAILED: ${failed[*]}"; exit 1; }
echo "simulated Fly: all cases passed, nothing left behind"
