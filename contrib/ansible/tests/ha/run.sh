#!/usr/bin/env bash
# make test-ansible, HA scenario: the role's high-availability groups on real
# Debian 12 machines, then the loss of the PostgreSQL primary's machine.
#
# Targets (systemd-nspawn machines from ../split/targets.sh, each in its own
# network namespace on the bridge swhabr0, reached over SSH):
#   db1    10.78.14.11  etcd, Patroni (PostgreSQL 15), Redis (first master), Sentinel
#   db2    10.78.14.12  etcd, Patroni (PostgreSQL 15), Redis (replica), Sentinel
#   db3    10.78.14.13  etcd, Sentinel (the third vote of each quorum)
#   app    10.78.14.21  API, worker, tracking drainer; runs the migrations
#   relay  10.78.14.22  the relay
#   sink   10.78.14.30  not a machine: tests/cluster/sink_host.py (SMTP and DNS)
# SwiftMail hosts use database_url postgresql://db1,db2/swiftmail?target_session_attrs=read-write
# and the three Sentinels. Checked: the install twice (the second changed=0),
# a campaign from the API through the worker and the relay to the sink, the
# cluster ports (etcd, Patroni's REST API, PostgreSQL, Redis, Sentinel)
# closed to the sink, then the Patroni leader's machine loses its network
# and is powered off: Patroni promotes the other PostgreSQL host (and, when
# it held the Redis master too, Sentinel promotes the Redis replica) and a
# second campaign reaches the sink.
#
# Needs what ../split/run.sh needs. Its own network (SWA_NET, default
# 10.78.14), bridge and namespace prefix, so it can run next to the split
# scenario; the cache ($SWA_CACHE) is shared with it (the package repository
# adds Patroni, etcd and Sentinel). Everything is removed at the end, also on
# failure. The last line is a JSON summary.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${SWA_REPO:-$(cd "$HERE/../../../.." && pwd)}
CACHE=${SWA_CACHE:-/var/tmp/swa-e2e}
RUN=$CACHE/run-ha.$$
VENV=${SWA_VENV:-$REPO/.venv}
RECIPIENTS=${SWA_RECIPIENTS:-20}
DOMAIN=ha-e2e.test
SUPERUSER_PASSWORD=e2e-postgres-password-$$
REPLICATION_PASSWORD=e2e-replication-password-$$
REDIS_PASSWORD=e2e-redis-password-$$

export SWA_NET=${SWA_NET:-10.78.14}
export SWA_BRIDGE=${SWA_BRIDGE:-swhabr0}
export SWA_PREFIX=${SWA_PREFIX:-swha-}
export SWA_EXTRA_PACKAGES="patroni etcd-server etcd-client redis-sentinel"
# shellcheck source=../split/targets.sh
. "$HERE/../split/targets.sh"
DB1=$NET.11 DB2=$NET.12 DB3=$NET.13 APP=$NET.21 RELAY=$NET.22 SINK=$NET.30
declare -A ADDRESS=([db1]=$DB1 [db2]=$DB2 [db3]=$DB3 [app]=$APP [relay]=$RELAY)

PHASE=setup
PHASE_START=$(date +%s)
TIMES=""
RESULTS=""
SINK_PID=""

say() { printf '== %s\n' "$*"; }

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
        local name
        for name in "${!TARGET_PID[@]}"; do
            ssh_to "${ADDRESS[$name]}" "journalctl --no-pager -n 300 -u 'swiftmail-*' \
                -u patroni -u etcd -u redis-server -u redis-sentinel" > "$RUN/$name.journal.log" 2>&1
        done
        rm -rf "$CACHE/last-failed-ha"
        mkdir -p "$CACHE/last-failed-ha"
        find "$RUN" -maxdepth 1 -name '*.log' -exec cp {} "$CACHE/last-failed-ha/" \; 2>/dev/null || true
        echo "logs of this run: $CACHE/last-failed-ha" >&2
        if [ -n "${SWA_KEEP:-}" ]; then
            echo "SWA_KEEP: machines left running (ssh -i $RUN/id_ed25519 root@$NET.x)" >&2
            exit "$status"
        fi
    fi
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
    stop_targets
    rm -rf "$RUN"
    phase done
    printf '{"test": "ansible-ha", "passed": %s, "failed_phase": %s, %s"seconds": {%s}}\n' \
        "$([ "$status" = 0 ] && echo true || echo false)" "$failed" "$RESULTS" "${TIMES%, }"
    exit "$status"
}

# The SwiftMail wheel of this tree.
build_wheel() {
    local source=$RUN/src
    mkdir -p "$source" "$RUN/dist"
    tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
        --exclude=./node_modules -cf - . | tar -C "$source" -xf -
    "$VENV/bin/pip" wheel -q --no-deps --no-build-isolation -w "$RUN/dist" "$source" > "$RUN/wheel.log" 2>&1 \
        || { tail -20 "$RUN/wheel.log"; return 1; }
    rm -rf "$source"
}

# The dependencies as wheels, resolved by the targets' own Python in a chroot
# of the tree; the same cache entry as the split scenario's.
prepare_wheels() {
    local key work=$BASE/tmp/e2e-wheels
    key=$(sed -n '/^install_requires/,/^\[/p' "$REPO/setup.cfg" | sha256sum | cut -c1-12)
    WHEELS=$CACHE/wheels-$CACHE_KEY-$key
    if [ ! -f "$WHEELS/.complete" ]; then
        rm -rf "$WHEELS" "$work"
        mkdir -p "$work"
        cp "$RUN"/dist/swiftmail-*.whl "$work/"
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

write_inventory() {
    mkdir -p "$RUN/inventory/group_vars"
    local common="ansible_user=root ansible_python_interpreter=/usr/bin/python3"
    cat > "$RUN/inventory/hosts" <<INVENTORY
[swiftmail_etcd]
db1 ansible_host=$DB1 $common
db2 ansible_host=$DB2 $common
db3 ansible_host=$DB3 $common
[swiftmail_patroni]
db1
db2
[swiftmail_redis]
db1
db2
[swiftmail_sentinel]
db1
db2
db3
[swiftmail_api]
app ansible_host=$APP $common
[swiftmail_worker]
app
[swiftmail_tracking]
app
[swiftmail_relay]
relay ansible_host=$RELAY $common swiftmail_relay_intake_listen=$RELAY:2526
[swiftmail_migrate]
app
[swiftmail:children]
swiftmail_api
swiftmail_worker
swiftmail_tracking
swiftmail_relay
INVENTORY
    cat > "$RUN/inventory/group_vars/all.yml" <<VARS
ansible_ssh_private_key_file: $RUN/id_ed25519
ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
swiftmail_install_source: wheel
swiftmail_wheel_path: $WHEEL
swiftmail_pip_extra_args: --no-index --find-links /srv/wheels
swiftmail_database_url: postgresql://$DB1:5432,$DB2:5432/swiftmail?target_session_attrs=read-write
swiftmail_postgres_superuser_password: $SUPERUSER_PASSWORD
swiftmail_patroni_replication_password: $REPLICATION_PASSWORD
swiftmail_database_admin_url: postgresql://postgres:$SUPERUSER_PASSWORD@$DB1:5432,$DB2:5432/postgres?target_session_attrs=read-write
swiftmail_redis_password: $REDIS_PASSWORD
swiftmail_secret_key: e2e-secret-key-$$-0123456789abcdefghijklmnopqrstuvwxyz
swiftmail_db_owner_password: owner-$$
swiftmail_db_app_password: app-$$
swiftmail_db_system_password: system-$$
swiftmail_public_url: http://$APP:8000
swiftmail_api_bind: $APP:8000
swiftmail_api_workers: 2
swiftmail_api_threads: 2
swiftmail_dns_nameservers: [$SINK]
swiftmail_dns_port: $DNS_PORT
swiftmail_doctor_outside_dns: false
# A quick failover for the test (production: the defaults, ttl 30).
swiftmail_patroni_ttl: 10
swiftmail_patroni_loop_wait: 2
swiftmail_patroni_retry_timeout: 3
swiftmail_patroni_parameters: {shared_buffers: 32MB, fsync: "off"}
swiftmail_postgres_max_connections: 200
swiftmail_sentinel_down_after_ms: 3000
swiftmail_sentinel_failover_timeout_ms: 10000
# pgBackRest with Patroni needs a repository all members share (README.md).
swiftmail_backup_enabled: false
swiftmail_relay_settings:
  hostname: relay.$DOMAIN
  allow_networks: $NET.0/24
  warmup: false
  default_pool: own
  source_addresses: {own: "$RELAY"}
  ip_pools: {own: [own]}
swiftmail_firewall_enabled: true
# The controller and every cluster machine; the sink is "the world".
swiftmail_firewall_admin_networks: [$NET.1/32]
swiftmail_firewall_cluster_networks: [$NET.1/32, $DB1/32, $DB2/32, $DB3/32, $APP/32, $RELAY/32]
VARS
}

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

# closed_from NAMESPACE ADDRESS PORT: true when a connection does not open in 3 s.
closed_from() { ! ip netns exec "$PREFIX$1" timeout 3 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }

# patroni_leader: the name of the member Patroni's REST API calls the leader.
patroni_leader() {
    local address
    for address in "$@"; do
        curl -fsS -m 3 "http://$address:8008/cluster" 2>/dev/null \
            | python3 -c 'import json, sys; print(next(m["name"] for m in json.load(sys.stdin)["members"] if m["role"] == "leader" and m["state"] == "running"))' 2>/dev/null \
            && return 0
    done
    return 1
}

# redis_master SENTINEL_ADDRESS: the master address that Sentinel names.
redis_master() { ssh_to "$1" "redis-cli -p 26379 SENTINEL get-master-addr-by-name swiftmail" | head -1; }

campaign() {
    local out
    out=$(python3 "$HERE/../split/campaign.py" "http://$APP:8000" "$KEY" "$RECIPIENTS" "$DOMAIN" \
        "$RUN/sink-deliveries.log" "$1") || { echo "$out"; return 1; }
    echo "$out"
    echo "$out" | grep -q "\"$RELAY\"" || { echo "the sink did not get the mail from the relay host" >&2; return 1; }
    CAMPAIGN_OUT=$out
}

trap on_exit EXIT
trap 'exit 143' TERM INT
[ "$(id -u)" = 0 ] || { echo "make test-ansible needs root (network namespaces, nspawn)" >&2; exit 1; }
for tool in debootstrap systemd-nspawn apt-ftparchive; do
    command -v "$tool" > /dev/null || { echo "missing $tool (bash .ci/system-packages)" >&2; exit 1; }
done
mkdir -p "$RUN"
remove_leftovers

phase prepare
# The cache is shared with make test-ansible: built under its lock (targets.sh).
lock_cache -x
prepare_base
build_wheel
prepare_wheels
unlock_cache
WHEEL=$(ls "$RUN"/dist/swiftmail-*.whl)
ssh-keygen -q -t ed25519 -N '' -f "$RUN/id_ed25519"

phase machines
start_bridge
for name in db1 db2 db3 app relay; do
    start_target "$name" "${ADDRESS[$name]}"
done
add_namespace sink "$SINK"
ip netns exec "${PREFIX}sink" env PYTHONPATH="$REPO" "$VENV/bin/python" -m tests.cluster.sink_host \
    "$SINK" "$DOMAIN" "$RUN/sink-deliveries.log" > "$RUN/sink.log" 2>&1 &
SINK_PID=$!
for _ in $(seq 1 30); do grep -q dns_port "$RUN/sink.log" && break; sleep 0.5; done
DNS_PORT=$(grep -o '"dns_port": [0-9]*' "$RUN/sink.log" | grep -o '[0-9]*$')
write_inventory

phase install-1
play install-1
phase install-2
play install-2
result second_run_changed "$(changed_total "$RUN/install-2.log")"
[ "$(changed_total "$RUN/install-2.log")" = 0 ] || { echo "the second run changed something:" >&2;
    grep -B1 '^changed' "$RUN/install-2.log" | grep TASK >&2; exit 1; }

phase campaign
for _ in $(seq 1 30); do curl -fsS -m 3 "http://$APP:8000/readyz" > /dev/null 2>&1 && break; sleep 1; done
ssh_to "$APP" 'swiftmail tenant create e2e' > /dev/null
KEY=$(ssh_to "$APP" 'swiftmail apikey create --tenant e2e --role admin' | tail -1)
[ -n "$KEY" ] || { echo "no API key printed" >&2; exit 1; }
campaign 180
result campaign "$CAMPAIGN_OUT"

phase firewall
closed_from sink "$APP" 8000 || { echo "the API port answers the sink" >&2; exit 1; }
for port in 2379 2380 8008 5432 6379 26379; do
    closed_from sink "$DB1" "$port" || { echo "db1:$port answers the sink" >&2; exit 1; }
done
# ... and answer a cluster member (the controller).
curl -fsS -m 3 -o /dev/null "http://$DB1:8008/health"
result firewall '"etcd, Patroni, PostgreSQL, Redis and Sentinel closed to a non-member"'

phase failover
LEADER=$(patroni_leader "$DB1" "$DB2")
REDIS_BEFORE=$(redis_master "$DB3")
say "Patroni leader: $LEADER, Redis master: $REDIS_BEFORE; $LEADER loses its network and is powered off"
# The cable first (nothing it says on the way down reaches anyone), then the power.
ip -n "$PREFIX$LEADER" link set eth0 down
kill -KILL "${TARGET_PID[$LEADER]}"
LOST_AT=$(date +%s)
SURVIVOR=$([ "$LEADER" = db1 ] && echo "$DB2" || echo "$DB1")
NEW_LEADER=""
for _ in $(seq 1 60); do
    NEW_LEADER=$(patroni_leader "$SURVIVOR") && [ "$NEW_LEADER" != "$LEADER" ] && break
    NEW_LEADER=""
    sleep 1
done
[ -n "$NEW_LEADER" ] || { echo "no new Patroni leader within 60 s" >&2; exit 1; }
result patroni_failover_seconds "$(($(date +%s) - LOST_AT))"
say "new Patroni leader: $NEW_LEADER"
for _ in $(seq 1 60); do curl -fsS -m 3 "http://$APP:8000/readyz" > /dev/null 2>&1 && break; sleep 1; done
campaign 240
result campaign_after_failover "$CAMPAIGN_OUT"
result redis_master "\"$REDIS_BEFORE -> $(redis_master "$DB3")\""
