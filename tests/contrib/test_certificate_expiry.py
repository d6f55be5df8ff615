"""The role's HAProxy certificate-expiry recorder writes a metric node_exporter can read."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.contrib.role_files import render

OPENSSL = shutil.which("openssl")
PROMTOOL = shutil.which("promtool")
METRIC = "swiftmail_haproxy_certificate_expiry_timestamp_seconds"


def _certificate(path: Path, days: int) -> None:
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
                    "-subj", "/CN=mail.example.test", "-keyout", f"{path}.key", "-out", str(path)],
                   check=True, capture_output=True, timeout=60)


def _not_after(path: Path) -> int:
    end = subprocess.run([OPENSSL, "x509", "-noout", "-enddate", "-in", str(path)], check=True,
                         capture_output=True, text=True, timeout=30).stdout.strip()
    moment = datetime.strptime(end.removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z")
    return int(moment.replace(tzinfo=UTC).timestamp())


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "swiftmail-certificate-expiry"
    script.write_text(render("swiftmail-certificate-expiry.sh.j2", {}))
    script.chmod(0o755)
    return script


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_writes_each_certificates_not_after_atomically(tmp_path: Path) -> None:
    soon, later = tmp_path / "soon.pem", tmp_path / "later.pem"
    _certificate(soon, 10)
    _certificate(later, 400)
    textfiles = tmp_path / "node-exporter"

    subprocess.run([str(_script(tmp_path)), str(textfiles), str(soon), str(later)], check=True,
                   timeout=60)

    written = (textfiles / "swiftmail-certificates.prom").read_text()
    assert f'{METRIC}{{path="{soon}"}} {_not_after(soon)}\n' in written
    assert f'{METRIC}{{path="{later}"}} {_not_after(later)}\n' in written
    assert os.listdir(textfiles) == ["swiftmail-certificates.prom"]
    if PROMTOOL:
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=written, capture_output=True,
                              text=True, timeout=60, check=False)
        assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_an_unreadable_certificate_fails_the_unit_and_keeps_the_last_file(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    _certificate(cert, 30)
    textfiles = tmp_path / "node-exporter"
    script = _script(tmp_path)
    subprocess.run([str(script), str(textfiles), str(cert)], check=True, timeout=60)
    before = (textfiles / "swiftmail-certificates.prom").read_text()

    failed = subprocess.run([str(script), str(textfiles), str(tmp_path / "missing.pem")],
                            capture_output=True, timeout=60, check=False)

    assert failed.returncode != 0
    assert (textfiles / "swiftmail-certificates.prom").read_text() == before
    assert os.listdir(textfiles) == ["swiftmail-certificates.prom"]


def test_the_default_is_haproxys_certificate_and_debians_textfile_directory() -> None:
    text = render("swiftmail-certificate-expiry.sh.j2", {})
    assert 'set -- "/etc/haproxy/certs/swiftmail.pem"' in text
    assert 'dir=${1:-"/var/lib/prometheus/node-exporter"}' in text
