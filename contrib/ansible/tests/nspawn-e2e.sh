#!/bin/sh
# Run site.yml for real in a throwaway Debian 12 container booted with systemd.
#
#   sudo contrib/ansible/tests/nspawn-e2e.sh dist/swiftmail-0.1.0-py3-none-any.whl \
#       [dist/swiftmail-0.1.1-py3-none-any.whl]
#
# Needs root, debootstrap and systemd-container (apt-get install debootstrap
# systemd-container), and on the host's loopback a PostgreSQL superuser and a
# Redis (the container shares the host's network). It runs the play twice
# (the second run must report changed=0), checks /healthz, stops the worker
# (huey must log a graceful SIGINT shutdown), then powers the container off and
# drops the database and roles it made. With a second wheel it then upgrades:
# the play must reinstall, run `swiftmail migrate` and restart the services.
# Not part of the pytest suite: it takes minutes and root.
#
# Environment: E2E_DIR (default /var/tmp/swiftmail-ansible-e2e; the Debian tree
# is kept there and reused), E2E_ADMIN_URL (postgresql://postgres@127.0.0.1:5432/postgres),
# E2E_REDIS_URL (redis://127.0.0.1:6379/0), E2E_API_PORT (18765),
# E2E_RELAY_PORT (12525).
set -eu

WHEEL=$(realpath "${1:?usage: nspawn-e2e.sh PATH/TO/swiftmail.whl [UPGRADE.whl]}")
UPGRADE=${2:+$(realpath "$2")}
HERE=$(cd "$(dirname "$0")/.." && pwd)
DIR=${E2E_DIR:-/var/tmp/swiftmail-ansible-e2e}
ADMIN_URL=${E2E_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${E2E_REDIS_URL:-redis://127.0.0.1:6379/0}
API_PORT=${E2E_API_PORT:-18765}
RELAY_PORT=${E2E_RELAY_PORT:-12525}
TAG=e2e$(date +%s)
DATABASE=swiftmail_ansible_$TAG
MACHINE=swiftmail-$TAG

say() { printf '== %s\n' "$*"; }

if [ ! -d "$DIR/pristine" ]; then
    say "debootstrap Debian 12 into $DIR/pristine"
    mkdir -p "$DIR"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,sudo,python3,python3-venv,ca-certificates \
        bookworm "$DIR/pristine" http://deb.debian.org/debian
fi
ROOT=$DIR/$TAG
cp -a "$DIR/pristine" "$ROOT"
# Trust what the host trusts (package proxies with their own CA).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
mkdir -p "$ROOT/srv/dist" "$ROOT/root/e2e"
cp "$WHEEL" "$ROOT/srv/dist/"
[ -n "$UPGRADE" ] && cp "$UPGRADE" "$ROOT/srv/dist/"

cat > "$ROOT/root/e2e/inventory" <<EOF
[swiftmail]
localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3
EOF
cat > "$ROOT/root/e2e/vars.yml" <<EOF
swiftmail_install_source: wheel
swiftmail_wheel_path: /srv/dist/$(basename "$WHEEL")
swiftmail_database_url: postgresql://127.0.0.1:5432/$DATABASE
swiftmail_database_admin_url: $ADMIN_URL
swiftmail_redis_url: $REDIS_URL
swiftmail_secret_key: $(head -c 48 /dev/urandom | base64 | tr -d '\n/+=')
swiftmail_db_owner_password: owner-$TAG
swiftmail_db_app_password: app-$TAG
swiftmail_db_system_password: system-$TAG
swiftmail_db_owner_role: ${DATABASE}_owner
swiftmail_db_app_role: ${DATABASE}_app
swiftmail_db_system_role: ${DATABASE}_system
swiftmail_public_url: http://127.0.0.1:$API_PORT
swiftmail_api_bind: 127.0.0.1:$API_PORT
swiftmail_api_workers: 2
swiftmail_api_threads: 2
swiftmail_extra_settings:
  worker_queue_name: swiftmail-$TAG
swiftmail_relay_settings:
  hostname: relay.$TAG.test
  submission_listen: 127.0.0.1:$RELAY_PORT
  trusted_listeners: 127.0.0.1:$RELAY_PORT
  redis_prefix: "swiftmail-$TAG:relay"
# The container shares the host's network: no relay metrics port (9465) there.
swiftmail_relay_metrics_listen: ""
swiftmail_plugin_settings:
  web:
    redis_prefix: "swiftmail-$TAG:"
  tracking:
    # The drainer reads this stream: keep it apart from other users of this Redis.
    stream: "swiftmail-$TAG:tracking:hits"
EOF

say "boot $MACHINE"
setsid systemd-nspawn -D "$ROOT" -b -M "$MACHINE" --register=no --keep-unit \
    --console=pipe --bind-ro="$HERE:/srv/ansible" > "$DIR/$TAG.console.log" 2>&1 < /dev/null &
NSPAWN=$!
cleanup() {
    say "power off and drop $DATABASE"
    [ -n "${INIT:-}" ] && nsenter -t "$INIT" -a -- systemctl poweroff || kill "$NSPAWN" || true
    sleep 3
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DATABASE" \
        -c "DROP ROLE IF EXISTS ${DATABASE}_owner, ${DATABASE}_app, ${DATABASE}_system" || true
    rm -rf "$ROOT"
}
trap cleanup EXIT

for _ in $(seq 60); do
    INIT=$(pgrep -P "$NSPAWN" -x systemd || true)
    [ -n "$INIT" ] && break
    sleep 1
done
[ -n "$INIT" ] || { echo "container did not boot"; exit 1; }
inside() { nsenter -t "$INIT" -a -- /bin/sh -c "$1"; }
inside 'systemctl is-system-running --wait' || true

say "install ansible-core in the container"
inside 'python3 -m venv /opt/ansible && /opt/ansible/bin/pip install -q ansible-core'

PLAY='cd /srv/ansible && ANSIBLE_CONFIG=/srv/ansible/ansible.cfg ANSIBLE_NOCOLOR=1
      /opt/ansible/bin/ansible-playbook -i /root/e2e/inventory site.yml -e @/root/e2e/vars.yml'
say "first run"
inside "$PLAY" > "$DIR/$TAG.run1.log" 2>&1 || { tail -40 "$DIR/$TAG.run1.log"; exit 1; }
grep -A1 'PLAY RECAP' "$DIR/$TAG.run1.log"
say "second run (must change nothing)"
inside "$PLAY" > "$DIR/$TAG.run2.log" 2>&1 || { tail -40 "$DIR/$TAG.run2.log"; exit 1; }
grep -A1 'PLAY RECAP' "$DIR/$TAG.run2.log"
grep -q ' changed=0 ' "$DIR/$TAG.run2.log" || { echo "second run changed something"; exit 1; }

say "services"
inside 'systemctl is-active swiftmail-api swiftmail-worker swiftmail-relay swiftmail-tracking'
curl -fsS "http://127.0.0.1:$API_PORT/healthz"; echo
curl -fsS "http://127.0.0.1:$API_PORT/readyz"; echo

say "graceful worker stop"
inside 'systemctl stop swiftmail-worker'
inside 'journalctl -u swiftmail-worker -o cat -n 20' | grep -E 'SIGINT|Consumer exiting'
inside 'journalctl -u swiftmail-worker -o cat -n 20' | grep -q 'Consumer exiting'
inside 'for u in swiftmail-api swiftmail-worker swiftmail-relay swiftmail-tracking; do
          systemd-analyze security --no-pager $u | tail -1; done'

if [ -n "$UPGRADE" ]; then
    say "upgrade to $(basename "$UPGRADE")"
    inside 'systemctl start swiftmail-worker'
    inside "sed -i 's|^swiftmail_wheel_path: .*|swiftmail_wheel_path: /srv/dist/$(basename "$UPGRADE")|' /root/e2e/vars.yml"
    inside "$PLAY" > "$DIR/$TAG.run3.log" 2>&1 || { tail -40 "$DIR/$TAG.run3.log"; exit 1; }
    grep -A1 'PLAY RECAP' "$DIR/$TAG.run3.log"
    grep -A1 'TASK \[swiftmail : Install SwiftMail\]' "$DIR/$TAG.run3.log" | grep -q '^changed'
    grep -A1 'TASK \[swiftmail : Run swiftmail migrate after an upgrade\]' "$DIR/$TAG.run3.log" \
        | grep -qE '^(ok|changed)'
    grep -A1 'HANDLER \[swiftmail : Restart swiftmail-api\]' "$DIR/$TAG.run3.log" | grep -q '^changed'
    inside '/opt/swiftmail/venv/bin/swiftmail --version'
    inside 'systemctl is-active swiftmail-api swiftmail-worker swiftmail-relay swiftmail-tracking'
    curl -fsS "http://127.0.0.1:$API_PORT/readyz"; echo
fi
say "passed"
