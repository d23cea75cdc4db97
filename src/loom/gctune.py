"""The cyclic garbage collector, tuned once a long-running process has started.

A server allocates most of what it will keep at start-up (modules, settings, its app) and then
serves requests whose objects die young. With CPython's defaults (a young collection every 700
net allocations) the objects of the requests in flight at that moment outlive one young and
one middle collection, count as long-lived, and every few hundred requests a full collection
walks the whole heap while every request in flight waits: a stall of a millisecond or more
that the p99 of 50 concurrent webhook reviews, or of one write fanned out to 5,000 xDS
streams, shows directly. ``settle`` moves what start-up allocated out of the collector's way
(``gc.freeze``: full collections then walk only what came later) and lets the young
generation grow to ``YOUNG_COLLECTION_EVERY`` allocations, so a burst's objects die young.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 100_000
"""Allocations (net of frees) between two young collections (CPython's default: 700). One
write to 5,000 xDS streams keeps each stream's response, its send and the ACK that follows
alive for the whole burst: with the default, all of them outlive a young and a middle
collection, and every second write then paid a full collection of the whole heap (700,000
objects, ~0.4 s). A young generation this large lets the burst die young; it holds at most
that many objects of cyclic garbage."""


def settle() -> None:
    """Once started: freeze what start-up allocated and make young collections rarer (the
    process's own settings: call it only from a program's main, never from a library)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)
