#!/usr/bin/env bash
# Stop the cluster that tests/slurm/slurm-up.sh DIR started: SIGTERM each daemon recorded in
# DIR/pids, newest first, wait (bounded) for it to exit, then SIGKILL what is left.
# Only those PIDs are signalled. A daemon that exited but was not reaped (a zombie: this
# sandbox's PID 1 does not reap) counts as stopped. Safe to call twice.
set -uo pipefail

D=${1:?usage: slurm-down.sh DIR}
TIMEOUT=${SLURM_DOWN_TIMEOUT:-20}
[ -f "$D/pids" ] || exit 0

alive() { # a PID runs and is not a zombie
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $state != Z* ]]
}

tac "$D/pids" | while read -r name pid; do
    [ -n "$pid" ] || continue
    alive "$pid" || continue
    kill -TERM "$pid" 2>/dev/null
    end=$((SECONDS + TIMEOUT))
    while alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.2; done
    if alive "$pid"; then
        echo "slurm-down: $name ($pid) ignored SIGTERM for ${TIMEOUT}s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
done
mv "$D/pids" "$D/pids.stopped"
