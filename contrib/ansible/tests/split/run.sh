#!/usr/bin/env bash
# make test-ansible: the role on real Debian 12 machines, split across hosts.
#
# Targets (systemd-nspawn --boot of a debootstrapped Debian 12, each in its own
# network namespace on the bridge swabr0, reached over SSH by ansible-playbook
# on this machine):
#   db     10.78.13.11  PostgreSQL (with pgBackRest) and Redis, installed by the role;
#                       Prometheus (monitoring.yml)
#   app    10.78.13.12  API, worker, tracking drainer; runs the migrations
#   relay  10.78.13.13  the relay (intake on its private address, STARTTLS on 25
#                       and 587 to the world) and HAProxy
#                       (TLS on 443 with the role's self-signed certificate)
#   sink   10.78.13.14  not a machine: a namespace running tests/cluster/sink_host.py
#                       (SMTP on 25, the DNS server whose MX names it); "the world"
#   db2    10.78.13.15  booted empty late in the run: the restore's new database host
# Checked: the split install (site.yml: PostgreSQL, Redis, then SwiftMail host
# by host, HAProxy) twice (the second run changed=0); a campaign from the API
# through the worker and the relay on other hosts to the sink; the API through
# HAProxy over TLS from the world; the firewall (the API, intake, PostgreSQL and
# Redis closed to the sink, SSH closed to another target); monitoring.yml
# (Prometheus from Debian on db: every target up, the rules loaded, a failed
# doctor run seen) and the relay's STARTTLS on 25/587 from the world with a
# certificate renewed by a reload (checks_ops.sh); a rolling upgrade
# with a migration; then backups (a pgBackRest full backup, WAL archived after
# it, the settings archive with the secret key) copied off the hosts, the
# database host lost, and README.md's "Restore onto a new PostgreSQL host" done
# step by step on db2, after which a campaign sends from the restored install.
#
# Needs root, debootstrap, systemd-container, apt-utils and the dev venv (make
# .venv/.installed). The Debian tree, a flat apt repository and the wheels are
# cached under $SWA_CACHE (default /var/tmp/swa-e2e): the first run builds them
# (minutes), later ones reuse them. Every machine, namespace and the bridge are
# removed at the end, also on failure. The last line is a JSON summary. The
# harness (phases, summary, clean-up, wheels, plays, sink, campaigns) is ../lib.sh,
# shared with ../ha/run.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SCENARIO=split
DOMAIN=split-e2e.test
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
DB_PASSWORD=e2e-postgres-password-$$
REDIS_PASSWORD=e2e-redis-password-$$
# shellcheck source=checks_ops.sh
. "$HERE/checks_ops.sh"
DB=$NET.11 APP=$NET.12 RELAY=$NET.13 SINK=$NET.14 DB2=$NET.15
SECRET_KEY=e2e-secret-key-$$-0123456789abcdefghijklmnopqrstuvwxyz
LB_NAME=mail.$DOMAIN

# write_inventory DB_NAME DB_ADDRESS: the split inventory with PostgreSQL and
# Redis on that host (db, or db2 after the restore) and $WHEEL.
write_inventory() {
    local db_name=$1 db=$2
    mkdir -p "$RUN/inventory/group_vars"
    local common="ansible_user=root ansible_python_interpreter=/usr/bin/python3"
    cat > "$RUN/inventory/hosts" <<EOF
[swiftmail_postgres]
$db_name ansible_host=$db $common
[swiftmail_redis]
$db_name
[swiftmail_api]
app ansible_host=$APP $common swiftmail_tracking_web_bind=$APP:8001
[swiftmail_worker]
app
[swiftmail_tracking]
app
[swiftmail_relay]
relay ansible_host=$RELAY $common swiftmail_relay_intake_listen=$RELAY:2526
[swiftmail_migrate]
app
[swiftmail_haproxy]
relay
[swiftmail_monitoring]
$db_name
[swiftmail:children]
swiftmail_api
swiftmail_worker
swiftmail_tracking
swiftmail_relay
EOF
    cat > "$RUN/inventory/group_vars/all.yml" <<EOF
ansible_ssh_private_key_file: $RUN/id_ed25519
ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
swiftmail_install_source: wheel
swiftmail_wheel_path: $WHEEL
swiftmail_pip_extra_args: --no-index --find-links /srv/wheels
swiftmail_database_url: postgresql://$db:5432/swiftmail
swiftmail_postgres_superuser_password: $DB_PASSWORD
swiftmail_database_admin_url: postgresql://postgres:$DB_PASSWORD@$db:5432/postgres
swiftmail_redis_password: $REDIS_PASSWORD
swiftmail_redis_url: redis://:$REDIS_PASSWORD@$db:6379/0
swiftmail_secret_key: $SECRET_KEY
swiftmail_db_owner_password: owner-$$
swiftmail_db_app_password: app-$$
swiftmail_db_system_password: system-$$
# HAProxy on relay serves it (a self-signed certificate for $LB_NAME).
swiftmail_public_url: https://$LB_NAME
swiftmail_api_bind: $APP:8000
swiftmail_api_workers: 2
swiftmail_api_threads: 2
swiftmail_dns_nameservers: [$SINK]
swiftmail_dns_port: $DNS_PORT
# The test network has no resolver for the root zone.
swiftmail_doctor_outside_dns: false
swiftmail_relay_settings:
  hostname: relay.$DOMAIN
  allow_networks: $NET.0/24
  warmup: false
  default_pool: own
  source_addresses: {own: "$RELAY"}
  ip_pools: {own: [own]}
  # STARTTLS to the world on 25 and 587 (checks_ops.sh); a renewed
  # certificate must be loaded by the reload, not the file check.
  bounce_listen: "0.0.0.0:25"
  submission_listen: "0.0.0.0:587"
  tls_reload_check_seconds: 3600
swiftmail_relay_bind_privileged_ports: true
swiftmail_firewall_enabled: true
# The controller (ansible, the campaign's API calls) and the SwiftMail hosts;
# the sink is "the world" (PostgreSQL and Redis on db are cluster ports too).
swiftmail_firewall_admin_networks: [$NET.1/32]
swiftmail_firewall_cluster_networks: [$NET.1/32, $APP/32, $RELAY/32]
# Prometheus runs on the database host (monitoring.yml).
swiftmail_firewall_monitoring_networks: [$db/32]
EOF
}

harness_start

phase prepare
lock_cache -x
prepare_base
cat > "$RUN/9999_e2e_upgrade_marker.sql" <<'EOF'
-- Added by the role's upgrade test (contrib/ansible/tests/split/run.sh) only: a no-op
-- (a table would have to be tenant-scoped, or doctor's isolation audit stops the rollout).
SELECT 1;
EOF
build_wheel 0.1.0 "$RUN/dist1"
build_wheel 0.1.1 "$RUN/dist2" "$RUN/9999_e2e_upgrade_marker.sql"
prepare_wheels "$RUN/dist1"
unlock_cache
WHEEL=$(ls "$RUN"/dist1/swiftmail-*.whl)
ssh-keygen -q -t ed25519 -N '' -f "$RUN/id_ed25519"

phase machines
start_bridge
start_target db "$DB"
start_target app "$APP"
start_target relay "$RELAY"
start_sink "$SINK"

write_inventory db "$DB"

phase install-1
play install-1
phase install-2
play install-2
expect_unchanged install-2
# The journal keeps the services' lines on disk, for a bounded time.
ssh_to "$RELAY" systemd-analyze cat-config systemd/journald.conf | grep -qx 'MaxRetentionSec=14day' \
    || { echo "journald on relay has no retention set" >&2; exit 1; }

phase campaign
wait_ready "$APP"
create_tenant "$APP"
campaign campaign "$APP" "$RELAY"

phase haproxy
# The world (the sink) reaches the API through HAProxy on relay only, over TLS
# with the certificate the role made (checked against that very certificate).
ssh_to "$RELAY" cat /etc/haproxy/certs/swiftmail.pem > "$RUN/lb.pem"
lb_curl() {
    ip netns exec "${PREFIX}sink" curl -fsS -m 10 --cacert "$RUN/lb.pem" \
        --resolve "$LB_NAME:443:$RELAY" --resolve "$LB_NAME:80:$RELAY" "$@"
}
for _ in $(seq 1 30); do lb_curl -o /dev/null "https://$LB_NAME/readyz" 2>/dev/null && break; sleep 1; done
lb_curl -o /dev/null "https://$LB_NAME/readyz"
lb_curl -o /dev/null -H "Authorization: Bearer $KEY" "https://$LB_NAME/v1/lists"
# /metrics is for Prometheus on the private network only.
metrics=$(lb_curl -o /dev/null -w '%{http_code}' "https://$LB_NAME/metrics" 2>/dev/null || true)
[ "$metrics" = 404 ] || { echo "HAProxy answered /metrics with $metrics" >&2; exit 1; }
# Plain http on 80 only redirects to https.
redirect=$(lb_curl -o /dev/null -w '%{http_code} %{redirect_url}' "http://$LB_NAME/readyz")
case "$redirect" in 30?" https://$LB_NAME/"*) ;; *) echo "port 80 answered: $redirect" >&2; exit 1 ;; esac
grep -q "WARNING: HAProxy on relay serves a SELF-SIGNED certificate" "$RUN/install-1.log" \
    || { echo "no self-signed certificate warning in the play output" >&2; exit 1; }
result haproxy '"readyz and an API call over TLS from the world, /metrics 404, 80 redirects"'

phase firewall
# The API port: open to the controller (a cluster member), closed to the sink.
curl -fsS -m 5 -o /dev/null "http://$APP:8000/healthz"
closed_from sink "$APP" 8000 || { echo "the API port answers the sink" >&2; exit 1; }
# SSH: open to the admin network (the controller) only; another target is refused.
ssh_to "$APP" "! timeout 3 bash -c 'exec 3<>/dev/tcp/$DB/22' 2>/dev/null" \
    || { echo "db's SSH answers app (not an admin network)" >&2; exit 1; }
ssh_to "$RELAY" "timeout 3 bash -c 'exec 3<>/dev/tcp/$APP/8000'" \
    || { echo "app's API port does not answer relay (a cluster member)" >&2; exit 1; }
# The relay's intake: closed to the sink; 25 (served to the world) is open to it.
closed_from sink "$RELAY" 2526 || { echo "the relay intake answers the sink" >&2; exit 1; }
closed_from sink "$DB" 5432 || { echo "PostgreSQL answers the sink" >&2; exit 1; }
closed_from sink "$DB" 6379 || { echo "Redis answers the sink" >&2; exit 1; }
result firewall '"API, intake, PostgreSQL and Redis closed to a non-member, SSH to another target"'

phase monitoring
check_monitoring

phase relay-tls
check_relay_tls

phase upgrade
# A second wheel with one more migration, rolled out host by host (site.yml:
# the migration host first, alone, then the others).
WHEEL2=$(ls "$RUN"/dist2/swiftmail-*.whl)
sed -i "s|^swiftmail_wheel_path: .*|swiftmail_wheel_path: $WHEEL2|" "$RUN/inventory/group_vars/all.yml"
play upgrade
for address in "$APP" "$RELAY"; do
    version=$(ssh_to "$address" 'swiftmail --version')
    case "$version" in *0.1.1*) ;; *) echo "$address still runs $version" >&2; exit 1 ;; esac
done
marker=$(ssh_to "$DB" "cd / && runuser -u postgres -- psql -d swiftmail -Atc \"SELECT name FROM schema_migrations WHERE version = 9999\"")
[ -n "$marker" ] || { echo "the upgrade's migration was not applied" >&2; exit 1; }
# The migration host's batch came first: its install ran before the relay's.
order=$(grep -A3 'TASK \[swiftmail : Install SwiftMail\]' "$RUN/upgrade.log" | grep -o '^changed: \[[a-z]*\]' | tr -d '\n')
[ "$order" = "changed: [app]changed: [relay]" ] || { echo "upgrade order: $order" >&2; exit 1; }
campaign campaign_after_upgrade "$APP" "$RELAY"

phase backup
# The backups as the timers take them: a full pgBackRest backup on db (WAL is
# archived continuously) and the settings archive (the secret key) on app.
ssh_to "$DB" systemctl start swiftmail-pgbackrest@full.service
ssh_to "$APP" systemctl start swiftmail-backup-files.service
# Written after the full backup: only the archived WAL brings it back.
ssh_to "$APP" swiftmail tenant create e2e-after-backup > /dev/null
# `check` switches to a new WAL segment and waits until it is archived
# (archive_timeout does the same within a minute on a quiet database).
ssh_to "$DB" 'cd / && runuser -u postgres -- pgbackrest --stanza=swiftmail check' > /dev/null
# Copied off the hosts (README.md): the repository and the newest archive.
ssh_to "$DB" tar -C /var/lib/pgbackrest -cf - . > "$RUN/pgbackrest-repo.tar"
ssh_to "$APP" 'cat "$(ls -1t /var/backups/swiftmail/swiftmail-*.tar.gz | head -n 1)"' > "$RUN/settings.tar.gz"

phase restore
# The database host is lost for good.
stop_target db
# README.md, "Restore onto a new PostgreSQL host", step by step, on a fresh target.
start_target db2 "$DB2"
# (No vault at hand: the secret key comes out of the settings archive.)
VAULT_SECRET_KEY=$SECRET_KEY
SECRET_KEY=$(tar -xzOf "$RUN/settings.tar.gz" etc/swiftmail/swiftmail.toml \
    | "$VENV/bin/python" -c 'import sys, tomllib; print(tomllib.load(sys.stdin.buffer)["secret_key"])')
[ "$SECRET_KEY" = "$VAULT_SECRET_KEY" ] || { echo "the settings archive lacks the secret key" >&2; exit 1; }
# 1. The new host replaces the old one in the inventory, the URLs point at it.
write_inventory db2 "$DB2"
sed -i "s|^swiftmail_wheel_path: .*|swiftmail_wheel_path: $WHEEL2|" "$RUN/inventory/group_vars/all.yml"
# 2. PostgreSQL and pgBackRest (and Redis) there, SwiftMail untouched.
play restore-db --limit db2
# 3. The repository, 4. the restore, then a new full backup.
ssh_to "$DB2" 'systemctl stop postgresql@15-main && find /var/lib/pgbackrest -mindepth 1 -delete &&
    tar -C /var/lib/pgbackrest -xf - && chown -R postgres:postgres /var/lib/pgbackrest' \
    < "$RUN/pgbackrest-repo.tar"
ssh_to "$DB2" 'cd / && systemctl stop postgresql@15-main &&
    runuser -u postgres -- pgbackrest --stanza=swiftmail --delta restore > /dev/null &&
    systemctl start postgresql'
recovering=t
for _ in $(seq 1 60); do
    recovering=$(ssh_to "$DB2" "cd / && runuser -u postgres -- psql -Atc 'SELECT pg_is_in_recovery()'" 2>/dev/null) || true
    [ "$recovering" = f ] && break
    sleep 1
done
[ "$recovering" = f ] || { echo "the restored PostgreSQL is still in recovery" >&2; exit 1; }
ssh_to "$DB2" systemctl start swiftmail-pgbackrest@full.service
# 5. Point SwiftMail at it.
play restore
tenants=$(ssh_to "$APP" swiftmail tenant list)
for slug in e2e e2e-after-backup; do
    echo "$tenants" | grep -qE -- "(^|[[:space:]])$slug([[:space:]]|\$)" || { echo "tenant $slug is not in the restored database" >&2; exit 1; }
done
# The API key made before the backup still works: a campaign from the restored install.
wait_ready "$APP"
campaign campaign_after_restore "$APP" "$RELAY"
closed_from sink "$DB2" 5432 || { echo "the restored PostgreSQL answers the sink" >&2; exit 1; }
