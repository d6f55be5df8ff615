"""Sending domains: DKIM generation, DNS records, verification against a real DNS server."""

from __future__ import annotations

import dataclasses

import falcon.testing
import pytest
import redis
from swiftmail_web.app import create_app

from swiftmail_core import crypto
from swiftmail_core.db import tenant_tx
from swiftmail_core.models import SendingDomain
from swiftmail_core.testing.dns import DnsServer


@pytest.fixture
def dns_server():  # type: ignore[no-untyped-def]
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def dns_client(runtime, settings, redis_url, web_config, dns_server):  # type: ignore[no-untyped-def]
    local = dataclasses.replace(settings, dns_nameservers=("127.0.0.1",),
                                dns_port=dns_server.port)
    app = create_app(local, runtime.plugins, redis_client=redis.Redis.from_url(redis_url),
                     config=web_config)
    return falcon.testing.TestClient(app)


def _publish(server: DnsServer, records: list[dict], skip: str = "") -> None:
    for record in records:
        if record["purpose"] == skip:
            continue
        value = record["value"]
        if record["type"] == "TXT":
            # Long TXT values are split into 255-byte strings, as real zones do.
            chunks = [value[i:i + 200] for i in range(0, len(value), 200)]
            server.add(record["name"], "TXT", " ".join(f'"{c}"' for c in chunks))
        else:
            server.add(record["name"], record["type"], value + ".")


def test_create_returns_records_and_encrypts_key(owner_a, settings) -> None:
    made = owner_a.post("/v1/sending-domains", {"domain": "News.Example.com"})
    assert made.status_code == 201, made.text
    body = made.json
    assert body["domain"] == "news.example.com"
    assert body["return_path_domain"] == "bounces.news.example.com"
    kinds = {r["purpose"]: r for r in body["dns_records"]}
    assert set(kinds) == {"dkim", "spf", "dmarc", "return_path"}
    assert kinds["dkim"]["name"] == f"{body['dkim_selector']}._domainkey.news.example.com"
    assert kinds["dkim"]["value"].startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # RSA-2048 SPKI
    assert "PRIVATE" not in made.text
    with tenant_tx(owner_a.tenant_id):
        row = SendingDomain.get(SendingDomain.id == body["id"])
    stored = bytes(row.dkim_private_key_encrypted)
    assert b"PRIVATE KEY" not in stored
    assert crypto.decrypt(settings.secret_key, stored).startswith(b"-----BEGIN PRIVATE KEY")
    assert owner_a.post("/v1/sending-domains", {"domain": "news.example.com"}).status_code == 409
    assert owner_a.post("/v1/sending-domains", {"domain": "not a domain"}).status_code == 422


def test_verify_reports_each_record(dns_client, owner_a, dns_server) -> None:
    made = owner_a.post("/v1/sending-domains", {"domain": "mail.example.org"}).json
    auth = {"Authorization": f"Bearer {owner_a.key}"}
    verify = f"/v1/sending-domains/{made['id']}/verify"
    _publish(dns_server, made["dns_records"], skip="return_path")
    first = dns_client.simulate_post(verify, headers=auth).json
    states = {k: v["state"] for k, v in first["verification"]["records"].items()}
    assert states == {"dkim": "verified", "spf": "verified", "dmarc": "verified",
                      "return_path": "missing"}
    assert first["verified_at"] is None
    dns_server.add(made["return_path_domain"], "CNAME", "somewhere-else.example.")
    second = dns_client.simulate_post(verify, headers=auth).json
    assert second["verification"]["records"]["return_path"]["state"] == "mismatch"
    dns_server.clear(made["return_path_domain"])
    _publish(dns_server, [r for r in made["dns_records"] if r["purpose"] == "return_path"])
    third = dns_client.simulate_post(verify, headers=auth).json
    assert third["verified_at"] is not None
    assert ("mail.example.org", "TXT") in dns_server.queries


def test_dns_failure_is_reported_not_raised(dns_client, owner_a, dns_server) -> None:
    made = owner_a.post("/v1/sending-domains", {"domain": "broken.example.net"}).json
    dns_server.servfail.add("broken.example.net")
    result = dns_client.simulate_post(f"/v1/sending-domains/{made['id']}/verify",
                                      headers={"Authorization": f"Bearer {owner_a.key}"})
    assert result.status_code == 200
    assert result.json["verification"]["records"]["spf"]["state"] == "error"


def test_roles_and_isolation(owner_a, editor_a, owner_b) -> None:
    assert editor_a.post("/v1/sending-domains", {"domain": "e.example.com"}).status_code == 403
    theirs = owner_b.post("/v1/sending-domains", {"domain": "b.example.com"}).json
    path = f"/v1/sending-domains/{theirs['id']}"
    assert owner_a.get(path).status_code == 404
    assert owner_a.post(path + "/verify").status_code == 404
    assert owner_a.delete(path).status_code == 404
    # Same domain name in another tenant is allowed (each proves it by DNS).
    assert owner_a.post("/v1/sending-domains", {"domain": "b.example.com"}).status_code == 201


def test_records_under_a_loopback_public_url_come_with_a_warning(
        runtime, settings, redis_url, web_config, make_tenant) -> None:  # type: ignore[no-untyped-def]
    # Regression: the default public_url (http://127.0.0.1:8000) gave records such as
    # include:_spf.127.0.0.1 and bounces.127.0.0.1 with no word that they cannot work.
    from swiftmail_core.apikeys import create_api_key

    tenant = make_tenant("dns")
    key = create_api_key(tenant.id, role="owner").key
    headers = {"Authorization": f"Bearer {key}"}
    for public_url, warned in (("http://127.0.0.1:8000", True),
                               ("https://mail.example.com", False)):
        local = dataclasses.replace(settings, public_url=public_url)
        client = falcon.testing.TestClient(create_app(
            local, runtime.plugins, redis_client=redis.Redis.from_url(redis_url),
            config=web_config))
        made = client.simulate_post("/v1/sending-domains", headers=headers,
                                    json={"domain": f"w{int(warned)}.example.com"})
        assert made.status_code == 201, made.text
        assert bool(made.json["warnings"]) is warned
        if warned:
            assert "SWIFTMAIL_PUBLIC_URL" in made.json["warnings"][0]


def test_doctor_names_the_dns_targets_setting(settings) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.plugins import PluginManager

    loopback = dataclasses.replace(settings, public_url="http://127.0.0.1:8000")
    (finding,) = [f for f in PluginManager.load(loopback).doctor_checks()
                  if f.check == "sending-domain DNS targets"]
    assert not finding.ok and "public_url" in finding.detail
    public = dataclasses.replace(settings, public_url="https://mail.example.com")
    (finding,) = [f for f in PluginManager.load(public).doctor_checks()
                  if f.check == "sending-domain DNS targets"]
    assert finding.ok and "_spf.mail.example.com" in finding.detail


def test_a_unicode_domain_is_stored_in_ascii_as_from_domains_are(owner_a) -> None:
    # Regression: the form refused IDN domains ("must be a domain name") while the relay
    # accepts a From written with Unicode labels and looks its domain up in ASCII.
    from swiftmail_relay.message_checks import ascii_domain as relay_from_domain

    from swiftmail_core.rendering.headers import normalise_address

    made = owner_a.post("/v1/sending-domains", {"domain": "Bücher.Example."})
    assert made.status_code == 201, made.text
    body = made.json
    assert body["domain"] == "xn--bcher-kva.example" == relay_from_domain("bücher.example")
    assert normalise_address("from_email", "news@bücher.example") == f"news@{body['domain']}"
    assert body["return_path_domain"] == "bounces.xn--bcher-kva.example"
    names = {record["name"] for record in body["dns_records"]}
    assert f"_dmarc.{body['domain']}" in names and all(name.isascii() for name in names)
    # The same domain, in either form, is the same domain.
    assert owner_a.post("/v1/sending-domains",
                        {"domain": "xn--bcher-kva.example"}).status_code == 409
    made = owner_a.post("/v1/sending-domains", {"domain": "пример.рф",
                                                "tracking_domain": "клик.пример.рф"})
    assert made.status_code == 201, made.text
    assert (made.json["domain"], made.json["tracking_domain"]) == (
        "xn--e1afmkfd.xn--p1ai", "xn--h1adbc.xn--e1afmkfd.xn--p1ai")


@pytest.mark.parametrize(("field", "value"), [
    ("domain", "bü cher.example"), ("domain", "xn--zz.example"), ("domain", "bücher..example"),
    ("domain", "bücher"), ("return_path_domain", "bounces.b\u00fccher_x.example"),
    ("tracking_domain", "\u200b.example"),
])
def test_an_invalid_unicode_domain_gets_a_problem_naming_its_field(
        owner_a, field: str, value: str) -> None:  # type: ignore[no-untyped-def]
    body = {"domain": "fine.example", field: value}
    refused = owner_a.post("/v1/sending-domains", body)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert [error["field"] for error in refused.json["errors"]] == [field]
