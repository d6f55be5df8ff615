"""`swiftmail relay reinject`: a dead relay host's spool into a live relay."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner
from swiftmail_relay import spool_move
from swiftmail_relay.plugin import relay_group
from swiftmail_relay.spool import DELIVERED, Envelope, Recipient, Spool, SpoolError, new_id
from swiftmail_relay.spool_lock import SpoolLock

from swiftmail_core.cli.state import CliState
from swiftmail_core.errors import ConfigurationError
from swiftmail_core.testing.smtp_sink import SmtpSink

RAW = b"From: n@sender.test\r\nTo: x@example.test\r\nSubject: s\r\n\r\nbody\r\n"


def _invoke(tmp_path, *args: str):  # type: ignore[no-untyped-def]
    state = CliState(config=str(tmp_path / "none.toml"),
                     overrides={"data_dir": str(tmp_path / "live")})
    return CliRunner().invoke(relay_group, list(args), obj=state)


def _dead_spool(tmp_path) -> tuple[Spool, dict[str, str]]:  # type: ignore[no-untyped-def]
    dead = Spool(tmp_path / "dead")
    ids = {}
    for name, recipients in (("single", ["a@example.test"]),
                             ("partial", ["b@example.test", "c@example.test"]),
                             ("finished", ["d@example.test"]),
                             ("held", ["e@example.test"])):
        envelope = Envelope(id=new_id(), mail_from="n@sender.test", tenant_id="t1",
                            recipients=[Recipient(a, ledger_id=i + 1)
                                        for i, a in enumerate(recipients)])
        ids[name] = dead.write(envelope, RAW)
        if name == "partial":
            envelope.recipients[0].status = DELIVERED
            dead.save_state(envelope)
        if name == "finished":
            envelope.recipients[0].status = DELIVERED
            dead.save_state(envelope)
        if name == "held":
            dead.move(ids[name], dead.queue, dead.hold)
    return dead, ids


def test_reinject_moves_pending_mail_and_keeps_progress(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dead, ids = _dead_spool(tmp_path)
    result = _invoke(tmp_path, "reinject", str(dead.root))
    assert result.exit_code == 0, result.output
    assert "reinjected 2 messages" in result.output and "1 already finished" in result.output
    assert "1 held left" in result.output
    live = Spool(tmp_path / "live" / "spool")
    assert sorted(live.scan()) == sorted([ids["single"], ids["partial"]])  # same queue ids
    partial = live.read_envelope(ids["partial"])
    assert [r.address for r in partial.pending] == ["c@example.test"]
    assert [r.ledger_id for r in partial.recipients] == [1, 2]
    assert live.read_body(ids["single"]) == RAW
    assert sorted(live.take_new()) == sorted([ids["single"], ids["partial"]])
    assert list(dead.scan()) == [] and list(dead.scan(dead.hold)) == [ids["held"]]


def test_reinjected_mail_is_delivered_by_the_live_relay(tmp_path, relay_factory, dns_server) -> None:  # type: ignore[no-untyped-def]
    dead, _ = _dead_spool(tmp_path)
    with SmtpSink() as sink:
        relay = relay_factory(sink.port, relayhost="127.0.0.1", warmup=False)
        spool_move.reinject(dead.root, relay.spool)

        async def deliver() -> None:
            await relay.start()
            try:
                await relay.idle(30)
            finally:
                await relay.stop()

        asyncio.run(deliver())
        assert sorted(sink.handler.per_recipient) == ["a@example.test", "c@example.test"]


def test_reinject_refuses_while_a_relay_delivers_the_spool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dead, _ = _dead_spool(tmp_path)
    lock = SpoolLock(dead.root).acquire()
    try:
        with pytest.raises(ConfigurationError, match="already delivers"):
            spool_move.reinject(dead.root, Spool(tmp_path / "live"))
    finally:
        lock.release()
    assert len(list(dead.scan())) == 3
    same = _invoke(tmp_path, "reinject", str(tmp_path / "live" / "spool"))
    assert same.exit_code != 0


def test_a_failed_or_interrupted_reinject_loses_and_doubles_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    dead, ids = _dead_spool(tmp_path)
    live = Spool(tmp_path / "live")

    def full(self, items):  # type: ignore[no-untyped-def]
        raise SpoolError("spool cannot write: No space left", no_space=True)

    with monkeypatch.context() as patch:
        patch.setattr(Spool, "stage", full)
        with pytest.raises(SpoolError):
            spool_move.reinject(dead.root, live)
    assert len(list(dead.scan())) == 3 and list(live.scan()) == []
    # Interrupted after the durable write, before the old copies were removed:
    with monkeypatch.context() as patch:
        patch.setattr(Spool, "remove", lambda self, queue_id, directory=None: None)
        spool_move.reinject(dead.root, live)
    assert len(list(dead.scan())) == 3
    spool_move.reinject(dead.root, live)  # run again: finishes, no second copy
    assert sorted(live.scan()) == sorted([ids["single"], ids["partial"]])
    assert list(dead.scan()) == []


def test_a_second_run_never_overwrites_the_targets_newer_progress(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression: a run interrupted after the durable write left the old copies; the
    # second run wrote them over the target's copies, progress included, so recipients
    # the target had delivered since (or a message it had finished) were sent again.
    dead, ids = _dead_spool(tmp_path)
    live = Spool(tmp_path / "live")
    with monkeypatch.context() as patch:
        patch.setattr(Spool, "remove", lambda self, queue_id, directory=None: None)
        spool_move.reinject(dead.root, live)
    # Meanwhile the live relay delivered to b and c and finished the partial message, and
    # delivered to a but had not removed that one yet.
    live.remove(ids["partial"])
    single = live.read_envelope(ids["single"])
    single.recipients[0].status = DELIVERED
    live.save_state(single)
    report = spool_move.reinject(dead.root, live)
    assert (report.moved, report.already_there) == (0, 2)
    assert list(live.scan()) == [ids["single"]]
    assert live.read_envelope(ids["single"]).pending == []
    assert list(dead.scan()) == []


def test_reinject_copies_the_dead_relays_ledger_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_relay.spool_ledger import SpoolLedger, ledger_key, write_once

    dead = Spool(tmp_path / "dead")
    gone = Envelope(id=new_id(), mail_from="n@sender.test", tenant_id="t1",
                    recipients=[Recipient("a@example.test", ledger_id=41)])
    queued = Envelope(id=new_id(), mail_from="n@sender.test", tenant_id="t1",
                      recipients=[Recipient("b@example.test", ledger_id=42)])
    write_once(dead, [(gone, RAW), (queued, RAW)])
    dead.remove(gone.id)  # delivered and finished before the host died
    live = Spool(tmp_path / "live")
    report = spool_move.reinject(dead.root, live)
    assert report.moved == 1 and report.records == 2
    ledger = SpoolLedger(live)
    assert ledger.find(ledger_key("t1", 41)) == gone.id
    assert ledger.find(ledger_key("t1", 42)) == queued.id
    # A worker resending either row to the live relay is told "already have it".
    again = [(Envelope(id=new_id(), mail_from="n@sender.test", tenant_id="t1",
                       recipients=[Recipient(address, ledger_id=ident)]), RAW)
             for address, ident in (("a@example.test", 41), ("b@example.test", 42))]
    assert write_once(live, again) == [(gone.id, True), (queued.id, True)]
    assert list(live.scan()) == [queued.id]
