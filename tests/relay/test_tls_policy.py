"""Outbound transport security: MTA-STS, DANE and TLS-RPT against loopback servers.

Each test runs its own CA, an SMTP server with STARTTLS on 127.0.0.x, an
HTTPS policy host on loopback and records in the loopback DNS server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import uuid

import pytest
from click.testing import CliRunner
from swiftmail_relay.config import RelayConfig
from swiftmail_relay.delivery import Deliverer
from swiftmail_relay.mta_sts import PolicyError, parse_policy
from swiftmail_relay.mx import MxResolver
from swiftmail_relay.tls_policy import TlsPolicies
from swiftmail_relay.tls_report import RedisTlsRecorder, TlsResult, build_reports

from swiftmail_core.settings import Settings
from tests.relay.tls_peers import Pki, https_server, smtp_server, tlsa_201, tlsa_311

MESSAGE = b"From: a@sender.example\r\nTo: u@x\r\nSubject: t\r\n\r\nhello\r\n"


class ListRecorder:
    """Keep TLS results in a list."""

    def __init__(self) -> None:
        self.results: list[TlsResult] = []

    async def record(self, result: TlsResult) -> None:
        """Keep one result."""
        self.results.append(result)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class World:
    """One destination domain with its MX, PKI and policy host."""

    domain: str
    mx: str
    settings: Settings
    config: RelayConfig
    pki: Pki
    handler: object
    recorder: ListRecorder

    def deliver(self) -> str:
        """Send one message to the domain; return the reply as text."""
        async def run() -> str:
            policies = TlsPolicies(self.settings, self.config, recorder=self.recorder)
            deliverer = Deliverer(self.config, tls_policies=policies)
            route = await MxResolver(self.settings, self.config).route(self.domain)
            try:
                replies = await asyncio.wait_for(deliverer.send(
                    route, "b@sender.example", [f"u@{self.domain}"], MESSAGE), 30)
            finally:
                await deliverer.close()
            return str(replies[f"u@{self.domain}"])

        return asyncio.run(run())

    @property
    def results(self) -> list[tuple[str, str]]:
        """Return (policy type, result) of each recorded session."""
        return [(r.policy_type, r.result) for r in self.recorder.results]


@pytest.fixture
def world(tmp_path, dns_server):  # type: ignore[no-untyped-def]
    """Factory: a domain whose MX (127.0.0.21) offers STARTTLS with a chosen certificate."""
    stops = []

    def build(*, cert_from: str = "ca", sts: str | None = None, mx_pattern: str | None = None,
              tlsa: str | None = None, authenticated: bool = True) -> World:
        domain = f"t{uuid.uuid4().hex[:10]}.example"
        mx = f"mx.{domain}"
        pki = Pki()
        ca_file = pki.write_ca(tmp_path / f"{domain}.ca.pem")
        issuer = pki if cert_from == "ca" else Pki("Some Other CA")
        chain, key, leaf = issuer.issue(tmp_path, mx)
        port = _free_port("127.0.0.21")
        controller, handler = smtp_server("127.0.0.21", port, chain, key)
        stops.append(controller.stop)
        dns_server.add(domain, "MX", f"10 {mx}.")
        dns_server.add(mx, "A", "127.0.0.21")
        options = {}
        if sts is not None:
            policy_host = f"mta-sts.{domain}"
            web_chain, web_key, _ = pki.issue(tmp_path, policy_host)
            body = (f"version: STSv1\nmode: {sts}\nmx: {mx_pattern or mx}\nmax_age: 86400\n")
            web = https_server("127.0.0.1", web_chain, web_key, body.encode())
            stops.extend((web.shutdown, web.server_close))
            dns_server.add(f"_mta-sts.{domain}", "TXT", '"v=STSv1; id=20261205T1"')
            dns_server.add(policy_host, "A", "127.0.0.1")
            options["mta_sts_port"] = web.server_address[1]
        if tlsa is not None:
            name = f"_{port}._tcp.{mx}"
            record = {"ee": lambda: tlsa_311(leaf), "ta": lambda: tlsa_201(issuer.cert),
                      "wrong": lambda: "3 1 1 " + "00" * 32}[tlsa]()
            dns_server.add(name, "TLSA", record)
            if authenticated:
                dns_server.authenticated.add(name)
        settings = Settings(data_dir=tmp_path, dns_nameservers=("127.0.0.1",),
                            dns_port=dns_server.port)
        config = RelayConfig.from_settings(
            settings, spool_dir=str(tmp_path / "spool"), smtp_port=port,
            allow_networks="127.0.0.0/8", connect_timeout=5, command_timeout=5, dns_timeout=3,
            hostname="relay.test", tls_ca_file=str(ca_file), **options)
        return World(domain, mx, settings, config, pki, handler, ListRecorder())

    yield build
    for stop in stops:
        stop()


def test_mta_sts_enforce_delivers_over_verified_tls(world) -> None:  # type: ignore[no-untyped-def]
    destination = world(sts="enforce")
    assert destination.deliver().startswith("250")
    assert destination.handler.tls == [True]
    assert destination.results == [("sts", "success")]


def test_mta_sts_enforce_defers_on_an_untrusted_certificate(world) -> None:  # type: ignore[no-untyped-def]
    destination = world(sts="enforce", cert_from="other")
    reply = destination.deliver()
    assert reply.startswith("451 4.7.5"), reply
    assert destination.handler.messages == []  # never sent in clear either
    assert destination.results == [("sts", "certificate-not-trusted")]


def test_mta_sts_enforce_defers_when_the_mx_matches_no_pattern(world) -> None:  # type: ignore[no-untyped-def]
    destination = world(sts="enforce", mx_pattern="*.elsewhere.example")
    reply = destination.deliver()
    assert reply.startswith("451 4.7.5") and "matches no mx pattern" in reply, reply
    assert destination.handler.messages == []
    assert destination.results == [("sts", "validation-failure")]


def test_mta_sts_testing_only_reports(world) -> None:  # type: ignore[no-untyped-def]
    destination = world(sts="testing", cert_from="other")
    assert destination.deliver().startswith("250")
    assert destination.handler.tls == [True]  # opportunistic TLS after the report
    assert destination.results == [("sts", "certificate-not-trusted")]


def test_no_policy_stays_opportunistic(world) -> None:  # type: ignore[no-untyped-def]
    destination = world(cert_from="other")
    assert destination.deliver().startswith("250")
    assert destination.handler.tls == [True]
    assert destination.results == []


def test_dane_ee_matches_the_server_key(world) -> None:  # type: ignore[no-untyped-def]
    # An untrusted issuer does not matter to DANE-EE; it overrides MTA-STS too.
    destination = world(cert_from="other", tlsa="ee", sts="enforce")
    assert destination.deliver().startswith("250")
    assert destination.results == [("tlsa", "success")]


def test_dane_ta_matches_the_issuer_in_the_chain(world) -> None:  # type: ignore[no-untyped-def]
    destination = world(cert_from="other", tlsa="ta")
    assert destination.deliver().startswith("250")
    assert destination.results == [("tlsa", "success")]


def test_dane_mismatch_defers(world) -> None:  # type: ignore[no-untyped-def]
    destination = world(tlsa="wrong")
    reply = destination.deliver()
    assert reply.startswith("451 4.7.5"), reply
    assert destination.handler.messages == []
    assert destination.results == [("tlsa", "tlsa-invalid")]


def test_tlsa_without_the_ad_bit_is_ignored(world) -> None:  # type: ignore[no-untyped-def]
    destination = world(tlsa="wrong", authenticated=False)
    assert destination.deliver().startswith("250")
    assert destination.results == []


def test_policy_parser_names_the_bad_field() -> None:
    with pytest.raises(PolicyError, match="mode"):
        parse_policy("x.example", "1", "version: STSv1\nmode: maybe\nmx: a\nmax_age: 5\n")
    with pytest.raises(PolicyError, match="max_age"):
        parse_policy("x.example", "1", "version: STSv1\nmode: enforce\nmx: a\nmax_age: soon\n")
    policy = parse_policy("x.example", "1",
                          "version: STSv1\nmode: enforce\nmx: *.x.example\nmx: mail.y\nmax_age: 9\n")
    assert policy.mx_matches("mx1.x.example") and policy.mx_matches("mail.y")
    assert not policy.mx_matches("a.b.x.example") and not policy.mx_matches("x.example")


def test_daily_report_from_redis(redis_url, redis_client, run_id, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import redis.asyncio as aioredis

    prefix = f"test:{run_id}:{uuid.uuid4().hex[:6]}"

    async def record() -> None:
        client = aioredis.from_url(redis_url)
        recorder = RedisTlsRecorder(client, prefix)
        policy = ("version: STSv1", "mode: enforce", "mx: mx.r.example", "max_age: 86400")
        for result in ("success", "success", "certificate-expired"):
            await recorder.record(TlsResult("r.example", "sts", policy, "mx.r.example",
                                            "192.0.2.1", result))
        await client.aclose()

    asyncio.run(record())
    import datetime as dt

    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    (report,) = build_reports(redis_client, prefix, day, organization="relay.test",
                              contact="postmaster@relay.test")
    (policy,) = report["policies"]
    assert policy["policy"]["policy-type"] == "sts"
    assert policy["policy"]["policy-string"][1] == "mode: enforce"
    assert policy["summary"] == {"total-successful-session-count": 2,
                                 "total-failure-session-count": 1}
    assert policy["failure-details"] == [{
        "result-type": "certificate-expired", "receiving-mx-hostname": "mx.r.example",
        "receiving-ip": "192.0.2.1", "failed-session-count": 1}]
    assert report["date-range"]["start-datetime"] == f"{day}T00:00:00Z"

    from swiftmail_relay.plugin import relay_group

    from swiftmail_core.cli.state import CliState
    from swiftmail_core.errors import ValidationError

    monkeypatch.setenv("SWIFTMAIL_PLUGIN_RELAY_REDIS_PREFIX", prefix)
    state = CliState(config=str(tmp_path / "none.toml"),
                     overrides={"data_dir": str(tmp_path), "redis_url": redis_url})
    bad = CliRunner().invoke(relay_group, ["tls-report", "--date", "yesterday"], obj=state)
    assert isinstance(bad.exception, ValidationError) and "date" in str(bad.exception)
    good = CliRunner().invoke(relay_group, ["tls-report", "--date", day], obj=state)
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)[0]["policies"][0]["summary"][
        "total-failure-session-count"] == 1


def test_policy_is_cached_and_refetched_when_its_id_changes(world, dns_server) -> None:  # type: ignore[no-untyped-def]
    destination = world(sts="enforce")
    txt = f"_mta-sts.{destination.domain}"
    now = [1000.0]
    fetcher = TlsPolicies(destination.settings, destination.config).fetcher
    fetcher.clock = lambda: now[0]

    def lookup():  # type: ignore[no-untyped-def]
        return asyncio.run(fetcher.policy(destination.domain))

    def asked() -> int:
        return sum(1 for name, _ in dns_server.queries if name == txt)

    first = lookup()
    assert first is not None and first.policy_id == "20261205T1"
    before = asked()
    assert lookup() is first and asked() == before  # no DNS within the recheck interval
    dns_server.clear(txt)
    dns_server.add(txt, "TXT", '"v=STSv1; id=20261205T2"')
    now[0] += 301
    assert lookup().policy_id == "20261205T2"
