#!/usr/bin/env bash
# make test-ansible: the role's machine scenarios, split/run.sh and ha/run.sh,
# at the same time (each has its own net, bridge and namespace prefix; the
# cache is built once, under its lock). Each scenario's output is kept and
# printed when both are done, passed ones first, each ending with its own JSON
# summary; the last line is the JSON summary of both:
#   {"test": "ansible", "passed": BOOL, "seconds": N, "scenarios": {"split": {...}, "ha": {...}}}
#
# SWA_SCENARIOS    which to run (default "split ha")
# SWA_SEQUENTIAL=1 one after the other instead of at once
# SWA_TIMEOUT      seconds each scenario may take (default 1800)
# SWA_NET_SPLIT, SWA_NET_HA   their nets (default 10.78.13 and 10.78.14; the
#                  bridge and namespace prefix follow the net, split/targets.sh)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SCENARIOS=${SWA_SCENARIOS:-split ha}
LOGS=$(mktemp -d /tmp/swa-test-ansible.XXXXXX)
declare -A PIDS=()
STARTED=$(date +%s)

# start NAME: the scenario NAME in the background, its output in $LOGS/NAME.log.
start() {
    local name=$1 net_variable=SWA_NET_${1^^}
    (
        unset SWA_NET SWA_BRIDGE SWA_PREFIX
        [ -n "${!net_variable:-}" ] && export SWA_NET=${!net_variable}
        # TERM to timeout reaches run.sh, which cleans up on its way out.
        exec timeout "${SWA_TIMEOUT:-1800}" bash "$HERE/$name/run.sh" > "$LOGS/$name.log" 2>&1
    ) &
    PIDS[$name]=$!
}

# report: each scenario's output, then the summary of all; fails unless all passed.
# A failed scenario's output comes after the passed ones', so that its last lines
# (what failed, then its summary) stand just above the summary of all, where a
# CI log cut to its tail still shows them.
report() {
    local name summary passed=true summaries="" failed=""
    for name in $SCENARIOS; do
        [ -f "$LOGS/$name.log" ] || continue
        summary=$(tail -n 1 "$LOGS/$name.log")
        case "$summary" in
            '{"test": "ansible-'*) ;;
            *) summary='{"passed": false, "failed_phase": "no summary (killed?)"}' ;;
        esac
        case "$summary" in
            *'"passed": true'*) printf '=== %s\n' "$name"; cat "$LOGS/$name.log" ;;
            *) passed=false; failed="$failed $name" ;;
        esac
        summaries="$summaries\"$name\": $summary, "
    done
    for name in $failed; do
        printf '=== %s (failed)\n' "$name"
        cat "$LOGS/$name.log"
    done
    rm -rf "$LOGS"
    printf '{"test": "ansible", "passed": %s, "seconds": %s, "scenarios": {%s}}\n' \
        "$passed" "$(($(date +%s) - STARTED))" "${summaries%, }"
    [ "$passed" = true ]
}

stop() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    wait
    report
    exit 143
}
trap stop TERM INT

for name in $SCENARIOS; do
    [ -f "$HERE/$name/run.sh" ] || { echo "no scenario $name" >&2; exit 2; }
    start "$name"
    [ -n "${SWA_SEQUENTIAL:-}" ] && wait "${PIDS[$name]}"
done
wait
report
