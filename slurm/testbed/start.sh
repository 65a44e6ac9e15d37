#!/usr/bin/env bash
# Start a real local SLURM cluster: munged + slurmctld + N slurmd ("nodes" n1..nN) on this host.
#
#   sudo slurm/testbed/start.sh          # idempotent; returns once every node is idle
#   source /tmp/phiscale-slurm/env.sh    # SLURM_CONF for sbatch/srun/squeue/scontrol
#   sudo slurm/testbed/stop.sh
#
# Needs root and Debian's `munge slurmctld slurmd slurm-client` (scripts/setup.sh installs them).
# Everything it writes (conf, munge key, spool, state, logs, pid files) lives in one directory;
# the only change outside it is one marked /etc/hosts line so node names resolve to 127.0.0.1
# (Lightning's SLURMEnvironment uses the first node name as MASTER_ADDR).
#
# Environment (defaults):
#   PHISCALE_SLURM_DIR=/tmp/phiscale-slurm   state directory
#   PHISCALE_SLURM_PORT=16817                slurmctld port; node i listens on PORT+i
#   PHISCALE_SLURM_NODES=2                   simulated nodes
#   PHISCALE_SLURM_CPUS=2                    CPUs per node (oversubscribing the host is fine)
#   PHISCALE_SLURM_MEM_MB=4000               RealMemory per node (memory is not enforced)
#   PHISCALE_SLURM_MIN_JOB_AGE=60            seconds a finished job stays visible to scontrol
#   PHISCALE_SLURM_WAIT=90                   seconds to wait for the nodes to become idle
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${PHISCALE_SLURM_DIR:-/tmp/phiscale-slurm}
PORT=${PHISCALE_SLURM_PORT:-16817}
NODES=${PHISCALE_SLURM_NODES:-2}
CPUS=${PHISCALE_SLURM_CPUS:-2}
MEM_MB=${PHISCALE_SLURM_MEM_MB:-4000}
MIN_JOB_AGE=${PHISCALE_SLURM_MIN_JOB_AGE:-60}
WAIT=${PHISCALE_SLURM_WAIT:-90}
HOSTS_MARK="# phiscale-slurm testbed"

die() { echo "testbed: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (slurmd and munged need it); try: sudo $0"
for bin in munged mungekey slurmctld slurmd sinfo scontrol; do
  command -v "$bin" >/dev/null || die "'$bin' not found; install: apt-get install --no-install-recommends munge slurmctld slurmd slurm-client"
done
id munge >/dev/null 2>&1 || die "no 'munge' user; reinstall the munge package"

# alive PIDFILE NAME: the pid in PIDFILE runs a process called NAME (not a recycled pid).
alive() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

install -d -m 0755 "$DIR" "$DIR/run" "$DIR/log" "$DIR/state" "$DIR/spool"
install -d -m 0755 -o munge -g munge "$DIR/munge"  # clients need x on the socket dir
export SLURM_CONF="$DIR/slurm.conf"

# 1. munge: a private daemon, key and socket under $DIR (a system munged, if any, is left alone).
KEY="$DIR/munge/munge.key"
if [ ! -s "$KEY" ]; then
  runuser -u munge -- mungekey --create --keyfile="$KEY" --bits=1024
fi
if alive "$DIR/munge/munged.pid" munged; then
  echo "testbed: munged already running (pid $(cat "$DIR/munge/munged.pid"))"
else
  runuser -u munge -- munged --socket="$DIR/munge/munge.socket.2" --key-file="$KEY" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || die "munged failed to start; see $DIR/munge/munged.log"
fi

# 2. slurm.conf from the template (rewritten only when it changes).
names=(); node_lines=""
for i in $(seq 1 "$NODES"); do
  names+=("n$i")
  node_lines+="NodeName=n$i NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=$((PORT + i)) CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN"$'\n'
done
node_list="n[1-$NODES]"
[ "$NODES" = 1 ] && node_list=n1
conf=$(sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$(hostname -s)|g" -e "s|@CTLD_PORT@|$PORT|g" \
  -e "s|@NODES@|$NODES|g" -e "s|@NODE_LIST@|$node_list|g" -e "s|@MIN_JOB_AGE@|$MIN_JOB_AGE|g" \
  "$HERE/slurm.conf.in")
conf=${conf/@NODE_LINES@/${node_lines%$'\n'}}
if [ "$(cat "$SLURM_CONF" 2>/dev/null)" != "$conf" ]; then
  if alive "$DIR/run/slurmctld.pid" slurmctld; then
    echo "testbed: slurm.conf changed while running; restart to apply: $HERE/stop.sh && $HERE/start.sh" >&2
  else
    printf '%s\n' "$conf" > "$SLURM_CONF"
  fi
fi
printf 'export SLURM_CONF=%q\n' "$SLURM_CONF" > "$DIR/env.sh"

# 3. Node names must resolve, to loopback only.
if ! grep -q "$HOSTS_MARK" /etc/hosts; then
  echo "127.0.0.1 ${names[*]}  $HOSTS_MARK" >> /etc/hosts
fi

# 4. Daemons (each daemonizes and writes its pid file). -c: a fresh controller forgets old jobs.
if alive "$DIR/run/slurmctld.pid" slurmctld; then
  echo "testbed: slurmctld already running (pid $(cat "$DIR/run/slurmctld.pid"))"
else
  slurmctld -c -f "$SLURM_CONF" || die "slurmctld failed to start; see $DIR/log/slurmctld.log"
fi
for n in "${names[@]}"; do
  if alive "$DIR/run/slurmd-$n.pid" slurmd; then
    echo "testbed: slurmd $n already running (pid $(cat "$DIR/run/slurmd-$n.pid"))"
  else
    install -d -m 0755 "$DIR/spool/$n"
    slurmd -f "$SLURM_CONF" -N "$n" || die "slurmd $n failed to start; see $DIR/log/slurmd-$n.log"
  fi
done

# 5. Wait until every node is idle (a node left down/drained by an earlier run is resumed).
start=$SECONDS
while :; do
  states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)
  idle=$(grep -c ' idle$' <<<"$states" || true)
  [ "$idle" -ge "$NODES" ] && break
  if grep -Eq ' (down|drain|drng|fail)\*?$' <<<"$states"; then
    scontrol update NodeName="$node_list" State=RESUME >/dev/null 2>&1 || true
  fi
  if [ $((SECONDS - start)) -ge "$WAIT" ]; then
    echo "testbed: nodes not idle after ${WAIT}s:" >&2
    echo "$states" >&2
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR"/log/slurmd-*.log >&2 || true
    exit 1
  fi
  sleep 1
done

echo "testbed: $NODES nodes idle (${CPUS} CPUs each) after $((SECONDS - start))s; state in $DIR"
echo "testbed: logs: $DIR/log/slurmctld.log $DIR/log/slurmd-<node>.log $DIR/munge/munged.log"
echo "testbed: use it with: source $DIR/env.sh   (or export SLURM_CONF=$SLURM_CONF)"
