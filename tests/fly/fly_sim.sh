# shellcheck shell=bash disable=SC2034 # sim_rc, sim_addr ... are for the sourcing test
# A simulated Fly.io app on this machine, for tests of fly/entrypoint.sh (run unchanged):
# - every Machine is a network namespace with an `eth0` (a veth) on one bridge (in a switch
#   namespace of its own, so the machine's own network is untouched), a 6PN-like address
#   fdaa:0:<n>:a7b:<i>::2, its own /etc/hosts and /etc/resolv.conf (nameserver fdaa::3; `ip netns
#   exec` bind-mounts /etc/netns/<ns>/*), and, per start, its own UTS namespace (hostname = the
#   Machine id, what moe-train groups per-host checkpoints by), PID namespace (its init is PID 1,
#   so a hard kill of the Machine kills everything in it) and mount namespace in which its own
#   directories are bind-mounted at /data (the volume) and /run/moe (state, wiped per start);
#   its HOME is its own too (HOME/.ssh holds the key from MOE_SSH_KEY);
# - Fly's resolver: dnsmasq in a namespace of its own at fdaa::3 on the same bridge, bound to that
#   address only, no upstream, answering vms.<app>.internal TXT and <id>.vm.<app>.internal AAAA;
# - a Machine's init forwards the kill signal to its main process (the entrypoint), like Fly's.
# Traffic goes only to the addresses made here.
#   source tests/fly/fly_sim.sh
#   sim_up 3                         # namespaces for Machines 1..3 (ids in sim_ids[1..3])
#   sim_dns 1 2 3                    # (re)start the resolver listing these Machines
#   sim_start 1 VAR=value ...        # boot Machine 1 with the Fly env plus these variables
#   sim_signal 1 USR1; sim_hard_kill 1; sim_wait 1 [seconds]   # its exit code in sim_rc[1]
#   sim_down                         # also runs on exit (trap)
# Needs root, iproute2, util-linux (unshare), dnsmasq, openssh-server, dig.

sim_prefix=moefly$$
sim_app=moe-sim
sim_n=0
sim_dir=
sim_dns_pid=
sim_made_data=0
sim_made_runmoe=0
declare -a sim_ids=() sim_addr=() sim_pid=() sim_rc=()
# Fly-like Machine ids; not in index order, so the leader (lowest id) is Machine 2.
sim_id_pool=(5683d1f4c90e18 17814e7b0d5389 9080e3a2b40d68 3e8d92c1a7f045)
sim_net=$(printf '%x' $(($$ % 65000 + 1)))

sim_ns() { echo "${sim_prefix}m$1"; }

sim_down() {
  local i
  for ((i = 1; i <= sim_n; i++)); do
    [[ -n ${sim_pid[$i]:-} ]] && kill -9 "$(sim_init_pid "$i")" 2>/dev/null
    [[ -n ${sim_pid[$i]:-} ]] && { wait "${sim_pid[$i]}" 2>/dev/null || true; }
    sim_pid[i]=
  done
  [[ -n $sim_dns_pid ]] && { kill "$sim_dns_pid" 2>/dev/null; wait "$sim_dns_pid" 2>/dev/null || true; }
  sim_dns_pid=
  for ((i = 1; i <= sim_n; i++)); do
    ip netns del "$(sim_ns "$i")" 2>/dev/null || true
    rm -rf "/etc/netns/$(sim_ns "$i")"
  done
  ip netns del "${sim_prefix}dns" 2>/dev/null || true
  ip netns del "${sim_prefix}sw" 2>/dev/null || true
  ((sim_made_data == 0)) || rmdir /data 2>/dev/null || true
  ((sim_made_runmoe == 0)) || rmdir /run/moe 2>/dev/null || true
  sim_made_data=0 sim_made_runmoe=0
  [[ -n $sim_dir ]] && rm -rf "$sim_dir"
  sim_dir=
  sim_n=0
}

# Plugs namespace $1 into the bridge as eth0 with address $2.
sim_plug() {
  local ns=$1 addr=$2 veth=${sim_prefix}v$3
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" netns "${sim_prefix}sw"
  ip -n "${sim_prefix}sw" link set "$veth" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/16" dev eth0 nodad
  ip -n "$ns" link set eth0 up
}

# sim_up <machines>
sim_up() {
  local n=$1 i
  trap sim_down EXIT
  sim_dir=$(mktemp -d /tmp/moe_fly.XXXXXX)
  [[ -d /data ]] || { mkdir /data && sim_made_data=1; }
  [[ -d /run/moe ]] || { mkdir /run/moe && sim_made_runmoe=1; }
  ip netns add "${sim_prefix}sw"
  ip -n "${sim_prefix}sw" link add br0 type bridge
  ip -n "${sim_prefix}sw" link set br0 up
  sim_plug "${sim_prefix}dns" fdaa::3 0
  for ((i = 1; i <= n; i++)); do
    sim_ids[i]=${sim_id_pool[i - 1]}
    sim_addr[i]=fdaa:0:$sim_net:a7b:$i::2
    sim_plug "$(sim_ns "$i")" "${sim_addr[i]}" "$i"
    mkdir -p "/etc/netns/$(sim_ns "$i")" "$sim_dir/m$i/data" "$sim_dir/m$i/run" "$sim_dir/m$i/home"
    printf 'nameserver fdaa::3\n' >"/etc/netns/$(sim_ns "$i")/resolv.conf"
    printf '127.0.0.1 localhost\n::1 localhost\n%s %s fly-local-6pn\n' "${sim_addr[i]}" "${sim_ids[i]}" \
      >"/etc/netns/$(sim_ns "$i")/hosts"
    sim_n=$i
  done
  # The Machine's init (PID 1 of its PID namespace): hostname, volume, state dir, then the main
  # process, to which it forwards the kill signal like Fly's init; exits with its code.
  cat >"$sim_dir/init.sh" <<'INIT'
m=$1; shift
hostname "$FLY_MACHINE_ID"
mount --bind "$m/data" /data
mount --bind "$m/run" /run/moe
"$@" &
child=$!
for sig in USR1 USR2 TERM INT QUIT; do trap "kill -s $sig $child 2>/dev/null" "$sig"; done
while :; do rc=0; wait "$child" || rc=$?; kill -0 "$child" 2>/dev/null || break; done
exit "$rc"
INIT
  # The shared ssh key (a Fly secret on the real thing).
  ssh-keygen -q -t ed25519 -N '' -C moe-fly-sim -f "$sim_dir/key"
}

# sim_dns <machine index>...: (re)starts the resolver answering for these Machines only.
sim_dns() {
  local i vms=() conf=$sim_dir/dnsmasq.conf
  [[ -z $sim_dns_pid ]] || { kill "$sim_dns_pid" 2>/dev/null; wait "$sim_dns_pid" 2>/dev/null || true; }
  for i in "$@"; do vms+=("${sim_ids[i]} sim"); done
  {
    echo "no-resolv"; echo "no-hosts"; echo "no-poll"; echo "bind-interfaces"
    echo "listen-address=fdaa::3"; echo "local=/internal/"; echo "user=root"
    echo "log-facility=$sim_dir/dnsmasq.log"
    (IFS=,; echo "txt-record=vms.$sim_app.internal,\"${vms[*]}\"")
    for ((i = 1; i <= sim_n; i++)); do echo "host-record=${sim_ids[i]}.vm.$sim_app.internal,${sim_addr[i]}"; done
  } >"$conf"
  ip netns exec "${sim_prefix}dns" dnsmasq --keep-in-foreground --conf-file="$conf" --pid-file= &
  sim_dns_pid=$!
  for _ in $(seq 50); do
    ip netns exec "$(sim_ns 1)" dig +short +time=1 +tries=1 @fdaa::3 TXT "vms.$sim_app.internal" 2>/dev/null | grep -q . &&
      return 0
    sleep 0.1
  done
  echo "fly_sim: dnsmasq does not answer" >&2; return 1
}

# sim_start <i> [VAR=value ...]: boots Machine i (its log: $sim_dir/m<i>/log, appended).
sim_start() {
  local i=$1; shift
  local m=$sim_dir/m$i
  rm -rf "${m:?}/run" && mkdir -p "$m/run"
  echo "=== boot $(date +%T)" >>"$m/log"
  ip netns exec "$(sim_ns "$i")" unshare --uts --mount --pid --fork --mount-proc --propagation private \
    env -i PATH="$PATH" HOME="$m/home" LANG=C.UTF-8 \
    FLY_APP_NAME="$sim_app" FLY_MACHINE_ID="${sim_ids[i]}" FLY_REGION=sim FLY_PRIVATE_IP="${sim_addr[i]}" \
    MOE_SSH_KEY="$(<"$sim_dir/key")" "$@" \
    bash "$sim_dir/init.sh" "$m" bash "${SIM_ENTRYPOINT:?}" >>"$m/log" 2>&1 &
  sim_pid[i]=$!
  sim_rc[i]=
}

# The host PID of Machine i's init (PID 1 inside), the child of unshare.
sim_init_pid() {
  local p
  for _ in $(seq 50); do
    p=$(pgrep -P "${sim_pid[$1]}" | head -1)
    [[ -n $p ]] && { echo "$p"; return 0; }
    sleep 0.02
  done
  return 1
}
sim_signal() { kill -s "$2" "$(sim_init_pid "$1")"; }   # the kill signal, as Fly sends it
sim_hard_kill() { kill -9 "$(sim_init_pid "$1")"; }     # everything in the Machine dies at once

# sim_wait <i> [seconds]: waits for Machine i's main process; its code in sim_rc[i]. Returns 1
# (the Machine still running) after the timeout.
sim_wait() {
  local i=$1 t=${2:-600} k
  for ((k = 0; k < t * 10; k++)); do
    if ! kill -0 "${sim_pid[i]}" 2>/dev/null; then
      sim_rc[i]=0
      wait "${sim_pid[i]}" || sim_rc[i]=$?
      sim_pid[i]=
      return 0
    fi
    sleep 0.1
  done
  return 1
}
sim_running() { [[ -n ${sim_pid[$1]:-} ]] && kill -0 "${sim_pid[$1]}" 2>/dev/null; }
sim_data() { echo "$sim_dir/m$1/data"; }     # Machine i's volume, seen from here
sim_log() { echo "$sim_dir/m$1/log"; }
