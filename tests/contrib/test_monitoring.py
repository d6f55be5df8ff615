"""contrib/ansible/monitoring: alert rules and the Grafana dashboard use metrics SwiftMail exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.contrib.role_files import ANSIBLE_DIR, exported_metrics, load_yaml

MONITORING = Path(__file__).resolve().parents[2] / "contrib" / "ansible" / "monitoring"
METRIC = re.compile(r"\b(swiftmail_[a-z_]+)\b")
# What a histogram adds to its name in the exposition.
SUFFIXES = ("_bucket", "_sum", "_count")


def _known(name: str, names: set[str]) -> bool:
    return name in names or any(name.endswith(s) and name[: -len(s)] in names for s in SUFFIXES)


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana-swiftmail.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def test_the_alert_rules_cover_what_on_call_needs() -> None:
    rules = yaml.safe_load((MONITORING / "swiftmail-alerts.yml").read_text())
    alerts = {rule["alert"]: rule["expr"] for rule in rules["groups"][0]["rules"]}
    needed = {"SwiftMailQueueAge": "swiftmail_outbox_oldest_due_age_seconds",
              "SwiftMailComplaintRate": "swiftmail_tenant_complaint_rate",
              "SwiftMailTrackingBacklog": "swiftmail_tracking_backlog",
              "SwiftMailReplicationLag": "swiftmail_db_replication_lag_seconds",
              "SwiftMailJobsFailing": "swiftmail_jobs_failed_last_hour",
              "SwiftMailRelayCertificateExpiry":
                  "swiftmail_relay_tls_certificate_expiry_timestamp_seconds",
              "SwiftMailHAProxyCertificateExpiry":
                  "swiftmail_haproxy_certificate_expiry_timestamp_seconds",
              "SwiftMailRelayDeferralRate": "sum by (provider)",
              "SwiftMailRelayBounceRate": "sum by (provider)"}
    for alert, fragment in needed.items():
        assert fragment in alerts[alert], alert
    names = exported_metrics()
    for alert, expr in alerts.items():
        unknown = {m for m in METRIC.findall(expr) if not _known(m, names)}
        assert not unknown, f"{alert}: {unknown}"


def test_every_dashboard_query_uses_exported_metrics() -> None:
    names = exported_metrics()
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    used = set()
    for title, expr in exprs:
        found = METRIC.findall(expr)
        assert found, title
        unknown = {m for m in found if not _known(m, names)}
        assert not unknown, f"{title}: {unknown}"
        used |= set(found)
    for name in ("swiftmail_outbox_oldest_due_age_seconds", "swiftmail_tenant_complaint_rate",
                 "swiftmail_db_replication_lag_seconds", "swiftmail_relay_deferrals_total",
                 "swiftmail_relay_tls_certificate_expiry_timestamp_seconds"):
        assert name in used, name


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads((MONITORING / "grafana-swiftmail.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert [t["refId"] for t in panel["targets"]] == \
                [chr(65 + i) for i in range(len(panel["targets"]))]


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt install prometheus)")
def test_promtool_checks_the_rules_and_their_unit_tests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert PROMTOOL is not None
    for args in (["check", "rules", "swiftmail-alerts.yml"],
                 ["test", "rules", "swiftmail-alerts.test.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    # The dashboard's queries parse as PromQL: check them as recording rules.
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, (_title, expr) in enumerate(_dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(recording))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("handlers", "reload", "wait_module"), [
    ("monitoring.yml", "Reload Prometheus", "ansible.builtin.uri"),
    ("roles/swiftmail/handlers/main.yml", "Reload swiftmail-relay", "ansible.builtin.wait_for"),
])
def test_a_sighup_reload_first_waits_for_the_service(
    handlers: str, reload: str, wait_module: str
) -> None:
    """A reload right after a restart must not signal a process that has no SIGHUP handler yet.

    Both units reload with ``kill -HUP``; a process that has not set its handler
    exits on it, and systemd counts that as clean, so Restart=on-failure leaves
    it down. A CI run lost Prometheus so (monitoring.yml's first run: restart,
    then at once reload; the second run started it again, "changed").
    """
    loaded = load_yaml(ANSIBLE_DIR / handlers)
    if handlers == "monitoring.yml":
        loaded = next(play for play in loaded if play["hosts"] == "swiftmail_monitoring")["handlers"]
    names = [handler["name"] for handler in loaded]
    # Handlers run in the order they are written: the restart, the wait, the reload.
    assert names.index(reload.replace("Reload", "Restart")) < names.index(reload) - 1
    wait = loaded[names.index(reload) - 1]
    assert wait.get("listen") == reload and wait_module in wait, wait
