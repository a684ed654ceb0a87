#!/usr/bin/env bash
# Undo multinode-up.sh: its daemons by their pid files, then exactly the namespaces, links and
# mounts it recorded in $STATE/made. The one-node cluster and anything else on the machine survive.
set -uo pipefail
STATE=${SLURM_MN_STATE_DIR:-/var/lib/prove-jobs-slurm-mn}
[ -d "$STATE" ] || exit 0
stop() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        echo "multinode-down: stopped $(basename "$pidfile" .pid) ($pid)"
    fi
    rm -f "$pidfile"
}
for pidfile in "$STATE"/run/slurmd-*.pid; do [ -e "$pidfile" ] && stop "$pidfile"; done
stop "$STATE/run/slurmctld.pid"
stop "$STATE/run/munged.pid"
# A job step left in a node's namespace (slurmstepd outlives slurmd) would keep the namespace alive.
if [ -f "$STATE/made" ]; then
    tac "$STATE/made" | while read -r kind name; do
        case "$kind" in
            mount) umount -l "$name" 2>/dev/null && echo "multinode-down: unmounted $name" ;;
            netns)
                for pid in $(ip netns pids "$name" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
                ip netns del "$name" 2>/dev/null && echo "multinode-down: removed netns $name" ;;
            link) ip link del "$name" 2>/dev/null && echo "multinode-down: removed link $name" ;;
        esac
    done
    : > "$STATE/made"
fi
