"""`swiftmail relay queue/hold/release/purge/retry` on a real spool."""

from __future__ import annotations

import json

from click.testing import CliRunner
from swiftmail_relay.plugin import relay_group
from swiftmail_relay.spool import Envelope, Recipient, Spool, new_id

from swiftmail_core.cli.state import CliState


def _invoke(tmp_path, *args: str):  # type: ignore[no-untyped-def]
    state = CliState(config=str(tmp_path / "none.toml"), overrides={"data_dir": str(tmp_path)})
    return CliRunner().invoke(relay_group, list(args), obj=state, catch_exceptions=False)


def _fill(tmp_path) -> Spool:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path / "spool")
    for domain, count in (("a.example", 3), ("b.example", 2)):
        for index in range(count):
            spool.write(Envelope(id=new_id(), mail_from="x@s.example", tenant_id="t1",
                                 recipients=[Recipient(f"u{index}@{domain}")]), b"m")
    return spool


def test_queue_depth_hold_release_purge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spool = _fill(tmp_path)
    result = _invoke(tmp_path, "queue", "--json")
    report = json.loads(result.output)
    assert report["domains"] == {"a.example": 3, "b.example": 2}
    assert report["tenants"] == {"t1": 5}
    assert "held 2 messages" in _invoke(tmp_path, "hold", "--domain", "b.example").output
    assert json.loads(_invoke(tmp_path, "queue", "--json").output)["totals"]["held"] == 2
    assert "released 2" in _invoke(tmp_path, "release", "--domain", "b.example").output
    assert "purged 3" in _invoke(tmp_path, "purge", "--domain", "a.example", "--yes").output
    assert sorted(r.domain for q in spool.scan() for r in spool.read_envelope(q).recipients) == [
        "b.example", "b.example"]


def test_retry_writes_a_control_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spool = _fill(tmp_path)
    assert "retry requested" in _invoke(tmp_path, "retry", "--domain", "a.example").output
    (control,) = list(spool.control.iterdir())
    assert json.loads(control.read_text())["domain"] == "a.example"


def test_hold_needs_a_selector(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _fill(tmp_path)
    state = CliState(config=str(tmp_path / "none.toml"), overrides={"data_dir": str(tmp_path)})
    result = CliRunner().invoke(relay_group, ["hold"], obj=state)
    assert result.exit_code != 0 and "domain" in str(result.exception)
