#!/usr/bin/env bash
# A real single-node SLURM cluster (Debian's slurm 22.05) for the integration tests.
# Idempotent; runs as root; no systemd: every daemon is started by its binary and recorded by
# pid file under $STATE, so that slurm-down.sh stops only what this script started.
# Facts behind the choices: ../shared/notes/slurm-on-this-machine.md (2 cores, no cgroups).
set -euo pipefail
STATE=${SLURM_STATE_DIR:-/var/lib/prove-jobs-slurm}
GPUS=${SLURM_FAKE_GPUS:-2}
start_ns=$(date +%s%N)

if [ "$(id -u)" != 0 ]; then echo "slurm-up: must run as root" >&2; exit 1; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
fi

mkdir -p "$STATE"/{ctld,d,log,run} /etc/slurm
chown slurm:slurm "$STATE/ctld" 2>/dev/null || true

host=$(hostname -s)
# The node's real shape (sockets/cores/threads/memory): with only CPUs= slurmd complains.
node_shape=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ UpTime=.*//')

for i in $(seq 0 $((GPUS - 1))); do
    [ -e /dev/fakegpu$i ] || mknod -m 666 /dev/fakegpu$i c 195 $i
done

cat > /etc/slurm/slurm.conf <<CONF
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
KillWait=5
MinJobAge=300
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=${host} NodeAddr=127.0.0.1 ${node_shape} Gres=gpu:${GPUS} State=UNKNOWN
PartitionName=gpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
: > /etc/slurm/gres.conf
for i in $(seq 0 $((GPUS - 1))); do echo "Name=gpu File=/dev/fakegpu$i" >> /etc/slurm/gres.conf; done
rm -f /etc/slurm/cgroup.conf  # 22.05 cannot disable cgroups by config: leave the file out

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# munge
if ! pgrep -x munged >/dev/null; then
    [ -f /etc/munge/munge.key ] || /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    pgrep -x -n munged > "$STATE/run/munged.pid"
fi

alive "$STATE/run/slurmctld.pid" || /usr/sbin/slurmctld
slurmd_before=$(date +%s)
alive "$STATE/run/slurmd.pid" || /usr/sbin/slurmd

# Ready when the node is idle AND registered by the slurmd just started (after a restart
# slurmctld first reports the saved state).
for _ in $(seq 1 120); do
    state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null || true)
    if [ "$state" = idle ] || [ "$state" = mixed ] || [ "$state" = allocated ]; then
        break
    fi
    sleep 0.5
done
if [ "$state" != idle ] && [ "$state" != mixed ] && [ "$state" != allocated ]; then
    echo "slurm-up: node $host not idle (state: ${state:-none}); see $STATE/log" >&2
    tail -5 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    exit 1
fi
elapsed_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
echo "slurm-up: node $host $state, $GPUS fake GPU(s), ready in $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s"
