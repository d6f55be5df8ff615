"""The ASGI hot path: same answers as the WSGI one, hits batched into the stream."""

from __future__ import annotations

import asyncio

import falcon.testing
import redis.asyncio
from swiftmail_web.public.asgi import HitBatcher, build_app
from swiftmail_web.public.tracking import PIXEL

from swiftmail_core import tokens
from swiftmail_core.tracking_ingest import Hit


def test_pixel_and_click(public_services, redis_url, settings, sent_message, hit_stream) -> None:
    m = sent_message
    app = build_app(public_services, redis.asyncio.Redis.from_url(redis_url))
    client = falcon.testing.TestClient(app)
    good = tokens.make_open_token(settings.secret_key, m.tenant_id, m.message_id)
    for token in (good, good[:-2], "nope"):
        result = client.simulate_get(f"/t/o/{token}.gif")
        assert result.status_code == 200 and result.content == PIXEL
    click = tokens.make_click_token(settings.secret_key, m.tenant_id, m.link_id, m.message_id)
    assert client.simulate_get(f"/t/c/{click}").headers["location"] == m_url(m)
    bad = client.simulate_get(f"/t/c/{click[:-1]}", params={"dest": "https://evil.test/"})
    assert bad.status_code == 404 and "location" not in bad.headers
    kinds = [fields[b"k"] for _, fields in hit_stream.read_new("probe", 10, 10)]
    assert kinds == [b"open", b"click"]


def m_url(m) -> str:  # type: ignore[no-untyped-def]
    return "https://example.com/landing"


def test_concurrent_hits_share_round_trips(redis_url, hit_stream, sent_message) -> None:
    m = sent_message

    async def burst() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        batcher = HitBatcher(client, hit_stream.name)
        await asyncio.gather(*(batcher.add(Hit("open", m.tenant_id, m.message_id))
                               for _ in range(200)))
        await client.aclose()

    asyncio.run(burst())
    assert hit_stream.backlog() == 200
