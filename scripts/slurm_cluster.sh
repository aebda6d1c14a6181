#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for the tests of the cluster recipes (tests/test_slurm.py)
# and for trying the recipes of docs/recipes.md by hand: the real slurmctld, slurmd and slurmdbd
# of Debian's slurm-wlm, authenticated by munge, every file of its own under one state folder so
# that nothing of the machine's configuration is touched beyond installing the packages.
#
#   scripts/slurm_cluster.sh start [STATE_DIR]   install what is missing, write slurm.conf, start
#                                                munged, MariaDB, slurmdbd, slurmctld, slurmd;
#                                                wait until sinfo shows the node idle
#   scripts/slurm_cluster.sh stop  [STATE_DIR]   stop what start started (munged stays: it is the
#                                                machine's, and other users may need it)
#   scripts/slurm_cluster.sh env   [STATE_DIR]   the SLURM_CONF line to export for sbatch & co
#
# BIDS_USB_SLURM_INSTALL=no: never install, exit 69 where something is missing (what the tests use).
#
# Accounting is real: slurmdbd on a MariaDB of its own (datadir and socket in STATE), so
# `sacct -j JOB` lists every array task (JOB_1, JOB_2, ...) with its state and exit code, as on a
# production cluster. (The job completion log alone, `sacct -c`, does not know array task ids.)
# Installing needs root (apt-get); CI and the development machines run as root.
set -euo pipefail

action=${1:-start}
STATE=${2:-${BIDS_USB_SLURM_STATE:-/tmp/bids_usb_slurm}}
CONF="$STATE/slurm.conf"
NODE=$(hostname -s)
PORT=${BIDS_USB_SLURM_PORT:-6817} # slurmctld; slurmd and slurmdbd take the next two
DB_PORT=${BIDS_USB_SLURM_DB_PORT:-3307}

log() { echo "slurm_cluster: $*" >&2; }

have_everything() {
    local cmd
    for cmd in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null || return 1
    done
    compgen -G "/usr/lib/*/slurm-wlm/accounting_storage_mysql.so" >/dev/null
}

install_packages() {
    have_everything && return
    if [ "${BIDS_USB_SLURM_INSTALL:-yes}" = no ]; then
        log "slurm-wlm, slurmdbd, munge or mariadb-server is not installed (scripts/slurm_cluster.sh start installs them)"
        exit 69
    fi
    if [ "$(id -u)" != 0 ]; then
        log "slurm-wlm, slurmdbd, munge or mariadb-server is missing and installing them needs root"
        exit 69
    fi
    log "installing slurm-wlm, slurmdbd, munge and mariadb-server (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd slurm-wlm-mysql-plugin munge \
        mariadb-server >/dev/null
}

write_conf() {
    mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log"
    local cpus mem
    cpus=${BIDS_USB_SLURM_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}  # GNU nproc obeys OMP_NUM_THREADS
    mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512)) # MB, less what the OS keeps
    cat >"$STATE/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/slurmdbd.conf" # slurmdbd refuses a configuration that others can read
    cat >"$CONF" <<EOF
ClusterName=bidsusb
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups in containers: track processes by their parents, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
MinJobAge=60
KillWait=5
SlurmdTimeout=60
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_for() { # wait_for SECONDS COMMAND...: true once COMMAND succeeds
    local n=$(($1 * 2))
    shift
    for _ in $(seq 1 "$n"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

node_idle() { [ "$(sinfo -h -N -n "$NODE" -o %t)" = idle ]; }

fail() {
    log "$1; logs in $STATE/log"
    tail -n 20 "$STATE"/log/* >&2 || true
    stop_daemons quiet
    exit 70
}

start() {
    install_packages
    stop_daemons quiet
    write_conf
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge
        chown munge:munge /run/munge 2>/dev/null || true
        runuser -u munge -- munged 2>"$STATE/log/munged.err" || munged --force 2>>"$STATE/log/munged.err"
    fi
    if [ ! -d "$STATE/db/mysql" ]; then
        mariadb-install-db --user=root --datadir="$STATE/db" --auth-root-authentication-method=normal \
            --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
    fi
    mariadbd --user=root --datadir="$STATE/db" --socket="$STATE/mysql.sock" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --pid-file="$STATE/mysql.pid" --log-error="$STATE/log/mysql.err" \
        </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadb-admin --socket="$STATE/mysql.sock" ping || fail "MariaDB did not start"
    export SLURM_CONF="$CONF" # slurmdbd reads the slurmdbd.conf beside it
    slurmdbd
    wait_for 30 sacctmgr -n list cluster || fail "slurmdbd did not answer"
    # -c: a clean start, no jobs or node state carried over from an earlier cluster in STATE.
    slurmctld -c -f "$CONF"
    slurmd -f "$CONF" -N "$NODE"
    wait_for 60 node_idle || fail "node $NODE did not become idle"
    log "node $NODE idle (SLURM_CONF=$CONF)"
    echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
    local pid name
    for name in slurmd slurmctld slurmdbd mysql; do
        [ -f "$STATE/$name.pid" ] || continue
        pid=$(cat "$STATE/$name.pid")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 40); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.25
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$STATE/$name.pid"
    done
    [ "${1:-}" = quiet ] || log "stopped"
}

case "$action" in
start) start ;;
stop) stop_daemons ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 start|stop|env [STATE_DIR]" >&2
    exit 64
    ;;
esac
