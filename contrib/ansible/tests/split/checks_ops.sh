# The on-call checks of the split test, sourced by run.sh (its variables and
# helpers: RUN, REPO, VENV, HERE, PREFIX, DB, APP, RELAY, DOMAIN, ssh_to,
# result, changed_total):
#   check_monitoring  monitoring.yml on the machines (node_exporter on app and
#                     relay, Prometheus from Debian on db): promtool, every
#                     target up, the rules loaded, the doctor timer, and a
#                     failed doctor run seen by Prometheus (and its alert).
#   check_relay_tls   STARTTLS on the relay's 25 and 587 from the world (the
#                     sink), then a renewed certificate (the operator's
#                     variables, the play re-run) served after a reload: the
#                     relay's PID unchanged, a session open across it kept.

# ops_play NAME PLAYBOOK [ARGS...]: ansible-playbook as run.sh's play, for any
# playbook of contrib/ansible; the output in $RUN/NAME.log.
ops_play() {
    local log=$RUN/$1.log playbook=$2
    shift 2
    (cd "$REPO/contrib/ansible" && ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
        ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_RETRY_FILES_ENABLED=0 \
        ANSIBLE_LOCAL_TEMP=$RUN/ansible-tmp ANSIBLE_HOME=$RUN/ansible-home \
        "$VENV/bin/ansible-playbook" -i "$RUN/inventory/hosts" "$playbook" "$@") > "$log" 2>&1 \
        || { tail -40 "$log"; return 1; }
    sed -n '/PLAY RECAP/,$p' "$log"
}

# prometheus_api PATH: a GET of Prometheus's HTTP API on db (it listens on
# loopback there), the JSON on stdout.
prometheus_api() {
    local args=""
    [ $# -gt 1 ] && args=$(printf ' %q' "${@:2}")
    ssh_to "$DB" "curl -fsS -m 10 -G http://127.0.0.1:9090$1$args"
}

# wait_for SECONDS COMMAND...: run COMMAND every 2 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 2
    done
}

# targets_up: true when Prometheus scrapes exactly the expected targets, all up.
targets_up() {
    prometheus_api /api/v1/targets | python3 -c '
import json, sys
expected = set(sys.argv[1:])
targets = json.load(sys.stdin)["data"]["activeTargets"]
seen = {t["labels"]["job"] + " " + t["labels"]["instance"]: t for t in targets}
missing = expected - set(seen)
down = {k: t.get("lastError") for k, t in seen.items() if k in expected and t["health"] != "up"}
print(json.dumps({"missing": sorted(missing), "down": down}), file=sys.stderr)
sys.exit(1 if missing or down else 0)' \
        "swiftmail-api $APP:8000" "swiftmail-relay $RELAY:9465" \
        "swiftmail-node $APP:9100" "swiftmail-node $RELAY:9100" 2> "$RUN/targets.last"
}

# doctor_failed_seen: Prometheus has swiftmail-doctor.service failed on app
# (node_exporter's systemd collector) and SwiftMailDoctorFailing pending or firing.
doctor_failed_seen() {
    local query='node_systemd_unit_state{name="swiftmail-doctor.service",state="failed"} == 1'
    local found
    found=$(prometheus_api /api/v1/query --data-urlencode "query=$query") || return 1
    case "$found" in *"\"instance\":\"$APP:9100\""*) ;; *) return 1 ;; esac
    prometheus_api /api/v1/alerts | python3 -c '
import json, sys
alerts = json.load(sys.stdin)["data"]["alerts"]
sys.exit(0 if any(a["labels"]["alertname"] == "SwiftMailDoctorFailing"
                  and a["labels"].get("instance") == sys.argv[1] for a in alerts) else 1)' "$APP:9100"
}

check_monitoring() {
    cat >> "$RUN/inventory/group_vars/all.yml" <<EOF
# monitoring.yml: Prometheus from Debian on db (swiftmail_monitoring), scraping often.
swiftmail_prometheus_install: true
swiftmail_prometheus_scrape_interval: 5s
EOF
    ops_play monitoring-1 monitoring.yml
    ops_play monitoring-2 monitoring.yml
    [ "$(changed_total "$RUN/monitoring-2.log")" = 0 ] || { echo "monitoring.yml's second run changed something:" >&2;
        grep -B1 '^changed' "$RUN/monitoring-2.log" | grep TASK >&2; return 1; }
    ssh_to "$DB" 'promtool check config /etc/prometheus/prometheus.yml && promtool check rules /etc/prometheus/swiftmail-alerts.yml' \
        > "$RUN/promtool.log" 2>&1 || { cat "$RUN/promtool.log" >&2; return 1; }
    wait_for 90 targets_up || { echo "Prometheus targets not all up: $(cat "$RUN/targets.last")" >&2; return 1; }
    # Every rule of the file loaded (promtool counted them on the machine).
    local expected loaded
    expected=$(grep -o 'SUCCESS: [0-9]* rules found' "$RUN/promtool.log" | tail -n 1 | grep -o '[0-9]*')
    loaded=$(prometheus_api /api/v1/rules | python3 -c '
import json, sys
print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
    [ -n "$expected" ] && [ "$loaded" = "$expected" ] || { echo "Prometheus loaded $loaded rules of ${expected:-?}" >&2; return 1; }
    check_doctor_visible
    result monitoring '"monitoring.yml twice (changed=0), promtool, api/relay/node targets up, all rules loaded, a failed doctor run seen by Prometheus"'
}

# check_doctor_visible: the doctor's timer on every SwiftMail host; a failed
# run is a failed unit, a FAIL line in the journal and, through node_exporter,
# a pending SwiftMailDoctorFailing in Prometheus.
check_doctor_visible() {
    # The doctor's timer runs on every SwiftMail host.
    local address
    for address in "$APP" "$RELAY"; do
        [ "$(ssh_to "$address" systemctl is-active swiftmail-doctor.timer)" = active ] \
            || { echo "swiftmail-doctor.timer is not active on $address" >&2; return 1; }
    done
    # A doctor run that fails (Redis unreachable, as the unit sees it): the unit
    # is failed, the journal says why, and Prometheus sees it through node_exporter.
    # The timer is stopped meanwhile: its run (the first comes 5-6 minutes after
    # boot, about now) started right after ours failed and left the unit
    # "activating", not "failed" (a CI run). A run already under way keeps the
    # environment it started with: each change waits for it to end.
    ssh_to "$APP" 'systemctl stop swiftmail-doctor.timer &&
        mkdir -p /run/systemd/system/swiftmail-doctor.service.d &&
        printf "[Service]\nEnvironment=SWIFTMAIL_REDIS_URL=redis://127.0.0.1:1/0\n" \
            > /run/systemd/system/swiftmail-doctor.service.d/e2e-fail.conf && systemctl daemon-reload &&
        while [ "$(systemctl is-active swiftmail-doctor.service)" = activating ]; do sleep 0.5; done'
    if ssh_to "$APP" systemctl start swiftmail-doctor.service 2>/dev/null; then
        echo "swiftmail doctor passed with Redis unreachable" >&2; return 1
    fi
    [ "$(ssh_to "$APP" systemctl is-failed swiftmail-doctor.service)" = failed ] \
        || { echo "a failed doctor run left the unit not failed" >&2; return 1; }
    local journal
    journal=$(ssh_to "$APP" journalctl -u swiftmail-doctor --no-pager -n 50)
    case "$journal" in *FAIL*) ;; *) echo "no FAIL line of the doctor in the journal" >&2; return 1 ;; esac
    wait_for 60 doctor_failed_seen || { echo "Prometheus does not see the failed doctor run (or SwiftMailDoctorFailing)" >&2; return 1; }
    # Repaired: the next run passes and the unit is no longer failed.
    ssh_to "$APP" 'rm -r /run/systemd/system/swiftmail-doctor.service.d && systemctl daemon-reload &&
        while [ "$(systemctl is-active swiftmail-doctor.service)" = activating ]; do sleep 0.5; done &&
        systemctl start swiftmail-doctor.service && systemctl start swiftmail-doctor.timer' \
        || { echo "swiftmail doctor fails on app after the repair" >&2; return 1; }
}

# relay_tls MODE PORT CERT [ARGS...]: relay_tls.py from the sink's namespace.
relay_tls() {
    local mode=$1 port=$2 cert=$3
    shift 3
    ip netns exec "${PREFIX}sink" python3 "$HERE/relay_tls.py" "$mode" "$RELAY" "$port" "relay.$DOMAIN" "$cert" "$@"
}

# served_by PORT CERT LABEL: STARTTLS on PORT serves CERT (AUTH only after TLS on 587,
# never on the MX port 25).
served_by() {
    local out
    out=$(relay_tls probe "$1" "$2") || { echo "STARTTLS on $1 ($3): $out" >&2; return 1; }
    echo "$out"
    if [ "$1" = 587 ]; then
        echo "$out" | grep -q '"auth_before_tls": false' || { echo "587 offers AUTH before TLS" >&2; return 1; }
        echo "$out" | grep -q '"auth_after_tls": true' || { echo "587 offers no AUTH after TLS" >&2; return 1; }
    else
        echo "$out" | grep -q '"auth_before_tls": false' || { echo "$1 offers AUTH" >&2; return 1; }
        echo "$out" | grep -q '"auth_after_tls": false' || { echo "$1 offers AUTH after TLS" >&2; return 1; }
    fi
}

check_relay_tls() {
    # The certificate the role generated (no operator certificate yet).
    ssh_to "$RELAY" cat /etc/swiftmail/tls/relay.crt > "$RUN/relay-self-signed.crt"
    served_by 25 "$RUN/relay-self-signed.crt" self-signed
    served_by 587 "$RUN/relay-self-signed.crt" self-signed
    # The operator's certificate, given as the role's variables (a renewal
    # looks the same: new files, the play re-run).
    openssl req -x509 -newkey rsa:2048 -nodes -days 90 -subj "/CN=relay.$DOMAIN" \
        -addext "subjectAltName=DNS:relay.$DOMAIN" -keyout "$RUN/relay-operator.key" \
        -out "$RUN/relay-operator.crt" 2> /dev/null
    mkdir -p "$RUN/inventory/host_vars"
    printf 'swiftmail_relay_tls_certificate: %s\nswiftmail_relay_tls_key: %s\n' \
        "$RUN/relay-operator.crt" "$RUN/relay-operator.key" > "$RUN/inventory/host_vars/relay.yml"
    # A session with the old certificate stays open across the renewal.
    rm -f "$RUN/hold.ready" "$RUN/hold.go"
    relay_tls hold 587 "$RUN/relay-self-signed.crt" "$RUN/hold.ready" "$RUN/hold.go" > "$RUN/hold.out" 2>&1 &
    local hold=$! pid_before pid_after
    wait_for 30 test -f "$RUN/hold.ready" || { cat "$RUN/hold.out" >&2; return 1; }
    pid_before=$(ssh_to "$RELAY" systemctl show -p MainPID --value swiftmail-relay)
    ops_play relay-tls site.yml --limit relay
    grep -q 'RUNNING HANDLER \[swiftmail : Reload swiftmail-relay\]' "$RUN/relay-tls.log" \
        || { echo "the new certificate did not reload the relay" >&2; return 1; }
    if grep -q 'RUNNING HANDLER \[swiftmail : Restart swiftmail' "$RUN/relay-tls.log"; then
        echo "the new certificate restarted SwiftMail" >&2; return 1
    fi
    pid_after=$(ssh_to "$RELAY" systemctl show -p MainPID --value swiftmail-relay)
    [ "$pid_before" = "$pid_after" ] || { echo "the relay's PID changed: $pid_before -> $pid_after" >&2; return 1; }
    # tls_reload_check_seconds is an hour here: only the reload can have loaded it.
    served_by 587 "$RUN/relay-operator.crt" operator
    served_by 25 "$RUN/relay-operator.crt" operator
    touch "$RUN/hold.go"
    wait "$hold" || { echo "the session open across the reload was dropped: $(cat "$RUN/hold.out")" >&2; return 1; }
    cat "$RUN/hold.out"
    grep -q '"noop_after": 250' "$RUN/hold.out" || { echo "no NOOP after the reload: $(cat "$RUN/hold.out")" >&2; return 1; }
    result relay_tls '"STARTTLS on 25 and 587 (AUTH after TLS only) with the self-signed certificate, then the operator'"'"'s after a reload (same PID, a session kept)"'
}
