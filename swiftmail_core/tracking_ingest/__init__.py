"""Tracking hits: intake on the hot path, a Redis stream, a batch drainer.

The open pixel and click redirect call ``HitStream.add`` (one ``XADD``) and
answer at once; ``Drainer`` reads the stream through a consumer group in
batches, classifies machine hits, stores them with ``record_events`` (idempotent
by stream entry id) and acknowledges only after the commit.
"""

from swiftmail_core.tracking_ingest.hits import Hit
from swiftmail_core.tracking_ingest.stream import HitStream

__all__ = ["Hit", "HitStream"]
