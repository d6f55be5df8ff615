# The harness the role's machine scenarios share (split/run.sh, ha/run.sh):
# phases and the JSON summary, clean-up on exit, the wheels, ansible-playbook,
# the sink, the tenant and the campaigns. Sourced after the scenario set
#   SCENARIO  its name: the summary's "test" is ansible-$SCENARIO, a failed
#             run's logs go to $CACHE/last-failed-$SCENARIO
#   DOMAIN    the mail domain the sink answers for
# and any SWA_* it needs (SWA_NET, SWA_EXTRA_PACKAGES); sources
# split/targets.sh (the machines). Everything the scenario starts with
# start_target, add_namespace and start_sink is removed on exit, also on
# failure (SWA_KEEP=1 keeps the machines of a failed run).

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${SWA_REPO:-$(cd "$LIB_DIR/../../.." && pwd)}
CACHE=${SWA_CACHE:-/var/tmp/swa-e2e}
RUN=$CACHE/run-$SCENARIO.$$
VENV=${SWA_VENV:-$REPO/.venv}
RECIPIENTS=${SWA_RECIPIENTS:-20}
# What a failed run's journals show (a unit a host lacks shows nothing).
JOURNAL_UNITS="swiftmail-* postgresql@15-main redis-server patroni etcd redis-sentinel haproxy"

# shellcheck source=split/targets.sh
. "$LIB_DIR/split/targets.sh"

PHASE=setup
PHASE_START=$(date +%s)
TIMES=""
RESULTS=""
SINK_PID=""

say() { printf '== %s\n' "$*"; }

# phase NAME: end the current phase (its seconds go to the summary), start NAME.
phase() {
    local now
    now=$(date +%s)
    TIMES="$TIMES\"$PHASE\": $((now - PHASE_START)), "
    PHASE=$1
    PHASE_START=$now
    say "$1"
}

# result NAME JSON: a measured figure for the summary line.
result() { RESULTS="$RESULTS\"$1\": $2, "; }

on_exit() {
    local status=$? failed=null
    set +e
    [ "$status" = 0 ] || failed="\"$PHASE\""
    phase cleanup
    if [ "$status" != 0 ]; then
        local name units="" unit
        for unit in $JOURNAL_UNITS; do units="$units -u '$unit'"; done
        for name in "${!TARGET_PID[@]}"; do
            ssh_to "$(awk -v n="$name" '$2 == n {print $1}' "$RUN/$name/etc/hosts")" \
                "journalctl --no-pager -n 300 $units" > "$RUN/$name.journal.log" 2>&1
        done
        local failed_logs=$CACHE/last-failed-$SCENARIO
        rm -rf "$failed_logs"
        mkdir -p "$failed_logs"
        find "$RUN" -maxdepth 1 -name '*.log' -exec cp {} "$failed_logs/" \; 2>/dev/null || true
        echo "logs of this run: $failed_logs" >&2
        if [ -n "${SWA_KEEP:-}" ]; then
            echo "SWA_KEEP: machines left running (ssh -i $RUN/id_ed25519 root@$NET.x)" >&2
            exit "$status"
        fi
    fi
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
    stop_targets
    rm -rf "$RUN"
    phase done
    printf '{"test": "ansible-%s", "passed": %s, "failed_phase": %s, %s"seconds": {%s}}\n' \
        "$SCENARIO" "$([ "$status" = 0 ] && echo true || echo false)" "$failed" "$RESULTS" \
        "${TIMES%, }"
    exit "$status"
}

# harness_start: the exit trap, the checks of what the run needs, a fresh $RUN,
# and no leftovers of an earlier, killed run on this net.
harness_start() {
    trap on_exit EXIT
    # `timeout` (make test-ansible) sends TERM: exit through on_exit, which cleans up.
    trap 'exit 143' TERM INT
    [ "$(id -u)" = 0 ] || { echo "make test-ansible needs root (network namespaces, nspawn)" >&2; exit 1; }
    local tool
    for tool in debootstrap systemd-nspawn apt-ftparchive; do
        command -v "$tool" > /dev/null || { echo "missing $tool (bash .ci/system-packages)" >&2; exit 1; }
    done
    mkdir -p "$RUN"
    remove_leftovers
}

# build_wheel VERSION OUT [MIGRATION]: the SwiftMail wheel of this tree, with
# VERSION and, if given, one more migration file (the upgrade's).
build_wheel() {
    local source=$RUN/src-$1
    mkdir -p "$source" "$2"
    tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
        --exclude=./node_modules -cf - . | tar -C "$source" -xf -
    sed -i "s/^version = .*/version = $1/" "$source/setup.cfg"
    [ -n "${3:-}" ] && cp "$3" "$source/swiftmail_core/migrations/"
    "$VENV/bin/pip" wheel -q --no-deps --no-build-isolation -w "$2" "$source" > "$RUN/wheel-$1.log" 2>&1 \
        || { tail -20 "$RUN/wheel-$1.log"; return 1; }
    rm -rf "$source"
}

# prepare_wheels DIST: the dependencies of the wheel in DIST as wheels ($WHEELS),
# cached per set of requirements and Debian tree: resolved by the targets' own
# Python (Debian 12's 3.11.2 needs wheels that a newer 3.11 does not, e.g.
# async-timeout for redis), in a chroot of the tree. Call with the cache
# locked (-x).
prepare_wheels() {
    local key work=$BASE/tmp/e2e-wheels
    key=$(sed -n '/^install_requires/,/^\[/p' "$REPO/setup.cfg" | sha256sum | cut -c1-12)
    WHEELS=$CACHE/wheels-$CACHE_KEY-$key
    if [ ! -f "$WHEELS/.complete" ]; then
        rm -rf "$WHEELS" "$work"
        mkdir -p "$work"
        cp "$1"/swiftmail-*.whl "$work/"
        # Trust what the host trusts (package proxies with their own CA).
        cp /etc/ssl/certs/ca-certificates.crt "$BASE/etc/ssl/certs/ca-certificates.crt"
        env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null chroot "$BASE" /bin/sh -c 'python3 -m venv /tmp/e2e-wheels/venv &&
            /tmp/e2e-wheels/venv/bin/pip install -q wheel &&
            /tmp/e2e-wheels/venv/bin/pip wheel -q -w /tmp/e2e-wheels/out /tmp/e2e-wheels/swiftmail-*.whl' \
            > "$RUN/wheels.log" 2>&1 || { tail -20 "$RUN/wheels.log"; rm -rf "$work"; return 1; }
        rm -f "$work"/out/swiftmail-*.whl
        mv "$work/out" "$WHEELS"
        rm -rf "$work"
        touch "$WHEELS/.complete"
    fi
}

# play NAME [ARGS]: site.yml on $RUN/inventory; the output goes to $RUN/NAME.log,
# the recap (or, on failure, the end of it) to stdout.
play() {
    local log=$RUN/$1.log
    shift
    (cd "$REPO/contrib/ansible" && ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
        ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_RETRY_FILES_ENABLED=0 \
        ANSIBLE_LOCAL_TEMP=$RUN/ansible-tmp ANSIBLE_HOME=$RUN/ansible-home \
        "$VENV/bin/ansible-playbook" -i "$RUN/inventory/hosts" site.yml "$@") > "$log" 2>&1 \
        || { tail -40 "$log"; return 1; }
    sed -n '/PLAY RECAP/,$p' "$log"
}

# changed_total LOG: the sum of changed= over the recap.
changed_total() { sed -n '/PLAY RECAP/,$p' "$1" | grep -o 'changed=[0-9]*' | cut -d= -f2 | awk "{s+=\$1} END {print s+0}"; }

# expect_unchanged NAME: the play NAME changed nothing (second_run_changed in
# the summary); otherwise name the tasks that changed and fail.
expect_unchanged() {
    local changed
    changed=$(changed_total "$RUN/$1.log")
    result second_run_changed "$changed"
    [ "$changed" = 0 ] || { echo "the second run changed something:" >&2;
        grep -B1 '^changed' "$RUN/$1.log" | grep TASK >&2; return 1; }
}

# closed_from NAMESPACE ADDRESS PORT: true when a connection does not open in 3 s.
closed_from() { ! ip netns exec "$PREFIX$1" timeout 3 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }

# start_sink ADDRESS: the namespace "sink" running tests/cluster/sink_host.py
# (SMTP on 25 for $DOMAIN, the DNS server whose MX names it); sets DNS_PORT.
start_sink() {
    add_namespace sink "$1"
    ip netns exec "${PREFIX}sink" env PYTHONPATH="$REPO" "$VENV/bin/python" -m tests.cluster.sink_host \
        "$1" "$DOMAIN" "$RUN/sink-deliveries.log" > "$RUN/sink.log" 2>&1 &
    SINK_PID=$!
    local _
    for _ in $(seq 1 30); do grep -q dns_port "$RUN/sink.log" && break; sleep 0.5; done
    DNS_PORT=$(grep -o '"dns_port": [0-9]*' "$RUN/sink.log" | grep -o '[0-9]*$')
    [ -n "$DNS_PORT" ] || { echo "the sink did not start:" >&2; tail -20 "$RUN/sink.log" >&2; return 1; }
}

# wait_ready ADDRESS [SECONDS]: wait (default 30 s) until the API on ADDRESS:8000 is ready.
wait_ready() {
    local _
    for _ in $(seq 1 "${2:-30}"); do
        curl -fsS -m 3 "http://$1:8000/readyz" > /dev/null 2>&1 && return 0
        sleep 1
    done
    # Not fatal: the campaign's first call says what is wrong.
    return 0
}

# create_tenant APP: the tenant e2e and an admin API key for it ($KEY), made on APP.
create_tenant() {
    ssh_to "$1" 'swiftmail tenant create e2e' > /dev/null
    KEY=$(ssh_to "$1" 'swiftmail apikey create --tenant e2e --role admin' | tail -1)
    [ -n "$KEY" ] || { echo "no API key printed" >&2; return 1; }
}

# campaign NAME APP RELAY [SECONDS [RETRY_SECONDS]]: $RECIPIENTS recipients
# through the API on APP; every one must reach the sink (within SECONDS,
# default 180) from RELAY. With RETRY_SECONDS, its first API call is tried
# again while the API is unavailable for that long (its attempts are in the
# output). Printed, and NAME in the summary.
campaign() {
    local name=$1 app=$2 relay=$3 out
    out=$(python3 "$LIB_DIR/split/campaign.py" "http://$app:8000" "$KEY" "$RECIPIENTS" "$DOMAIN" \
        "$RUN/sink-deliveries.log" "${4:-180}" "${5:-0}") || { echo "$out"; return 1; }
    echo "$out"
    result "$name" "$out"
    echo "$out" | grep -q "\"$relay\"" || { echo "the sink did not get the mail from the relay host $relay" >&2; return 1; }
}
