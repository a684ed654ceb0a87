#!/usr/bin/env bash
# Stop the daemons slurm-up.sh started, by their pid files (never by name: a developer's own
# SLURM or munge must survive).
set -uo pipefail
STATE=${SLURM_STATE_DIR:-/var/lib/prove-jobs-slurm}
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    pidfile="$STATE/run/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "slurm-down: stopped $daemon ($pid)"
    fi
    rm -f "$pidfile"
done
