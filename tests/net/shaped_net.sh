# A shaped network of N simulated hosts on this machine, for tests and benchmarks of what crosses
# a network: each host is a network namespace with an `eth0` (a veth) on one bridge (in a switch
# namespace of its own, so the machine's own network is untouched), an IPv6 ULA address
# fdaa:<id>::<i>/64, and its egress limited with `tc ... tbf` (these kernels have tbf and htb,
# not netem). MPI runs over it with TCP only: mpirun starts in host 1, and its rsh agent is a
# small `ip netns exec` wrapper, so every rank's orted runs in its own host.
#   source tests/net/shaped_net.sh
#   net_up 2 100mbit            # hosts h1, h2; shapes every host's egress to 100 Mbit/s
#   net_mpirun 2 build/moe-train configs/tiny.yaml --set parallel.dp=2
#   net_down                    # also runs on exit (trap)
# Needs root (ip netns), iproute2 and Open MPI. Traffic goes only to the addresses made here.

net_prefix=moe$$
net_hosts=0
net_dir=

net_down() {
  local i
  for ((i = 1; i <= net_hosts; i++)); do ip netns del "${net_prefix}h$i" 2>/dev/null || true; done
  ip netns del "${net_prefix}sw" 2>/dev/null || true
  [[ -n $net_dir ]] && rm -rf "$net_dir"
  net_hosts=0
}

# net_up <hosts> <rate, e.g. 1gbit or 100mbit>
net_up() {
  local n=$1 rate=$2 i id
  command -v ip >/dev/null || { echo "shaped_net: needs iproute2 (ip)" >&2; return 1; }
  id=$(printf '%x' $(($$ % 65000 + 1)))
  trap net_down EXIT
  net_dir=$(mktemp -d /tmp/moe_net.XXXXXX)
  ip netns add "${net_prefix}sw"
  ip -n "${net_prefix}sw" link add br0 type bridge
  ip -n "${net_prefix}sw" link set br0 up
  for ((i = 1; i <= n; i++)); do
    local host=${net_prefix}h$i
    ip netns add "$host"
    ip link add "${net_prefix}v$i" type veth peer name eth0 netns "$host"
    ip link set "${net_prefix}v$i" netns "${net_prefix}sw"
    ip -n "${net_prefix}sw" link set "${net_prefix}v$i" master br0 up
    ip -n "$host" link set lo up
    ip -n "$host" addr add "fdaa:$id::$i/64" dev eth0 nodad
    ip -n "$host" link set eth0 up
    # Egress of every host: a token bucket at `rate` (burst of 64 KiB, at most 50 ms of queue).
    tc -n "$host" qdisc add dev eth0 root tbf rate "$rate" burst 64kb latency 50ms
    echo "h$i slots=1" >>"$net_dir/hostfile"
    echo "fdaa:$id::$i h$i" >>"$net_dir/hosts"
  done
  net_hosts=$n
  # The rsh agent: "<host> <command...>" runs the command in that host's namespace.
  cat >"$net_dir/netns-rsh" <<AGENT
#!/usr/bin/env bash
host=\$1; shift
while [[ \$host == -* ]]; do host=\$1; shift; done
exec ip netns exec "${net_prefix}\$host" bash -c "\$*"
AGENT
  chmod +x "$net_dir/netns-rsh"
}

# net_mpirun <ranks> <command...>: one rank per host, MPI over TCP on eth0 only.
net_mpirun() {
  local ranks=$1; shift
  local root_flag=()
  [[ $(id -u) -ne 0 ]] || root_flag=(--allow-run-as-root)
  # All "hosts" are this one machine: the daemons must not share hwloc's topology through a
  # fixed shared-memory address, nor PMIx's shared-memory store (either crashed an orted once
  # in CI, in hwloc_shmem_topology_write / dstore_base.c).
  PMIX_MCA_gds=hash ip netns exec "${net_prefix}h1" mpirun "${root_flag[@]}" -np "$ranks" --hostfile "$net_dir/hostfile" \
    --mca plm_rsh_agent "$net_dir/netns-rsh" --mca btl tcp,self --mca btl_tcp_if_include eth0 \
    --mca oob_tcp_if_include eth0 --mca rtc_hwloc_vmhole none --bind-to none -x PATH -x PMIX_MCA_gds "$@"
}

# Bytes that left host <i>'s eth0 so far (from the tbf qdisc's counters).
net_sent_bytes() {
  tc -s -n "${net_prefix}h$1" qdisc show dev eth0 | sed -nE 's/^ *Sent ([0-9]+) bytes.*/\1/p' | head -1
}
