"""Long-lived processes keep their start-up objects out of garbage collection."""

from __future__ import annotations

import gc
import weakref

from swiftmail_core.startup_gc import freeze_startup_objects


def test_freeze_startup_objects_freezes_what_is_alive_and_collects_garbage_first() -> None:
    class Cycle:
        pass

    garbage = Cycle()
    garbage.self = garbage  # type: ignore[attr-defined]
    collected = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > before
        # The cycle was collected before the freeze, not frozen with the live objects.
        assert collected() is None
    finally:
        gc.unfreeze()  # a test process must not keep them frozen
    assert gc.get_freeze_count() == 0
