#!/usr/bin/env bash
# make test-ansible, HA scenario: the role's high-availability groups on real
# Debian 12 machines, then the loss of the PostgreSQL primary's machine.
#
# Targets (systemd-nspawn machines from ../split/targets.sh, each in its own
# network namespace on the bridge swhabr0, reached over SSH):
#   db1    10.78.14.11  etcd, Patroni (PostgreSQL 15), Redis (first master), Sentinel
#   db2    10.78.14.12  etcd, Patroni (PostgreSQL 15), Redis (replica), Sentinel
#   db3    10.78.14.13  etcd, Sentinel (the third vote of each quorum), the pgBackRest repository host
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
# second campaign reaches the sink. pgBackRest (phases backup and
# backup-after-failover): both members archive to db3 over pgBackRest's TLS
# protocol; `check` and a full backup from db3 before the failover, after it
# `check` from the new primary (its archive-push reaches db3) and a
# differential backup from db3 (taken from the new primary); pgBackRest's
# port is closed to a cluster member that is neither (app) and to the sink.
#
# Needs what ../split/run.sh needs. Its own network (SWA_NET, default
# 10.78.14), bridge and namespace prefix, so it can run next to the split
# scenario; the cache ($SWA_CACHE) is shared with it (the package repository
# adds Patroni, etcd and Sentinel). Everything is removed at the end, also on
# failure. The last line is a JSON summary. The harness is ../lib.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SCENARIO=ha
DOMAIN=ha-e2e.test
# Its own net, bridge and namespace prefix by default; with SWA_NET given,
# both follow it as in split/targets.sh (unless SWA_BRIDGE/SWA_PREFIX are given).
if [ "${SWA_NET:-10.78.14}" = 10.78.14 ]; then
    export SWA_NET=10.78.14 SWA_BRIDGE=${SWA_BRIDGE:-swhabr0} SWA_PREFIX=${SWA_PREFIX:-swha-}
fi
export SWA_EXTRA_PACKAGES="patroni etcd-server etcd-client redis-sentinel"
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
SUPERUSER_PASSWORD=e2e-postgres-password-$$
REPLICATION_PASSWORD=e2e-replication-password-$$
REDIS_PASSWORD=e2e-redis-password-$$
SENTINEL_PASSWORD=e2e-sentinel-password-$$
RESTAPI_PASSWORD=e2e-restapi-password-$$
ETCD_ROOT_PASSWORD=e2e-etcd-root-password-$$
ETCD_PATRONI_PASSWORD=e2e-etcd-patroni-password-$$
DB1=$NET.11 DB2=$NET.12 DB3=$NET.13 APP=$NET.21 RELAY=$NET.22 SINK=$NET.30
declare -A ADDRESS=([db1]=$DB1 [db2]=$DB2 [db3]=$DB3 [app]=$APP [relay]=$RELAY)

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
[swiftmail_backup]
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
swiftmail_sentinel_password: $SENTINEL_PASSWORD
swiftmail_patroni_restapi_password: $RESTAPI_PASSWORD
swiftmail_etcd_root_password: $ETCD_ROOT_PASSWORD
swiftmail_etcd_patroni_password: $ETCD_PATRONI_PASSWORD
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
# pgBackRest: the members archive to the repository host db3 ([swiftmail_backup]).
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
redis_master() {
    ssh_to "$1" "REDISCLI_AUTH=$SENTINEL_PASSWORD redis-cli -p 26379 SENTINEL get-master-addr-by-name swiftmail" | head -1
}

# check_control_plane_auth: etcd, Patroni's REST API and Sentinel refuse a
# cluster member without their passwords, and work with them.
check_control_plane_auth() {
    local code out
    # Patroni: unsafe endpoints without credentials are 401 (bodies that would do
    # nothing if they got through); patronictl on the host has the credentials.
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST -d '{"leader": "nobody"}' "http://$DB1:8008/switchover")
    [ "$code" = 401 ] || { echo "POST /switchover without credentials: $code, not 401" >&2; return 1; }
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X PATCH -d '{}' "http://$DB1:8008/config")
    [ "$code" = 401 ] || { echo "PATCH /config without credentials: $code, not 401" >&2; return 1; }
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -u "patroni:wrong-password" -X POST "http://$DB1:8008/reload")
    [ "$code" = 401 ] || { echo "POST /reload with a wrong password: $code, not 401" >&2; return 1; }
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -u "patroni:$RESTAPI_PASSWORD" -X POST "http://$DB1:8008/reload")
    [ "$code" = 202 ] || [ "$code" = 200 ] || { echo "POST /reload with the password: $code" >&2; return 1; }
    ssh_to "$DB2" "patronictl -c /etc/patroni/config.yml reload swiftmail --force" > "$RUN/patronictl.log" 2>&1 \
        || { cat "$RUN/patronictl.log" >&2; return 1; }
    # etcd: no user, no read; Patroni's user reads its keys and nothing else.
    out=$(ssh_to "$DB3" "etcdctl --endpoints=http://$DB3:2379 get --prefix --keys-only /service/" 2>&1) \
        && { echo "etcd answered a read without credentials: $out" >&2; return 1; }
    grep -q "user name is empty" <<< "$out" || { echo "etcd without credentials: $out" >&2; return 1; }
    out=$(ssh_to "$DB3" "ETCDCTL_USER=patroni:$ETCD_PATRONI_PASSWORD etcdctl --endpoints=http://$DB3:2379 \
        get --prefix --keys-only /service/swiftmail/" 2>/dev/null)
    grep -q "^/service/swiftmail/leader$" <<< "$out" || { echo "Patroni's etcd user reads no leader key: $out" >&2; return 1; }
    out=$(ssh_to "$DB3" "ETCDCTL_USER=patroni:$ETCD_PATRONI_PASSWORD etcdctl --endpoints=http://$DB3:2379 \
        put /elsewhere x" 2>&1) && { echo "Patroni's etcd user wrote outside its prefix" >&2; return 1; }
    grep -q "permission denied" <<< "$out" || { echo "etcd outside the prefix: $out" >&2; return 1; }
    # Sentinel: NOAUTH without the password, PONG with it.
    out=$(ssh_to "$DB3" "redis-cli -h $DB3 -p 26379 PING" 2>&1 || true)
    grep -q NOAUTH <<< "$out" || { echo "Sentinel without the password: $out" >&2; return 1; }
    [ "$(ssh_to "$DB3" "REDISCLI_AUTH=$SENTINEL_PASSWORD redis-cli -h $DB3 -p 26379 PING")" = PONG ] \
        || { echo "Sentinel refused its password" >&2; return 1; }
    result control_plane_auth '"etcd, Patroni REST (unsafe endpoints) and Sentinel refuse a member without the password"'
}

# pgbackrest_on ADDRESS ARGS: pgBackRest as postgres on ADDRESS; the output
# goes to $RUN/pgbackrest.log (its end to stderr on failure).
pgbackrest_on() {
    local address=$1
    shift
    { echo "== $address: pgbackrest $*"; ssh_to "$address" "sudo -u postgres pgbackrest --stanza=swiftmail $*"; } \
        >> "$RUN/pgbackrest.log" 2>&1 || { tail -30 "$RUN/pgbackrest.log" >&2; return 1; }
}

# backups_in_repository: the repository's backups (type and the WAL range) as JSON.
backups_in_repository() {
    ssh_to "$DB3" "sudo -u postgres pgbackrest --stanza=swiftmail --output=json info" | python3 -c '
import json, sys
stanza = json.load(sys.stdin)[0]
wal = [a for a in stanza["archive"] if a.get("max")]
print(json.dumps({"backups": [b["type"] for b in stanza["backup"]],
                  "wal_max": wal[-1]["max"] if wal else None}))'
}

# backup_phase before|after: pgBackRest with the repository host db3. Before
# the failover: `check` from db3 (the primary's archive_command reaches db3),
# a full backup (the timer's unit), pgBackRest's port closed to app and the
# sink. After: `check` from the new primary (archive-push of a fresh WAL
# segment on the new timeline) and a differential backup from db3, taken from
# the new primary while the old one is gone (pgBackRest tries the lost member
# first: about 2 minutes before its "unable to check pg1" warning).
backup_phase() {
    if [ "$1" = before ]; then
        phase backup
        pgbackrest_on "$DB3" check
        ssh_to "$DB3" "systemctl start swiftmail-pgbackrest@full"
        result backup_before_failover "$(backups_in_repository)"
        local host
        for host in "$DB1" "$DB3"; do
            closed_from app "$host" 8432 || { echo "pgBackRest on $host answers app" >&2; return 1; }
            closed_from sink "$host" 8432 || { echo "pgBackRest on $host answers the sink" >&2; return 1; }
        done
    else
        phase backup-after-failover
        pgbackrest_on "${ADDRESS[$NEW_LEADER]}" check
        ssh_to "$DB3" "systemctl start swiftmail-pgbackrest@diff"
        result backup_after_failover "$(backups_in_repository)"
    fi
}

harness_start

phase prepare
# The cache is shared with make test-ansible: built under its lock (targets.sh).
lock_cache -x
prepare_base
build_wheel 0.1.0 "$RUN/dist"
prepare_wheels "$RUN/dist"
unlock_cache
WHEEL=$(ls "$RUN"/dist/swiftmail-*.whl)
ssh-keygen -q -t ed25519 -N '' -f "$RUN/id_ed25519"

phase machines
start_bridge
for name in db1 db2 db3 app relay; do
    start_target "$name" "${ADDRESS[$name]}"
done
start_sink "$SINK"
write_inventory

phase install-1
play install-1
phase install-2
play install-2
expect_unchanged install-2

phase campaign
wait_ready "$APP"
create_tenant "$APP"
campaign campaign "$APP" "$RELAY"

phase firewall
closed_from sink "$APP" 8000 || { echo "the API port answers the sink" >&2; exit 1; }
for port in 2379 2380 8008 5432 6379 26379; do
    closed_from sink "$DB1" "$port" || { echo "db1:$port answers the sink" >&2; exit 1; }
done
# ... and answer a cluster member (the controller).
curl -fsS -m 3 -o /dev/null "http://$DB1:8008/health"
result firewall '"etcd, Patroni, PostgreSQL, Redis and Sentinel closed to a non-member"'

phase control-plane-auth
check_control_plane_auth

backup_phase before

phase failover
LEADER=$(patroni_leader "$DB1" "$DB2")
REDIS_BEFORE=$(redis_master "$DB3")
# The machine lost must hold both masters, so that Sentinel's failover is
# tested too: when Redis's master is elsewhere, Sentinel moves it there first.
if [ "$REDIS_BEFORE" != "${ADDRESS[$LEADER]}" ]; then
    say "Redis master $REDIS_BEFORE is not on $LEADER: SENTINEL FAILOVER to move it there"
    ssh_to "$DB3" "REDISCLI_AUTH=$SENTINEL_PASSWORD redis-cli -p 26379 SENTINEL FAILOVER swiftmail" >/dev/null
    for _ in $(seq 1 60); do
        REDIS_BEFORE=$(redis_master "$DB3")
        [ "$REDIS_BEFORE" = "${ADDRESS[$LEADER]}" ] && break
        sleep 1
    done
    [ "$REDIS_BEFORE" = "${ADDRESS[$LEADER]}" ] \
        || { echo "Sentinel did not move the Redis master to $LEADER within 60 s" >&2; exit 1; }
fi
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
backup_phase after
phase campaign-after-failover
wait_ready "$APP" 60
# Its first API call may be retried for 120 s (campaign.py: an Idempotency-Key,
# so a repeat is safe); "first_call" in its output says whether it had to be.
campaign campaign_after_failover "$APP" "$RELAY" 240 120
result redis_master "\"$REDIS_BEFORE -> $(redis_master "$DB3")\""
