#!/usr/bin/env bash
# Start a one-node SLURM "cluster" on this machine, for tests and for trying
# the pipeline/ batch scripts without a real cluster.
#
#   sudo pipeline/slurm/start-local-slurm.sh      # as root; idempotent
#   pipeline/slurm/stop-local-slurm.sh            # ends what this started
#
# What it does (Debian/Ubuntu, no systemd needed):
#   1. apt-get install slurm-wlm munge, with /usr/sbin/policy-rc.d blocking
#      the packages' own service starts (exit 101) during the install;
#   2. writes /etc/slurm/slurm.conf: ONE node "localhost" at 127.0.0.1 with
#      CPUs = nproc, RealMemory a little under MemTotal, cons_tres/CR_CPU so
#      several jobs share the node, no cgroups, no accounting database;
#      refuses to overwrite a slurm.conf it did not write;
#   3. creates the munge key if missing, starts munged, slurmctld and slurmd
#      directly (PID 1 may not be an init), with pid files under $STATE_DIR;
#   4. waits until `sinfo` shows the node idle.
# Running it again while the daemons run leaves them as they are.
#
# Environment: ADVAUDIO_SLURM_STATE (state directory, default
# /var/lib/advaudio-slurm), ADVAUDIO_SLURM_TIMEOUT (seconds to wait for the
# node, default 60), ADVAUDIO_SLURM_NO_INSTALL=1 (never call apt-get).
set -euo pipefail

STATE_DIR=${ADVAUDIO_SLURM_STATE:-/var/lib/advaudio-slurm}
TIMEOUT=${ADVAUDIO_SLURM_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
MARK="# written by advaudio pipeline/slurm/start-local-slurm.sh"

log() { echo "start-local-slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

# A pid file names a live process: present, numeric, and not a zombie (here
# PID 1 may not reap orphans, so a killed daemon can linger in state Z).
alive() {
    local pidfile=$1 pid state
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc 0-9 <"$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
    [ "$state" != Z ] && [ "$state" != X ]
}

dead() { ! alive "$1"; }

wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds (quietly)
    local limit=$1 t=0
    shift
    until "$@" >/dev/null 2>&1; do
        t=$((t + 1))
        [ "$t" -le $((limit * 5)) ] || return 1
        sleep 0.2
    done
}

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

mkdir -p "$STATE_DIR"/{ctld,d,log}
APT_LOG=$STATE_DIR/log/apt.log

# --- 1. packages ------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    [ "${ADVAUDIO_SLURM_NO_INSTALL:-0}" != 1 ] || die "slurm/munge are not installed and ADVAUDIO_SLURM_NO_INSTALL=1"
    command -v apt-get >/dev/null || die "slurm is not installed and there is no apt-get to install it"
    log "installing slurm-wlm and munge with apt-get"
    # Our policy-rc.d for the install only; a host's own one is put back after.
    saved_policy=
    if [ -e /usr/sbin/policy-rc.d ]; then
        saved_policy=$STATE_DIR/policy-rc.d.saved
        mv /usr/sbin/policy-rc.d "$saved_policy"
    fi
    restore_policy() {
        rm -f /usr/sbin/policy-rc.d
        if [ -n "$saved_policy" ]; then mv "$saved_policy" /usr/sbin/policy-rc.d; fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\n# advaudio start-local-slurm.sh: no service starts during install\nexit 101\n' \
        >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    export DEBIAN_FRONTEND=noninteractive
    # A fresh container has no package lists; refresh once if the install fails.
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$APT_LOG" 2>&1 \
            && ! { apt-get update -q >>"$APT_LOG" 2>&1 \
                   && apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$APT_LOG" 2>&1; }; then
        tail -n 20 "$APT_LOG" >&2
        die "apt-get install slurm-wlm munge failed (log: $APT_LOG)"
    fi
    rm -f "$APT_LOG"
    restore_policy
    trap - EXIT
fi

# --- 2. configuration ---------------------------------------------------------
mkdir -p /etc/slurm
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a real SLURM setup"
fi
# --all: plain nproc honours OMP_NUM_THREADS, which Dask and torchrun set to 1 in their callers.
cpus=$(nproc --all)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
real_mb=$((mem_mb - mem_mb / 20 - 256))  # leave ~5 % + 256 MB to the system
new_conf=$(cat <<EOF
$MARK
# One node bound to 127.0.0.1; state, logs and pid files under $STATE_DIR.
ClusterName=advaudio
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
conf_changed=0
if [ ! -e "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF"
    conf_changed=1
fi

# --- 3. daemons -----------------------------------------------------------------
# munge: reuse one that already answers (a host's own munged); else start ours.
if ! alive "$STATE_DIR/munged.pid" && ! (munge -n | unmunge) >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown -R munge:munge /etc/munge && chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    rm -f /run/munge/munged.pid
    log "starting munged"
    runuser -u munge -- munged --force
    wait_for 10 test -s /run/munge/munged.pid || die "munged wrote no pid file (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
    wait_for 10 sh -c 'munge -n | unmunge' || die "munge does not answer (see /var/log/munge/munged.log)"
fi

restart=$conf_changed
for d in slurmctld slurmd; do
    alive "$STATE_DIR/$d.pid" || restart=1
done
if [ "$restart" = 1 ]; then
    # A changed configuration or a missing daemon: (re)start both, ours only.
    for d in slurmd slurmctld; do
        if alive "$STATE_DIR/$d.pid"; then
            kill "$(tr -dc 0-9 <"$STATE_DIR/$d.pid")" || true
            wait_for 10 dead "$STATE_DIR/$d.pid" || true
        fi
        rm -f "$STATE_DIR/$d.pid"
    done
    log "starting slurmctld"
    slurmctld || die "slurmctld failed to start (see $STATE_DIR/log/slurmctld.log)"
    wait_for 15 scontrol ping \
        || { tail -n 20 "$STATE_DIR/log/slurmctld.log" >&2; die "slurmctld does not answer"; }
    log "starting slurmd"
    slurmd -N localhost || die "slurmd failed to start (see $STATE_DIR/log/slurmd.log)"
else
    log "slurmctld and slurmd already running"
fi

# --- 4. wait for the node ----------------------------------------------------------
node_ready() {
    local state
    state=$(sinfo -h -n localhost -o %T 2>/dev/null) || return 1
    case "$state" in
        idle*|mixed*|allocated*|completing*) return 0 ;;
        down*|drain*|fail*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true; return 1 ;;
        *) return 1 ;;
    esac
}
if ! wait_for "$TIMEOUT" node_ready; then
    sinfo -N -l >&2 || true
    tail -n 20 "$STATE_DIR/log/slurmd.log" "$STATE_DIR/log/slurmctld.log" >&2 || true
    die "node localhost not up within $TIMEOUT s"
fi
log "ready: $(sinfo -h -o '%P %D %T %C' | head -n 1) (partition nodes state cpus A/I/O/T)"
