"""How Clarion's long-running processes (`serve`, `worker`) keep the garbage collector's
cost down once they have started."""

from __future__ import annotations

import gc

# Container allocations between two collections of the young generation (Python's default:
# 700). A batch decodes thousands of JSON documents, nearly all freed by reference counting:
# at 700 a worker ran ~850 young and ~75 middle collections for 12,000 events, 7-9 % of its
# CPU; at 20,000, 15 and 1, about 2 %.
YOUNG_COLLECTION_EVERY = 20_000


def settle() -> None:
    """Call once start-up is done: start-up objects (modules, models, routes) live as long as
    the process, so they leave the collector's full passes, which busy processes trigger
    often; and the young generation is collected every `YOUNG_COLLECTION_EVERY` container
    allocations."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)
