"""Every body is bounded before it is read: Content-Length and streaming, 413 problem+json."""

from __future__ import annotations

import io

import pytest


class _Endless(io.RawIOBase):
    """A chunked body that never ends (what a client without Content-Length may send)."""

    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        buffer[:] = b"x" * len(buffer)
        self.sent += len(buffer)
        return len(buffer)


@pytest.mark.parametrize("path", ["/hooks/sendgrid/events", "/hooks/mailgun/events"])
def test_provider_hooks_refuse_a_declared_huge_body_before_reading(client, path: str) -> None:
    # Regression: unauthenticated, these read whole bodies into memory (2 GB declared).
    result = client.simulate_post(path, body=b"{}", headers={
        "Content-Type": "application/json", "Content-Length": str(2 * 1024**3)})
    assert result.status_code == 413
    assert result.headers["content-type"].startswith("application/problem+json")


def test_a_body_declared_past_the_limit_is_refused_before_it_is_read(owner_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: with an Idempotency-Key, a non-JSON body was spooled to disk before
    # any limit was checked (2 GB declared, 50 MB sent, no answer).
    endless = _Endless()
    result = owner_a.client.simulate_request(
        "POST", "/v1/lists", headers={"Authorization": f"Bearer {owner_a.key}",
                                      "Content-Type": "text/plain",
                                      "Content-Length": str(2 * 1024**3),
                                      "Idempotency-Key": "huge-upload"},
        extras={"wsgi.input": io.BufferedReader(endless)})
    assert result.status_code == 413 and "limit of 1000000 bytes" in result.json["detail"]
    assert endless.sent == 0


def test_the_stream_itself_is_bounded() -> None:
    from swiftmail_web.body_limit import LimitedStream, PayloadTooLargeError

    stream = LimitedStream(io.BufferedReader(_Endless()), 1000)
    assert len(stream.read(600)) == 600
    with pytest.raises(PayloadTooLargeError):
        stream.read()


def test_unconfigured_provider_hooks_refuse_without_reading(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/hooks/sendgrid/events", "/hooks/mailgun/events"):
        endless = _Endless()
        result = client.simulate_request("POST", path, headers={
            "Content-Type": "application/json"}, extras={"wsgi.input": io.BufferedReader(endless)})
        assert result.status_code == 401
        assert endless.sent < 100_000
