#!/usr/bin/env bash
# Stop the local SLURM testbed that slurm/testbed/start.sh started: cancel its jobs, then end
# the slurmd, slurmctld and munged it started (found by their pid files, nothing else).
# Its state directory (logs included) is kept; `--purge` removes it and the /etc/hosts line too.
#
#   sudo slurm/testbed/stop.sh [--purge]
#
# Environment: PHISCALE_SLURM_DIR (default /tmp/phiscale-slurm), as for start.sh.
set -euo pipefail

DIR=${PHISCALE_SLURM_DIR:-/tmp/phiscale-slurm}
HOSTS_MARK="# phiscale-slurm testbed"
export SLURM_CONF="$DIR/slurm.conf"

[ "$(id -u)" = 0 ] || { echo "testbed: error: must run as root; try: sudo $0" >&2; exit 1; }

alive() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# stop PIDFILE NAME: TERM, wait up to 10 s, then KILL; only if the pid still runs NAME.
stop() {
  local pidfile=$1 name=$2 pid
  alive "$pidfile" "$name" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    alive "$pidfile" "$name" || break
    sleep 0.2
  done
  if alive "$pidfile" "$name"; then
    echo "testbed: $name (pid $pid) ignored SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "testbed: stopped $name (pid $pid)"
}

# Jobs first, while the controller is up, so no slurmstepd outlives its slurmd.
if alive "$DIR/run/slurmctld.pid" slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 50); do
      [ -z "$(squeue -h -t R,CG -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
    echo "testbed: cancelled jobs $jobs"
  fi
fi

for pidfile in "$DIR"/run/slurmd-*.pid; do
  [ -e "$pidfile" ] && stop "$pidfile" slurmd
done
stop "$DIR/run/slurmctld.pid" slurmctld
stop "$DIR/munge/munged.pid" munged

if [ "${1:-}" = "--purge" ]; then
  sed -i "/$HOSTS_MARK/d" /etc/hosts
  rm -rf "$DIR"
  echo "testbed: removed $DIR and the /etc/hosts line"
else
  echo "testbed: stopped; logs kept in $DIR/log"
fi
