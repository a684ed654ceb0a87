#!/usr/bin/env bash
# A real single-node SLURM cluster (Debian's slurm 22.05) for the integration tests.
# Idempotent; runs as root; no systemd: every daemon is started by its binary and recorded by
# pid file under $STATE, so that slurm-down.sh stops only what this script started.
# Facts behind the choices: ../shared/notes/slurm-on-this-machine.md (2 cores, no cgroups).
set -euo pipefail
STATE=${SLURM_STATE_DIR:-/var/lib/prove-jobs-slurm}
GPUS=${SLURM_FAKE_GPUS:-2}
# 1: real accounting (slurmdbd + a local MariaDB), so that sacct answers; 0: accounting off,
# as on many clusters (sacct: "Slurm accounting storage is disabled"). The tests run under both.
# Unset: as the running cluster has it (a restart keeps the mode), else off.
if [ -z "${SLURM_ACCOUNTING:-}" ] && grep -qs '^AccountingStorageType=accounting_storage/slurmdbd' /etc/slurm/slurm.conf; then
    ACCOUNTING=1
else
    ACCOUNTING=${SLURM_ACCOUNTING:-0}
fi
# How long squeue remembers a finished job (SLURM's default is 300 s): short here, so that the
# tests see what a user sees later on, when only accounting or the run's metadata know the end.
MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-30}
start_ns=$(date +%s%N)

if [ "$(id -u)" != 0 ]; then echo "slurm-up: must run as root" >&2; exit 1; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
fi
if [ "$ACCOUNTING" = 1 ] && ! { command -v slurmdbd && command -v mariadbd; } >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends slurmdbd mariadb-server >/dev/null 2>&1 || {
        apt-get update -qq && apt-get install -y -qq --no-install-recommends slurmdbd mariadb-server >/dev/null; }
fi

mkdir -p "$STATE"/{ctld,d,log,run} /etc/slurm
chown slurm:slurm "$STATE/ctld" 2>/dev/null || true

host=$(hostname -s)
# The node's real shape (sockets/cores/threads/memory): with only CPUs= slurmd complains.
node_shape=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ UpTime=.*//')

for i in $(seq 0 $((GPUS - 1))); do
    [ -e /dev/fakegpu$i ] || mknod -m 666 /dev/fakegpu$i c 195 $i
done

if [ "$ACCOUNTING" = 1 ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none"
else
    accounting="AccountingStorageType=accounting_storage/none"
fi

new_conf=$(mktemp)
cat > "$new_conf" <<CONF
ClusterName=prove
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MailProg=/bin/true
ReturnToService=2
SchedulerParameters=sched_interval=2,bf_interval=2
# Small, so that the test of a sweep larger than it (split into several arrays) stays small too.
MaxArraySize=4
KillWait=5
MinJobAge=$MIN_JOB_AGE
GresTypes=gpu
$accounting
JobCompType=jobcomp/none
# Preemption that reaches submitit: a job of the higher tier requeues one of the lower tier, which
# first gets its --signal (USR2) and GraceTime seconds to checkpoint. Without
# preempt_send_user_signal the victim only gets SIGTERM (which submitit ignores).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=${host} NodeAddr=127.0.0.1 ${node_shape} Gres=gpu:${GPUS} State=UNKNOWN
PartitionName=gpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=10
PartitionName=urgent Nodes=${host} MaxTime=INFINITE State=UP PriorityTier=2
# As sites whose preemption cancels rather than requeues: the victim gets its signal, GraceTime, then is cancelled.
PartitionName=gpu-cancel Nodes=${host} MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=10 PreemptMode=CANCEL
CONF
: > /etc/slurm/gres.conf
for i in $(seq 0 $((GPUS - 1))); do echo "Name=gpu File=/dev/fakegpu$i" >> /etc/slurm/gres.conf; done
rm -f /etc/slurm/cgroup.conf  # 22.05 cannot disable cgroups by config: leave the file out

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # by pid file only: a developer's own daemons must survive
    local pidfile="$STATE/run/$1.pid" pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile"); kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

# A changed configuration (accounting switched on or off) restarts the daemons started here.
if ! cmp -s "$new_conf" /etc/slurm/slurm.conf; then
    stop slurmd; stop slurmctld
fi
[ "$ACCOUNTING" = 1 ] || { stop slurmdbd; stop mariadbd; }
mv "$new_conf" /etc/slurm/slurm.conf
chmod 644 /etc/slurm/slurm.conf

# munge
# munge: asked through its default socket, not found by name (the two-node cluster runs a munged of its own)
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -f /etc/munge/munge.key ] || /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$STATE/run/munged.pid"  # its own pid file: another munged may run beside it
fi

if [ "$ACCOUNTING" = 1 ]; then
    if ! alive "$STATE/run/mariadbd.pid"; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
            --pid-file=/run/mysqld/prove-jobs.pid --skip-networking=0 --bind-address=127.0.0.1 \
            >"$STATE/log/mariadbd.log" 2>&1 < /dev/null &
        for _ in $(seq 1 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
        cp /run/mysqld/prove-jobs.pid "$STATE/run/mariadbd.pid"  # mariadbd (user mysql) cannot write here
        mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'prove-jobs-test';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    fi
    cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=prove-jobs-test
StorageLoc=slurm_acct_db
CONF
    chmod 600 /etc/slurm/slurmdbd.conf
    if ! alive "$STATE/run/slurmdbd.pid"; then
        /usr/sbin/slurmdbd
        for _ in $(seq 1 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
    fi
    sacctmgr -n list cluster format=cluster | grep -qw prove || sacctmgr -i add cluster prove >/dev/null
fi

alive "$STATE/run/slurmctld.pid" || /usr/sbin/slurmctld
if alive "$STATE/run/slurmd.pid"; then slurmd_before=0; else slurmd_before=$(date +%s); /usr/sbin/slurmd; fi

# Ready when the node is idle AND registered by the slurmd just started (after a restart
# slurmctld first reports the saved state).
for _ in $(seq 1 120); do
    state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null | sort -u | head -1 || true)
    if [ "$state" = idle ] || [ "$state" = mixed ] || [ "$state" = allocated ]; then
        started=$(scontrol show node "$host" -o 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
        [ -n "$started" ] && [ "$(date -d "$started" +%s 2>/dev/null || echo 0)" -ge "$slurmd_before" ] && break
    fi
    sleep 0.5
done
if [ "$state" != idle ] && [ "$state" != mixed ] && [ "$state" != allocated ]; then
    echo "slurm-up: node $host not idle (state: ${state:-none}); see $STATE/log" >&2
    tail -n 5 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    exit 1
fi
elapsed_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
echo "slurm-up: node $host $state, $GPUS fake GPU(s), accounting $([ "$ACCOUNTING" = 1 ] && echo on || echo off), ready in $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s"
