#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start_cluster.sh and remove its state folder.
#
#   tests/slurm/stop_cluster.sh [STATE_DIR]      (default /tmp/voxelboard-slurm)
#
# Cancels its jobs, then ends slurmd, slurmctld and munged by the pids in STATE_DIR/run
# (never by name, so another Slurm on the machine is left alone), waiting up to 15 s each.
set -uo pipefail

STATE_DIR=${1:-/tmp/voxelboard-slurm}
[ -d "$STATE_DIR" ] || exit 0
STATE_DIR=$(cd "$STATE_DIR" && pwd)
export PATH="$PATH:/usr/sbin"

if [ -f "$STATE_DIR/slurm.conf" ] && command -v scancel >/dev/null; then
  SLURM_CONF="$STATE_DIR/slurm.conf" timeout 10 scancel --full --user="$(id -un)" 2>/dev/null || true
fi

stop_pid_file() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null) || return 0
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# slurmd first: it takes the jobs' processes with it; munged last, the others need it
for file in "$STATE_DIR"/run/slurmd-*.pid; do  # all nodes' slurmd at once
  stop_pid_file "$file" &
done
wait
stop_pid_file "$STATE_DIR/run/slurmctld.pid"
stop_pid_file "$STATE_DIR/run/munged.pid"

if [ "${VOXELBOARD_SLURM_KEEP:-0}" = "1" ]; then
  echo "stop_cluster: kept $STATE_DIR (VOXELBOARD_SLURM_KEEP=1)"
else
  rm -rf "$STATE_DIR"
fi
