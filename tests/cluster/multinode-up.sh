#!/usr/bin/env bash
# A real SLURM cluster of several nodes on one machine (Debian's slurm 22.05), beside the one-node
# test cluster: each node is a slurmd in its own network, UTS and mount namespace, with its own
# hostname and address on a bridge, sharing the filesystem as a cluster's nodes do. The controller
# and the login side live in the machine's own namespaces, at the bridge's address.
# Facts behind the choices: ../shared/notes/multinode-slurm-on-one-machine.md.
# Everything made here is recorded in $STATE/made (one line each), so that multinode-down.sh removes
# exactly that. Idempotent. Clients need SLURM_CONF=$STATE/etc/slurm.conf (printed at the end).
set -euo pipefail
STATE=${SLURM_MN_STATE_DIR:-/var/lib/prove-jobs-slurm-mn}
NODES=${SLURM_NODES:-2}
BRIDGE=pjbr0
NET=10.250.0  # .1 the controller and login side, .11, .12 ... the nodes
# How long a node may be silent before SLURM marks it down (default 300 s): short, for node-failure tests.
SLURMD_TIMEOUT=${SLURM_MN_SLURMD_TIMEOUT:-10}
start_ns=$(date +%s%N)
if [ "$(id -u)" != 0 ]; then echo "multinode-up: must run as root" >&2; exit 1; fi
if [ "$NODES" -lt 2 ] || [ "$NODES" -gt 9 ]; then echo "multinode-up: SLURM_NODES must be 2-9, not $NODES" >&2; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v nsenter >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client iproute2 util-linux >/dev/null
fi
# bindfs: the tests give each node its own FUSE view of a folder (a lock domain of its own)
command -v bindfs >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bindfs \
    >/dev/null 2>&1 || echo "multinode-up: bindfs not installed: the node-local lock tests will skip" >&2
# Namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN: say so in one line rather than half-building.
if ! unshare --net --uts --mount true 2>/dev/null; then
    echo "multinode-up: this machine does not allow network/UTS/mount namespaces (needs CAP_SYS_ADMIN, CAP_NET_ADMIN)" >&2
    exit 3
fi

mkdir -p "$STATE"/{ctld,log,run,spool,etc,munge}
touch "$STATE/made"
record() { grep -qxF "$1" "$STATE/made" || echo "$1" >> "$STATE/made"; }
host=$(hostname -s)
nodes=()
for i in $(seq 1 "$NODES"); do nodes+=("mn$i"); done
half_mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) / NODES ))

# The network: a bridge with the controller's address, one veth pair per node.
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    record "link $BRIDGE"
fi
[[ "$(ip addr show dev "$BRIDGE")" == *"$NET.1/24"* ]] || ip addr add "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for i in $(seq 1 "$NODES"); do
    node=mn$i
    if [ ! -e "/run/netns/$node" ]; then
        ip netns add "$node"
        record "netns $node"
    fi
    if ! ip link show "veth-$node" >/dev/null 2>&1; then
        ip link add "veth-$node" type veth peer name eth0 netns "$node"
        record "link veth-$node"
    fi
    ip link set "veth-$node" master "$BRIDGE" up
    [[ "$(ip -n "$node" addr show dev eth0)" == *"$NET.1$i/24"* ]] || ip -n "$node" addr add "$NET.1$i/24" dev eth0
    ip -n "$node" link set eth0 up
    ip -n "$node" link set lo up
done

# Names resolve to the nodes' real addresses inside the nodes: each node's own hosts file, bind-mounted
# over /etc/hosts there (the machine's own file untouched). Each node's own name comes first as 127.0.1.1, as
# Debian's installer writes it (the case that makes gloo bind to loopback, and prove-jobs must handle);
# SLURM_MN_OWN_NAME=address leaves that line out. A test may rewrite a node's file in place (`cat >`).
for i in $(seq 1 "$NODES"); do
    {
        echo "127.0.0.1 localhost"
        [ "${SLURM_MN_OWN_NAME:-loopback}" = loopback ] && echo "127.0.1.1 mn$i"
        echo "$NET.1 $host"
        for j in $(seq 1 "$NODES"); do echo "$NET.1$j mn$j"; done
    } > "$STATE/hosts-mn$i"
done

# A munged of its own (own key and socket) keeps this cluster apart from the one-node one.
munge_sock="$STATE/munge/munge.socket"
if ! { [ -f "$STATE/run/munged.pid" ] && kill -0 "$(cat "$STATE/run/munged.pid")" 2>/dev/null; }; then
    [ -f "$STATE/munge/munge.key" ] || /usr/sbin/mungekey --create --keyfile="$STATE/munge/munge.key"
    chown -R munge:munge "$STATE/munge" && chmod 400 "$STATE/munge/munge.key"
    chmod 711 "$STATE/munge"  # munged refuses a socket directory without o+x
    chmod 755 "$STATE"
    runuser -u munge -- /usr/sbin/munged --key-file="$STATE/munge/munge.key" --socket="$munge_sock" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    for _ in $(seq 1 50); do [ -f "$STATE/munge/munged.pid" ] && break; sleep 0.1; done
    cp "$STATE/munge/munged.pid" "$STATE/run/munged.pid"
fi

for i in $(seq 0 "$((NODES - 1))"); do [ -e "/dev/fakegpu$i" ] || mknod -m 666 "/dev/fakegpu$i" c 195 "$i"; done
new_conf=$(mktemp)
{
    cat <<CONF
ClusterName=provemn
SlurmctldHost=${host}(${NET}.1)
SlurmctldPort=6827
SlurmdPort=6828
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=${munge_sock},cred_expire=10
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=$SLURMD_TIMEOUT
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=5
MinJobAge=30
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
CONF
    for i in $(seq 1 "$NODES"); do
        echo "NodeName=mn$i NodeAddr=$NET.1$i CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=$half_mem Gres=gpu:1 State=UNKNOWN"
    done
    echo "PartitionName=gpu Nodes=mn[1-$NODES] Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=10"
    echo "PartitionName=urgent Nodes=mn[1-$NODES] MaxTime=INFINITE State=UP PriorityTier=2"
} > "$new_conf"
conf="$STATE/etc/slurm.conf"
restart=0
cmp -s "$new_conf" "$conf" || restart=1
mv "$new_conf" "$conf"
chmod 644 "$conf"
: > "$STATE/etc/gres.conf"
for i in $(seq 1 "$NODES"); do echo "NodeName=mn$i Name=gpu File=/dev/fakegpu$((i - 1))" >> "$STATE/etc/gres.conf"; done
rm -f "$STATE/etc/cgroup.conf"
export SLURM_CONF="$conf"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {
    local pidfile="$STATE/run/$1.pid" pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile"); kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
if [ "$restart" = 1 ]; then
    for node in "${nodes[@]}"; do stop "slurmd-$node"; done
    stop slurmctld
fi
alive "$STATE/run/slurmctld.pid" || /usr/sbin/slurmctld -f "$conf"
before=$(date +%s)
declare -A fresh=()
for node in "${nodes[@]}"; do
    alive "$STATE/run/slurmd-$node.pid" && continue
    fresh[$node]=1
    mkdir -p "$STATE/spool/$node"
    # nsenter, not `ip netns exec`: that remounts /sys and hides /sys/fs/cgroup, which slurmd needs.
    nsenter --net="/run/netns/$node" unshare --uts --mount --propagation slave \
        sh -c "mount --bind '$STATE/hosts-$node' /etc/hosts && hostname $node && exec /usr/sbin/slurmd -f '$conf'"
done

# Ready when every node is idle and registered by the slurmd just started.
for _ in $(seq 1 120); do
    ready=0
    for node in "${nodes[@]}"; do
        line=$(scontrol show node "$node" -o 2>/dev/null || true)
        state=$(sed -n 's/.*State=\([A-Z+]*\).*/\1/p' <<< "$line")
        started=$(grep -o 'SlurmdStartTime=[^ ]*' <<< "$line" | cut -d= -f2)
        case "$state" in IDLE|MIXED|ALLOCATED) ;; *) continue ;; esac
        # after a restart slurmctld first reports the saved state: wait for the new slurmd's registration
        if [ -n "${fresh[$node]:-}" ]; then
            [ -n "$started" ] && [ "$(date -d "$started" +%s 2>/dev/null || echo 0)" -ge "$before" ] || continue
        fi
        ready=$((ready + 1))
    done
    [ "$ready" = "$NODES" ] && break
    sleep 0.25
done
if [ "$ready" != "$NODES" ]; then
    echo "multinode-up: $ready of $NODES nodes idle; see $STATE/log" >&2
    sinfo -N >&2 || true
    tail -n 5 "$STATE"/log/*.log >&2 || true
    exit 1
fi
elapsed_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
echo "multinode-up: nodes ${nodes[*]} idle on $BRIDGE ($NET.0/24), ready in $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s"
echo "export SLURM_CONF=$conf"
