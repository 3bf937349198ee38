# A real single-node SLURM for tests, started by hand (no systemd): munged with its own key and
# socket, slurmctld and slurmd with a slurm.conf of our own in a temp dir (one node `localhost`,
# CPUs=2, select/cons_tres, proctrack/linuxproc, task/none, no accounting, MpiDefault none,
# cred_expire=10 so a requeued job starts within seconds), on ports of our own. Installs Debian's
# slurmctld, slurmd, slurm-client, munge and libpmix-dev when missing. Everything it started is
# stopped by bed_down (also on exit).
#   source tests/slurm/slurm_bed.sh; bed_up; sbatch ...; bed_down
# Needs root.

bed_dir=
bed_pids=()

bed_down() {
  local p
  for p in "${bed_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${bed_pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  bed_pids=()
  [[ -n $bed_dir ]] && rm -rf "$bed_dir"
  bed_dir=
}

bed_install() {
  local need=() p
  for p in slurmctld slurmd slurm-client munge libpmix-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  ((${#need[@]} == 0)) && return 0
  echo "slurm_bed: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
}

bed_up() {
  [[ $(id -u) -eq 0 ]] || { echo "slurm_bed: needs root" >&2; return 1; }
  bed_install || return 1
  trap bed_down EXIT
  bed_dir=$(mktemp -d /tmp/moe_slurm.XXXXXX)
  local port=$((17000 + $$ % 2000 * 2))
  mkdir -p "$bed_dir"/{state,spool,log,munge}
  chmod 700 "$bed_dir/munge"
  dd if=/dev/urandom of="$bed_dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$bed_dir/munge/munge.key"
  munged --key-file="$bed_dir/munge/munge.key" --socket="$bed_dir/munge/socket" --pid-file="$bed_dir/munge/pid" \
    --log-file="$bed_dir/log/munged.log" --seed-file="$bed_dir/munge/seed" --force
  for _ in $(seq 50); do [[ -s $bed_dir/munge/pid ]] && break; sleep 0.1; done
  bed_pids+=("$(cat "$bed_dir/munge/pid")")
  cat >"$bed_dir/slurm.conf" <<CONF
ClusterName=moetest
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$bed_dir/munge/socket,cred_expire=10
StateSaveLocation=$bed_dir/state
SlurmdSpoolDir=$bed_dir/spool
SlurmctldPidFile=$bed_dir/slurmctld.pid
SlurmdPidFile=$bed_dir/slurmd.pid
SlurmctldLogFile=$bed_dir/log/slurmctld.log
SlurmdLogFile=$bed_dir/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SchedulerType=sched/builtin
# A requeued job starts at the main scheduling pass (every 60 s by default); every second here
# takes the test from 242 s to 102 s (four requeues).
SchedulerParameters=sched_interval=1
KillWait=5
MinJobAge=600
NodeName=localhost CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  export SLURM_CONF=$bed_dir/slurm.conf
  slurmctld -i -f "$SLURM_CONF" && slurmd -f "$SLURM_CONF" -N localhost || { cat "$bed_dir"/log/*.log; return 1; }
  for _ in $(seq 100); do
    [[ -s $bed_dir/slurmctld.pid && -s $bed_dir/slurmd.pid ]] && sinfo -h -o %T 2>/dev/null | grep -q idle && break
    sleep 0.2
  done
  bed_pids+=("$(cat "$bed_dir/slurmctld.pid")" "$(cat "$bed_dir/slurmd.pid")")
  sinfo -h -o %T | grep -q idle || { echo "slurm_bed: the node never became idle"; sinfo; cat "$bed_dir"/log/*.log; return 1; }
}

# The job's state as SLURM says it (PENDING, RUNNING, COMPLETED, ...).
bed_job_state() { scontrol show job "$1" 2>/dev/null | sed -nE 's/.*JobState=([A-Z_]+).*/\1/p'; }
