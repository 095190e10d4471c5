#!/usr/bin/env bash
# Bring up / tear down a real single-node SLURM cluster (with slurmdbd
# accounting, so `sacct` works) on 127.0.0.1, from Debian 12 packages.
# No systemd needed: every daemon is started directly and tracked by pid file.
#
#   tests/slurm/cluster.sh start    # install if needed, start, wait for node idle
#   tests/slurm/cluster.sh stop     # cancel jobs, stop every daemon started here
#   tests/slurm/cluster.sh status   # show daemons / sinfo
#
# Must run as root. Environment knobs:
#   CNNSCOPE_SLURM_STATE   state dir (default /tmp/cnnscope-slurm)
#   CNNSCOPE_SLURM_ACCOUNT slurm account created for root (default cnnscope)
#
# Config files are written to /etc/slurm (the path the Debian clients read),
# everything else (mariadb datadir on port 3307, spool, logs, pids) lives in
# the state dir, so the system's own MariaDB/Slurm setup is not touched.
set -euo pipefail

STATE=${CNNSCOPE_SLURM_STATE:-/tmp/cnnscope-slurm}
ACCOUNT=${CNNSCOPE_SLURM_ACCOUNT:-cnnscope}
CLUSTER=cnnscope
DB_PORT=3307
DB_PASS=cnnscope-slurmdb
ETC=/etc/slurm
RUN=$STATE/run
LOG=$STATE/log

log() { printf '[cluster.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for SECONDS DESCRIPTION CMD... : poll CMD until it succeeds
wait_for() {
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            die "timed out after ${secs}s waiting for $what"
        fi
        sleep 0.5
    done
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start_daemon NAME COMMAND...: run COMMAND (which daemonises, writing $RUN/NAME.pid) unless it runs.
start_daemon() {
    local name=$1
    shift
    if pid_alive "$RUN/$name.pid"; then
        log "$name already running"
    else
        log "starting $name"
        "$@" </dev/null >>"$LOG/$name.out" 2>&1
    fi
}

# ---------------------------------------------------------------- install
install_packages() {
    local pkgs=(slurm-wlm slurmdbd munge mariadb-server) missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # policy-rc.d (present in Docker-like images) keeps the init scripts
        # from auto-starting services; we start everything ourselves anyway.
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$STATE/apt.log" 2>&1 \
            || { tail -20 "$STATE/apt.log" >&2; die "apt-get install failed"; }
    else
        log "packages already installed"
    fi
}


# ---------------------------------------------------------------- munge
start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating munge key"
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running"
        return 0
    fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    wait_for 20 munged bash -c 'munge -n | unmunge'
    cp /run/munge/munged.pid "$RUN/munged.pid"   # marks "started by us"
}

# ---------------------------------------------------------------- mariadb
mysql_cli() { mariadb --no-defaults -uroot --socket="$RUN/mysqld.sock" "$@"; }

start_mariadb() {
    local datadir=$STATE/mysql
    if pid_alive "$RUN/mysqld.pid"; then
        log "mariadb already running"
    else
        if [[ ! -d $datadir/mysql ]]; then
            log "initialising private mariadb datadir $datadir"
            install -d -o mysql -g mysql "$datadir"
            mariadb-install-db --no-defaults --user=mysql --datadir="$datadir" \
                --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 \
                || { tail -20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
        fi
        chown mysql:mysql "$RUN" "$LOG"
        log "starting mariadbd on 127.0.0.1:$DB_PORT"
        setsid nohup /usr/sbin/mariadbd --no-defaults --user=mysql \
            --datadir="$datadir" --bind-address=127.0.0.1 --port=$DB_PORT \
            --socket="$RUN/mysqld.sock" --pid-file="$RUN/mysqld.pid" \
            --log-error="$LOG/mariadb.log" \
            --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
            --innodb-log-file-size=64M --max-allowed-packet=16M \
            </dev/null >>"$LOG/mariadb.out" 2>&1 &
        wait_for 60 mariadb mysql_cli -e 'SELECT 1'
    fi
    mysql_cli <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

# ---------------------------------------------------------------- configs
write_configs() {
    local hw cpus boards sockets cores threads mem
    hw=$(slurmd -C | head -1)
    field() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" <<<"$hw"; }
    cpus=$(field CPUs); boards=$(field Boards); sockets=$(field SocketsPerBoard)
    cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore); mem=$(field RealMemory)
    [[ -n $cpus && -n $mem ]] || die "could not parse 'slurmd -C': $hw"
    mkdir -p "$ETC"

    cat >"$ETC/slurmdbd.conf" <<EOF
# generated by $0
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"

    cat >"$ETC/slurm.conf" <<EOF
# generated by $0
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=60
Waittime=0
SchedulerParameters=batch_sched_delay=1,sched_min_interval=100000
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations
# jobs without --mem must not grab the whole node (CR_Core_Memory)
DefMemPerCPU=$((mem / cpus))
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    log "wrote $ETC/slurm.conf (CPUs=$cpus RealMemory=${mem}MB) and slurmdbd.conf"
}

# ---------------------------------------------------------------- slurm
start_slurmdbd() {
    start_daemon slurmdbd /usr/sbin/slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
}

register_accounting() {
    local u users=(root)
    [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]] && users+=("$SUDO_USER")
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
        || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
        || sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" \
            Description="cnnscope test account" Organization=cnnscope >/dev/null
    for u in "${users[@]}"; do
        sacctmgr -n -P list assoc where user="$u" account="$ACCOUNT" format=user | grep -qx "$u" \
            || sacctmgr -i add user "$u" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
    done
    log "accounting: cluster=$CLUSTER account=$ACCOUNT users=${users[*]}"
}

start_slurm_daemons() {
    start_daemon slurmctld /usr/sbin/slurmctld
    wait_for 60 slurmctld scontrol ping
    start_daemon slurmd /usr/sbin/slurmd -N localhost
}

node_idle() { [[ $(sinfo -h -n localhost -o %T 2>/dev/null) == idle ]]; }

wait_node_idle() {
    local end=$((SECONDS + 90)) st
    while ! node_idle; do
        st=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
        case $st in
            down* | drain* | fail*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
        esac
        ((SECONDS < end)) || { sinfo -R >&2 || true; die "node never became idle (state: $st)"; }
        sleep 0.5
    done
    log "node localhost is idle"
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    mkdir -p "$STATE" "$RUN" "$LOG" "$STATE/spool/slurmctld" "$STATE/spool/slurmd"
    local t0=$SECONDS
    install_packages
    log "install phase: $((SECONDS - t0))s"
    local t1=$SECONDS
    start_munge
    start_mariadb
    write_configs
    start_slurmdbd
    register_accounting
    start_slurm_daemons
    wait_node_idle
    log "start phase: $((SECONDS - t1))s"
    sinfo
}

# ---------------------------------------------------------------- stop
stop_pidfile() { # NAME PIDFILE
    local name=$1 pf=$2 pid i
    [[ -s $pf ]] || return 0
    pid=$(cat "$pf")
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not exit, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pf"
}

cmd_stop() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    # Cancel remaining jobs so their slurmstepd processes exit cleanly.
    if pid_alive "$RUN/slurmctld.pid" && [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
        log "cancelling remaining jobs"
        scancel --full $(squeue -h -o %i) 2>/dev/null || true
        local end=$((SECONDS + 15))
        while [[ -n $(squeue -h -o %i 2>/dev/null) ]] && ((SECONDS < end)); do sleep 0.5; done
    fi
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    stop_pidfile mariadbd "$RUN/mysqld.pid"
    # munged only if this script started it
    if [[ -s $RUN/munged.pid ]]; then
        stop_pidfile munged "$RUN/munged.pid"
        rm -f /run/munge/munged.pid
    fi
    # Orphaned job step daemons (only exist if a job outlived scancel).
    local p
    for p in $(pgrep -x slurmstepd || true); do
        log "killing leftover slurmstepd pid $p"
        kill -KILL "$p" 2>/dev/null || true
    done
    log "stopped"
}

cmd_status() {
    local n
    for n in munged mysqld slurmdbd slurmctld slurmd; do
        if pid_alive "$RUN/$n.pid"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"
        else echo "$n: not running (per $RUN/$n.pid)"; fi
    done
    sinfo 2>/dev/null || true
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
