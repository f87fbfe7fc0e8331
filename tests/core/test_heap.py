"""Long-running processes settle the garbage collector once started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from clarion.app import create_app
from clarion.core import heap
from clarion.core.settings import Settings


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector's settings restored after the test, nothing left frozen."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_start_up_objects(collector: None) -> None:
    kept = type("StartUp", (), {})()  # an object the collector tracks
    gc.set_threshold(700, 10, 10)
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # frozen: out of every pass
    assert gc.get_threshold() == (heap.YOUNG_COLLECTION_EVERY, 10, 10)


async def test_the_server_settles_once_started(settings: Settings, collector: None) -> None:
    gc.set_threshold(700, 10, 10)  # the interpreter's default, whatever ran before
    application = create_app(settings, run_worker=False)
    async with application.router.lifespan_context(application):
        assert application.state.ready
        assert gc.get_threshold()[0] == heap.YOUNG_COLLECTION_EVERY
