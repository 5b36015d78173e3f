#!/usr/bin/env bash
# Stop the daemons that start-local-slurm.sh started — only those, by the pid
# files it wrote under $ADVAUDIO_SLURM_STATE (default /var/lib/advaudio-slurm).
# A munged that was already running before (not started by it) is left alone.
# The packages, slurm.conf and the munge key stay, so the next start is fast.
#
# Here PID 1 may not reap orphans: a killed daemon can linger as a zombie, so
# "alive" means /proc/PID/stat exists and its state is not Z, not `kill -0`.
set -euo pipefail

STATE_DIR=${ADVAUDIO_SLURM_STATE:-/var/lib/advaudio-slurm}

log() { echo "stop-local-slurm: $*" >&2; }

pid_of() { [ -s "$1" ] && tr -dc 0-9 <"$1"; }

alive_pid() {
    local state
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)
    [ "$state" != Z ] && [ "$state" != X ]
}

stopped=0
# slurmd first (it ends running job steps), then the controller, then munge.
for d in slurmd slurmctld munged; do
    pidfile=$STATE_DIR/$d.pid
    pid=$(pid_of "$pidfile" || true)
    if [ -z "$pid" ] || ! alive_pid "$pid"; then
        rm -f "$pidfile"
        continue
    fi
    # The pid file may be stale and the number reused: check the command name.
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    if [ "$comm" != "$d" ]; then
        log "pid $pid in $pidfile is '$comm', not $d: leaving it alone"
        rm -f "$pidfile"
        continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        alive_pid "$pid" || break
        sleep 0.2
    done
    if alive_pid "$pid"; then
        log "$d (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
    log "stopped $d (pid $pid)"
    stopped=$((stopped + 1))
done
[ "$stopped" -gt 0 ] || log "nothing to stop"
