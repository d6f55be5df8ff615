"""Keeping a long-lived process's start-up objects out of garbage collection.

A server process allocates most of its long-lived objects once, at start-up
(modules, settings, plugins, the app), and then many short-lived ones per
message or request. CPython's collector runs often under that churn, and
each full collection walks every object the start-up left behind: in a
tracking server worker about 86,000 objects, 48-124 ms a collection under
load, every request on that worker waiting meanwhile (docs/benchmarks.md,
Tracking, "session 16"). After ``gc.freeze()`` those objects sit in a
permanent generation the collector skips; a full collection then takes a
few milliseconds. In a sending worker, whose every message allocates
template contexts, chunks and token strings, the full collections had cost
8 to 13 % of its CPU per message; the relay, which holds every spooled
envelope in memory, spent 0.82x the CPU a message with the freeze in one
alternated comparison (docs/benchmarks.md, "End to end", session 16).
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect what start-up left as garbage, then freeze every object alive now.

    Call once per server process, after start-up and before the first
    message or request (``swiftmail worker``, ``swiftmail relay run``,
    ``swiftmail tracking serve``'s workers, ``swiftmail tracking drain``).
    Never in a test process: objects frozen there are never freed.
    """
    gc.collect()
    gc.freeze()
