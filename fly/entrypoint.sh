#!/usr/bin/env bash
# The main process of every moe-train Machine on Fly.io (fly/fly.toml, fly/README.md).
#
# 1. Sets up ssh from the MOE_SSH_KEY secret (the same key pair on every Machine: its private key
#    in $MOE_SSH_DIR, its public key in authorized_keys) and starts sshd on the private network.
# 2. Finds the app's Machines in `vms.<app>.internal` (TXT) and their 6PN addresses in
#    `<id>.vm.<app>.internal` (AAAA), and waits until MOE_MACHINES of them answer on the ssh port,
#    at most MOE_PEER_TIMEOUT seconds (then it names the Machines it did find and exits 1).
# 3. The leader (lowest Machine id) writes a hostfile of DNS names and runs mpirun over ssh:
#    moe-train with per-host checkpoints (every Machine keeps its own shards and manifest on its
#    own volume, /data/checkpoints/<run id>) and a stable run id, so starting the Machines again
#    resumes. When the job ends it tells every other Machine the exit code over ssh.
#    The others keep sshd up until they learn that code (or see the leader gone) and exit with it.
# 4. The kill signal (fly.toml kill_signal, also SIGTERM/SIGINT): the leader sends SIGUSR1 to
#    mpirun (which forwards it to every rank), the others send SIGUSR1 to their local ranks; the
#    ranks agree to stop after the same step, save and exit 3, and so does this script.
#    (Never SIGTERM to mpirun: it SIGKILLs the ranks about a second later.)
#
# Every path and tool is an environment variable, so tests/fly/ runs this file unchanged:
#   FLY_APP_NAME, FLY_MACHINE_ID      set by Fly (required); FLY_REGION, FLY_PRIVATE_IP optional
#   MOE_MACHINES        Machines in the job (default 1)           MOE_SLOTS   ranks per Machine (1)
#   MOE_PEER_TIMEOUT    seconds to wait for the peers (300)
#   MOE_ROOT            the repository (/app); MOE_TRAIN ($MOE_ROOT/build/moe-train)
#   MOE_CONFIG          ($MOE_ROOT/configs/tiny.yaml); MOE_TRAIN_ARGS extra moe-train arguments
#                       (split on blanks, e.g. "--set parallel.dp=2 --set train.steps=2000")
#   MOE_RUN_ID          stable run id ($FLY_APP_NAME); MOE_RUN_DIR (/data/runs/$MOE_RUN_ID)
#   MOE_STORAGE         checkpoint.storage (per_host; empty: moe-train's default)
#   MOE_SSH_KEY         the private key (PEM/OpenSSH text, or that text base64-encoded)
#   MOE_SSH_DIR ($HOME/.ssh), MOE_SSH_PORT (22), MOE_SSHD (/usr/sbin/sshd),
#   MOE_SSHD_DIR (/run/moe/sshd: host keys, sshd_config, pid file), MOE_STATE_DIR (/run/moe)
#   MOE_SSHD_SETENV     VAR=value ... that sshd sets for what mpirun starts over ssh
#   MOE_DIG (dig), MOE_DNS_SERVER (fdaa::3), MOE_IFACE (eth0)
#   MOE_MPIRUN (mpirun), MOE_MPIRUN_ARGS extra mpirun arguments (split on blanks)
# Exit codes: the job's (mpirun's: 0 done, 3 stopped with a checkpoint, other = failure), 1 when
# the peers never all showed up or the leader vanished, 2 for a bad environment.
set -euo pipefail

app=${FLY_APP_NAME:?FLY_APP_NAME is not set (not on a Fly Machine?)}
me=${FLY_MACHINE_ID:?FLY_MACHINE_ID is not set (not on a Fly Machine?)}
machines=${MOE_MACHINES:-1}
slots=${MOE_SLOTS:-1}
peer_timeout=${MOE_PEER_TIMEOUT:-300}
moe_root=${MOE_ROOT:-/app}
train=${MOE_TRAIN:-$moe_root/build/moe-train}
config=${MOE_CONFIG:-$moe_root/configs/tiny.yaml}
run_id=${MOE_RUN_ID:-$app}
run_dir=${MOE_RUN_DIR:-/data/runs/$run_id}
storage=${MOE_STORAGE-per_host}
ssh_dir=${MOE_SSH_DIR:-${HOME:-/root}/.ssh}
ssh_port=${MOE_SSH_PORT:-22}
sshd=${MOE_SSHD:-/usr/sbin/sshd}
state_dir=${MOE_STATE_DIR:-/run/moe}
sshd_dir=${MOE_SSHD_DIR:-$state_dir/sshd}
dig=${MOE_DIG:-dig}
dns_server=${MOE_DNS_SERVER:-fdaa::3}
iface=${MOE_IFACE:-eth0}
mpirun=${MOE_MPIRUN:-mpirun}
internal=$app.internal

log() { echo "[entrypoint $me $(date +%T.%3N)] $*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }

[[ $machines =~ ^[1-9][0-9]*$ ]] || die "MOE_MACHINES must be a positive integer, not '$machines'" 2
[[ $slots =~ ^[1-9][0-9]*$ ]] || die "MOE_SLOTS must be a positive integer, not '$slots'" 2
[[ $peer_timeout =~ ^[0-9]+$ ]] || die "MOE_PEER_TIMEOUT must be seconds, not '$peer_timeout'" 2
[[ -x $train ]] || die "no moe-train at $train (MOE_TRAIN)" 2
[[ -f $config ]] || die "no config at $config (MOE_CONFIG)" 2

# --- stop requests ---------------------------------------------------------------------------
# Set by the kill signal; what it does depends on the phase (nothing running yet: exit at once).
phase="start"    # start | wait-peers | leader-job | follower-job
job_pid=
stop_requested=0
local_ranks() {  # the moe-train ranks on this Machine: children of Open MPI's orted
  local orteds
  orteds=$(pgrep -d, -x orted || true)
  if [[ -n $orteds ]]; then pgrep -P "$orteds" || true; fi
}
# shellcheck disable=SC2317 # called by the traps below
on_stop() {
  local sig=$1
  stop_requested=1
  case $phase in
    leader-job)
      log "got $sig: asking mpirun (pid $job_pid) for a checkpoint with SIGUSR1"
      kill -USR1 "$job_pid" 2>/dev/null || true ;;
    follower-job)
      local ranks
      ranks=$(local_ranks)
      if [[ -n $ranks ]]; then
        log "got $sig: SIGUSR1 to the local ranks ($(echo "$ranks" | tr '\n' ' '))"
        # shellcheck disable=SC2086 # one pid per word
        kill -USR1 $ranks 2>/dev/null || true
      else
        log "got $sig: no local ranks running; stopping"; exit 0
      fi ;;
    *) log "got $sig before the job started; stopping"; exit 0 ;;
  esac
}
trap 'on_stop SIGUSR1' USR1
trap 'on_stop SIGTERM' TERM
trap 'on_stop SIGINT' INT
nap() { sleep "$1" & wait $! || true; }   # a sleep that the traps above interrupt

# --- ssh -------------------------------------------------------------------------------------
ssh_config=$ssh_dir/config
ssh_key=$ssh_dir/id_moe
setup_ssh() {
  mkdir -p "$ssh_dir" "$sshd_dir" "$state_dir" /run/sshd
  chmod 700 "$ssh_dir"
  local key=${MOE_SSH_KEY:-}
  [[ -n $key ]] || die "MOE_SSH_KEY is empty: set it with fly secrets set MOE_SSH_KEY=\"\$(cat key)\" (fly/README.md)" 2
  [[ $key == *"PRIVATE KEY"* ]] || key=$(printf '%s' "$key" | base64 -d 2>/dev/null) ||
    die "MOE_SSH_KEY is neither a private key nor base64 of one" 2
  (umask 077 && printf '%s\n' "$key" >"$ssh_key")
  ssh-keygen -y -f "$ssh_key" >"$ssh_key.pub" || die "MOE_SSH_KEY is not a usable private key" 2
  cp "$ssh_key.pub" "$ssh_dir/authorized_keys"
  chmod 600 "$ssh_dir/authorized_keys"
  cat >"$ssh_config" <<EOF
Host *.internal
  Port $ssh_port
  User $(id -un)
  IdentityFile $ssh_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
  ConnectTimeout 5
  ServerAliveInterval 5
  ServerAliveCountMax 2
EOF
  [[ -f $sshd_dir/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$sshd_dir/ssh_host_ed25519_key"
  cat >"$sshd_dir/sshd_config" <<EOF
Port $ssh_port
HostKey $sshd_dir/ssh_host_ed25519_key
PidFile $sshd_dir/sshd.pid
AuthorizedKeysFile $ssh_dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
MaxStartups 100:30:200
EOF
  # Environment for what mpirun starts over ssh (sshd gives its sessions a clean one).
  local kv
  for kv in ${MOE_SSHD_SETENV:-}; do echo "SetEnv $kv" >>"$sshd_dir/sshd_config"; done
  "$sshd" -f "$sshd_dir/sshd_config" || die "sshd did not start (config $sshd_dir/sshd_config)"
  log "sshd listening on port $ssh_port"
}
ssh_to() { ssh -F "$ssh_config" "$@"; }

# --- peers -----------------------------------------------------------------------------------
# Sets ids (sorted) and regions from vms.<app>.internal: "<id> <region>,<id> <region>,...".
declare -A region_of=() addr_of=()
ids=()
read_vms() {
  local txt entry id region
  txt=$("$dig" +short +time=2 +tries=1 "@$dns_server" TXT "vms.$internal" 2>/dev/null || true)
  # One TXT record may come as several quoted strings: drop the quotes, join them.
  txt=$(printf '%s' "$txt" | tr -d '"\n')
  ids=()
  region_of=()
  IFS=, read -ra entries <<<"$txt"
  for entry in "${entries[@]}"; do
    read -r id region _ <<<"$entry" || true
    [[ $id =~ ^[0-9a-zA-Z]+$ ]] || continue
    region_of[$id]=${region:-?}
    ids+=("$id")
  done
  if ((${#ids[@]})); then mapfile -t ids < <(printf '%s\n' "${ids[@]}" | LC_ALL=C sort -u); fi
}
aaaa() { "$dig" +short +time=2 +tries=1 "@$dns_server" AAAA "$1.vm.$internal" 2>/dev/null | grep -m1 ':' || true; }
port_open() { timeout 3 bash -c ": <>/dev/tcp/$1/$2" 2>/dev/null; }

# Waits until exactly $machines Machines are listed, this one among them, each with an AAAA
# address and sshd answering. Fails after $peer_timeout seconds naming what it saw.
wait_for_peers() {
  phase="wait-peers"
  local deadline=$((SECONDS + peer_timeout)) id addr ready problems
  log "waiting up to ${peer_timeout}s for $machines Machine(s) in vms.$internal (resolver $dns_server)"
  while :; do
    read_vms
    ready=0
    problems=()
    for id in "${ids[@]}"; do
      addr=$(aaaa "$id")
      addr_of[$id]=$addr
      if [[ -z $addr ]]; then problems+=("$id.vm.$internal has no AAAA record")
      elif ! port_open "$addr" "$ssh_port"; then problems+=("$id ($addr): sshd not answering on port $ssh_port")
      else ready=$((ready + 1)); fi
    done
    if ((${#ids[@]} == machines && ready == machines)) && [[ -n ${region_of[$me]:-} ]]; then return 0; fi
    if ((SECONDS >= deadline)); then
      local seen=()
      for id in "${ids[@]}"; do seen+=("$id (${region_of[$id]}${addr_of[$id]:+, ${addr_of[$id]}})"); done
      log "error: expected $machines Machine(s) after ${peer_timeout}s (MOE_PEER_TIMEOUT), found ${#ids[@]} in vms.$internal: ${seen[*]:-none}"
      [[ -n ${region_of[$me]:-} ]] || log "error: this Machine ($me) is not listed in vms.$internal"
      ((${#ids[@]} <= machines)) || log "error: more Machines than MOE_MACHINES=$machines: scale to $machines or raise MOE_MACHINES"
      local p
      for p in "${problems[@]}"; do log "error: $p"; done
      exit 1
    fi
    nap 1
  done
}

# --- leader ----------------------------------------------------------------------------------
notify_followers() {  # tells every other Machine the job's exit code (in parallel, best effort)
  local rc=$1 id pids=()
  for id in "${ids[@]}"; do
    [[ $id == "$me" ]] && continue
    ssh_to "$id.vm.$internal" "mkdir -p '$state_dir' && echo $rc >'$state_dir/job-exit.tmp' && mv '$state_dir/job-exit.tmp' '$state_dir/job-exit'" \
      </dev/null 2>/dev/null &
    pids+=($!)
  done
  local p
  for p in "${pids[@]}"; do wait "$p" || log "could not tell a peer the outcome (it is gone?)"; done
}

run_leader() {
  local hostfile=$state_dir/hostfile id np=$((machines * slots)) rc
  : >"$hostfile"
  if ((machines == 1)); then echo "localhost slots=$slots" >"$hostfile"; else
    for id in "${ids[@]}"; do echo "$id.vm.$internal slots=$slots" >>"$hostfile"; done
  fi
  local cmd=("$mpirun" -np "$np" --hostfile "$hostfile" --bind-to none
    --mca plm_rsh_agent ssh --mca plm_rsh_args "-F $ssh_config" --mca plm_rsh_no_tree_spawn 1 --mca orte_keep_fqdn_hostnames 1
    --mca btl "tcp,self,vader" --mca btl_tcp_if_include "$iface" --mca oob_tcp_if_include "$iface"
    -x FLY_APP_NAME)
  [[ $(id -u) -ne 0 ]] || cmd+=(--allow-run-as-root)
  local extra=()
  read -ra extra <<<"${MOE_MPIRUN_ARGS:-}"
  cmd+=("${extra[@]}")
  read -ra extra <<<"${MOE_TRAIN_ARGS:-}"
  cmd+=("$train" "$config")
  [[ -z $storage ]] || cmd+=(--set "checkpoint.storage=$storage")
  cmd+=(--run-dir "$run_dir" "${extra[@]}")
  mkdir -p "$(dirname "$run_dir")"
  log "leader of ${ids[*]}: ${cmd[*]}"
  phase="leader-job"
  "${cmd[@]}" &
  job_pid=$!
  # A stop request interrupts `wait` (status > 128) while mpirun still runs: wait again.
  while :; do
    rc=0
    wait "$job_pid" || rc=$?
    kill -0 "$job_pid" 2>/dev/null || break
  done
  log "mpirun exited $rc"
  notify_followers "$rc"
  return "$rc"
}

# --- follower --------------------------------------------------------------------------------
run_follower() {
  local leader=$1 rc gone=0 seen_ranks=0 idle=0
  phase="follower-job"
  log "follower; leader is $leader: waiting for its job to end"
  while :; do
    if [[ -f $state_dir/job-exit ]]; then
      rc=$(<"$state_dir/job-exit")
      log "the leader's job exited $rc"
      return "$rc"
    fi
    if [[ -n $(local_ranks) ]]; then seen_ranks=1; idle=0; else idle=$((idle + 1)); fi
    # The leader gone (its sshd refuses or times out three times in a row), or our ranks gone
    # for 10 s with no word from the leader: the job is over without an outcome.
    if port_open "${addr_of[$leader]}" "$ssh_port"; then gone=0; else gone=$((gone + 1)); fi
    ((gone < 3)) || die "the leader $leader (${addr_of[$leader]}) is gone and never said how the job ended"
    ((seen_ranks == 0 || idle < 20)) || die "the local ranks ended 10 s ago and the leader $leader said nothing"
    nap 0.5
  done
}

# --- main ------------------------------------------------------------------------------------
log "app $app, region ${FLY_REGION:-?}, 6PN ${FLY_PRIVATE_IP:-?}, $machines Machine(s) x $slots rank(s), run $run_id"
rm -f "$state_dir/job-exit"
if ((machines > 1)); then
  setup_ssh
  wait_for_peers
else
  read_vms
  ids=("$me")
fi
leader=${ids[0]}
log "Machines: ${ids[*]} (leader $leader)"
rc=0
if [[ $leader == "$me" ]]; then run_leader || rc=$?; else run_follower "$leader" || rc=$?; fi
((stop_requested == 0)) || log "stopped on request; exit $rc"
exit "$rc"
