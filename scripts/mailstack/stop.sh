#!/usr/bin/env bash
# Stop the mail stack that start.sh started in DIR, by PID only (never by process name), and
# wait until every one of its processes has exited.
#
# Usage:  stop.sh [--fast] DIR
#   default  graceful: 'postfix stop' and SIGTERM to Dovecot's master. Dovecot's master waits
#            for its children, SIGQUITs them and sleeps 1 s by design: 1.2-2.5 s.
#   --fast   SIGKILL to every process of the stack at once (~0.1 s). Fine for a throw-away
#            test stack; a later start.sh in the same DIR works.
# Exit status 0 when nothing of the stack is left running. DIR is kept (logs); remove it yourself.
set -uo pipefail

FAST=0
if [ "${1:-}" = --fast ]; then FAST=1; shift; fi
[ $# -eq 1 ] || { echo "usage: $0 [--fast] DIR" >&2; exit 2; }
[ -d "$1" ] || { echo "stop.sh: no such directory $1" >&2; exit 0; }
DIR=$(cd "$1" && pwd)
log() { echo "stop.sh: $*" >&2; }
t0=$(date +%s%N)

# Alive = exists and is not a zombie. 'kill -0' sees zombies as alive, and in containers PID 1
# may reap orphans only after seconds (pitfall 13).
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}
# A stale PID file's PID may belong to something else by now.
is_cmd() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

descendants() {
    local k
    for k in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$k"
        descendants "$k"
    done
}

# wait_gone SECONDS PID...: wait until all PIDs have exited; SIGKILL leftovers.
wait_gone() {
    local limit=$1 p left
    shift
    for _ in $(seq 1 $((limit * 50))); do
        left=
        for p in "$@"; do alive "$p" && left="$left $p"; done
        [ -z "$left" ] && return 0
        sleep 0.02
    done
    log "still running after ${limit}s, sending SIGKILL to:$left"
    for p in $left; do kill -KILL "$p" 2>/dev/null; done
    return 1
}

status=0
# Collect all PIDs first: once a master is gone, its children are re-parented and can no
# longer be found through it.
postfix_pids=
if [ -s "$DIR/postfix/spool/pid/master.pid" ]; then
    pid=$(tr -dc 0-9 < "$DIR/postfix/spool/pid/master.pid")
    if [ -n "$pid" ] && is_cmd "$pid" master; then
        postfix_pids="$pid $(descendants "$pid")"
    fi
fi
dovecot_pids=
if [ -s "$DIR/run/dovecot.pid" ]; then
    pid=$(cat "$DIR/run/dovecot.pid")
    if is_cmd "$pid" dovecot; then
        dovecot_pids="$pid $(descendants "$pid")"
    fi
fi

if [ "$FAST" = 1 ]; then
    # shellcheck disable=SC2086
    for p in $postfix_pids $dovecot_pids; do kill -KILL "$p" 2>/dev/null; done
    # shellcheck disable=SC2086
    wait_gone 5 $postfix_pids $dovecot_pids || status=1
else
    if [ -n "$postfix_pids" ]; then
        postfix -c "$DIR/etc/postfix" stop >>"$DIR/log/postfix.stdout" 2>&1 \
            || kill -TERM "${postfix_pids%% *}" 2>/dev/null
    fi
    if [ -n "$dovecot_pids" ]; then
        kill -TERM "${dovecot_pids%% *}" 2>/dev/null
    fi
    # shellcheck disable=SC2086
    wait_gone 10 $postfix_pids $dovecot_pids || status=1
fi
rm -f "$DIR/run/dovecot.pid" "$DIR/run/dovecot/master.pid" "$DIR/postfix/spool/pid/master.pid"

log "stopped in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
exit $status
