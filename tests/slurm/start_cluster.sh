#!/usr/bin/env bash
# Start a throw-away Slurm cluster on this machine, for VoxelBoard's Slurm tests: the node
# named after the host in partition "debug" (VOXELBOARD_SLURM_PARTITION), and two more nodes,
# HOST-n1 and HOST-n2, in partition "nodes" for jobs across nodes: three slurmd on one host
# (Debian's Slurm is built with --enable-multiple-slurmd), each on its own port.
#
#   tests/slurm/start_cluster.sh [STATE_DIR]      (default /tmp/voxelboard-slurm)
#
# Installs Debian's slurm-wlm and munge if they are missing (needs root and the Debian
# mirror; a no-op when installed), then runs munged, slurmctld and slurmd as root with every
# file (config, munge key and socket, state, spool, logs, pid files) under STATE_DIR, on free
# TCP ports, so it touches neither /etc/slurm nor a cluster that may already run here. It
# waits until the nodes are idle and prints the line to use the cluster:
#
#   export SLURM_CONF=STATE_DIR/slurm.conf
#
# Stop it with tests/slurm/stop_cluster.sh STATE_DIR. No cgroups (containers rarely allow
# them): processes are tracked by parent pid (proctrack/linuxproc).
#
# Exit status: 0 running; 3 packages missing and not installable; 4 a daemon did not start
# (its log is printed); 2 usage.
set -euo pipefail

STATE_DIR=${1:-/tmp/voxelboard-slurm}
WAIT_S=${VOXELBOARD_SLURM_WAIT_S:-60}
PARTITION=${VOXELBOARD_SLURM_PARTITION:-debug}

die() { echo "start_cluster: $2" >&2; exit "$1"; }

# ---- packages (idempotent) -------------------------------------------------------------
need=()
for bin in munged slurmctld slurmd sbatch squeue scancel sinfo; do
  command -v "$bin" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$bin" >/dev/null 2>&1 \
    || need+=("$bin")
done
export PATH="$PATH:/usr/sbin"
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die 3 "missing ${need[*]}; installing slurm-wlm and munge needs root"
  command -v apt-get >/dev/null || die 3 "missing ${need[*]} and no apt-get to install slurm-wlm"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
      || die 3 "apt-get install slurm-wlm munge failed (no Debian mirror reachable?)"
  fi
fi
[ "$(id -u)" -eq 0 ] || die 3 "the test cluster runs its daemons as root (SlurmUser=root); run as root"

# ---- a fresh state folder ----------------------------------------------------------------
if [ -f "$STATE_DIR/slurm.conf" ]; then
  "$(dirname "$0")/stop_cluster.sh" "$STATE_DIR" >/dev/null 2>&1 || true
fi
mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd)
rm -rf "${STATE_DIR:?}"/{munge,ctld,spool,log,run}
mkdir -p "$STATE_DIR"/{munge,ctld,spool,log,run}
chmod 700 "$STATE_DIR/munge"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
ports=()
while [ "${#ports[@]}" -lt 4 ]; do
  port=$(free_port)
  [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
done
CTLD_PORT=${ports[0]}

NODE=$(hostname -s)
NODES=("$NODE" "$NODE-n1" "$NODE-n2")
# the machine's cores, not what OMP_NUM_THREADS would make nproc say (a test worker sets it)
CPUS=$(nproc --all)
# leave the daemons some room; slurmd refuses to register a node with more than it has
MEM_MB=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 ))

MUNGE_SOCKET="$STATE_DIR/munge/munge.socket"
cat >"$STATE_DIR/slurm.conf" <<EOF
# test cluster written by tests/slurm/start_cluster.sh: three slurmd on this host
ClusterName=voxelboard
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool/%n
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd-%n.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$STATE_DIR/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# seconds between SIGTERM and SIGKILL when a job is cancelled or runs out of time
KillWait=5
# finished jobs stay visible to squeue for this long (there is no accounting database)
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 Port=${ports[1]} CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
NodeName=${NODES[1]} NodeAddr=127.0.0.1 NodeHostname=$NODE Port=${ports[2]} CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
NodeName=${NODES[2]} NodeAddr=127.0.0.1 NodeHostname=$NODE Port=${ports[3]} CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=nodes Nodes=${NODES[1]},${NODES[2]} MaxTime=INFINITE State=UP
EOF
: >"$STATE_DIR/plugstack.conf"
export SLURM_CONF="$STATE_DIR/slurm.conf"

# ---- daemons -----------------------------------------------------------------------------
show_log() { echo "--- $1 (last lines)" >&2; tail -n 20 "$1" >&2 2>/dev/null || true; }

dd if=/dev/urandom of="$STATE_DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$STATE_DIR/munge/munge.key"
munged --force --key-file="$STATE_DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
  --pid-file="$STATE_DIR/run/munged.pid" --log-file="$STATE_DIR/log/munged.log" \
  --seed-file="$STATE_DIR/munge/munged.seed" \
  || { show_log "$STATE_DIR/log/munged.log"; die 4 "munged did not start"; }

slurmctld -f "$SLURM_CONF" -i \
  || { show_log "$STATE_DIR/log/slurmctld.log"; die 4 "slurmctld did not start"; }
for node in "${NODES[@]}"; do
  mkdir -p "$STATE_DIR/spool/$node"
  slurmd -f "$SLURM_CONF" -N "$node" \
    || { show_log "$STATE_DIR/log/slurmd-$node.log"; die 4 "slurmd of $node did not start"; }
done

deadline=$(( SECONDS + WAIT_S ))
until [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle"' | sort -u | wc -l)" -eq 3 ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    sinfo -N -l >&2 2>&1 || true
    show_log "$STATE_DIR/log/slurmctld.log"
    for node in "${NODES[@]}"; do show_log "$STATE_DIR/log/slurmd-$node.log"; done
    die 4 "the nodes ${NODES[*]} not all idle after ${WAIT_S} s"
  fi
  sleep 0.5
done
echo "export SLURM_CONF=$SLURM_CONF"
