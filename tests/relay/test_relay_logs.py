"""`swiftmail relay run` logs JSON, one line per message event, and no warning per session."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from swiftmail_core.apikeys import create_api_key
from swiftmail_core.testing.smtp_sink import SmtpSink, free_port

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = (b"From: news@logs.example\r\nTo: someone@dest.example\r\nSubject: logs\r\n"
           b"Message-ID: <logs-1@logs.example>\r\n\r\nhello\r\n")


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_message_event_is_one_json_line_and_sessions_warn_nothing(
    test_environ, runtime, tenant_a, sending_domain, tmp_path, run_id
) -> None:  # type: ignore[no-untyped-def]
    sending_domain(tenant_a.id, "logs.example")
    key = create_api_key(tenant_a.id, role="editor").key
    port = free_port()
    output = tmp_path / "relay.log"
    with SmtpSink() as sink:
        sink.handler.rcpt_reply = lambda address: (
            "550 5.1.1 no such user" if address.startswith("gone@")
            else "451 4.7.1 try again later" if address.startswith("later@") else None)
        environ = {
            **os.environ, **test_environ,
            "SWIFTMAIL_LOG_FORMAT": "json",
            "SWIFTMAIL_PLUGIN_RELAY_SPOOL_DIR": str(tmp_path / "spool"),
            "SWIFTMAIL_PLUGIN_RELAY_SUBMISSION_LISTEN": f"127.0.0.1:{port}",
            "SWIFTMAIL_PLUGIN_RELAY_TRUSTED_LISTENERS": f"127.0.0.1:{port}",
            "SWIFTMAIL_PLUGIN_RELAY_INTAKE_LISTEN": "off",
            "SWIFTMAIL_PLUGIN_RELAY_RELAYHOST": "127.0.0.1",
            "SWIFTMAIL_PLUGIN_RELAY_SMTP_PORT": str(sink.port),
            "SWIFTMAIL_PLUGIN_RELAY_ALLOW_NETWORKS": "127.0.0.0/8",
            "SWIFTMAIL_PLUGIN_RELAY_REDIS_PREFIX": f"{run_id}:relay-logs",
        }
        with output.open("w") as handle:
            # -W error: a warning anywhere (aiosmtpd's per-session ones included) is an error.
            process = subprocess.Popen(
                [sys.executable, "-W", "error", "-m", "swiftmail_core.cli", "relay", "run"],
                cwd=ROOT, env=environ, stdout=handle, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, output.read_text()
                try:
                    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the relay did not listen"
                    time.sleep(0.1)
            for _ in range(2):  # two sessions: a per-session warning would show twice
                client.ehlo()
                assert client.login("app", key)[0] == 235  # AUTH without TLS, trusted listener
                refused = client.sendmail("news@logs.example", [
                    "someone@dest.example", "gone@dest.example", "later@dest.example"], MESSAGE)
                assert refused == {}
                client.quit()
                client = smtplib.SMTP("127.0.0.1", port, timeout=10)
            client.quit()
            wanted = {"message_delivered", "message_bounced", "message_deferred"}
            while not wanted <= {e["event"] for e in _events(output)}:
                assert process.poll() is None, output.read_text()
                assert time.monotonic() < deadline + 60, output.read_text()
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
    text = output.read_text()
    assert code == 0, text
    assert "Warning" not in text and "Traceback" not in text, text
    events = _events(output)  # every line is JSON (journald keeps it as MESSAGE)
    accepted = [e for e in events if e["event"] == "message_accepted"
                and e["source"] == "submission"]
    assert len(accepted) == 2
    assert all(e["tenant_id"] == str(tenant_a.id) for e in accepted)
    # The bounces' DSNs are spooled (and logged) too, as source "dsn" without a tenant.
    assert any(e["event"] == "message_accepted" and e["source"] == "dsn" for e in events)
    by_event = {e["event"]: e for e in events
                if e["event"] in wanted and e["tenant_id"] is not None}
    for event in by_event.values():
        assert event["queue_id"] in {e["queue_id"] for e in accepted}
        assert event["tenant_id"] == str(tenant_a.id)
        assert event["recipient_domain"] == "dest.example"
        assert event["provider"] == "other" and event["attempt"] == 1
        assert event["level"] == "info" and event["timestamp"]
    assert by_event["message_delivered"]["reply"].startswith("250")
    assert by_event["message_bounced"]["reply"].startswith("550")
    assert by_event["message_bounced"]["bounce_class"]
    assert by_event["message_deferred"]["reply"].startswith("451")
