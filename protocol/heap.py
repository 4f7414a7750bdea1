"""A service's start-up objects, kept out of the garbage collector's way.

CPython's cyclic collector stops the process while it walks every object of the
generation it collects, and a full (generation 2) collection walks every tracked object
that has survived since the process started: the modules, the FastAPI app, SQLAlchemy's
mappers, the simulator's fleet. Measured with ``python -m bench activations`` (30,000
vehicles, two gateway workers; docs/performance.md, "collector pauses"): 6-7 full
collections of 29-131 ms in each gateway per run, 13 of up to 248 ms in the simulator;
with the freeze, 3-17 ms in the gateways once started. (The p99 at half load did not
improve with it: those pauses are not what sets it.)

``freeze_start_up()`` is called once, when a service has built what it keeps for its
whole life: one collection (the garbage start-up left behind), then ``gc.freeze()``
moves every object still alive into the permanent generation, which no collection
walks again. Objects allocated later are collected as before. A frozen object is never
freed, which is why only start-up's objects are frozen.
"""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    """Collect once, then freeze every object alive now (call it once, from a
    process's entry point: never in a process that runs many services one after the
    other, such as the tests, whose objects it would keep for good)."""
    gc.collect()
    gc.freeze()


def rare_full_collections(every: int = 100) -> None:
    """A full collection only after ``every`` collections of generation 1 instead of
    10, for a process whose long-lived objects keep being replaced (the simulator's
    immutable vehicle states): each replacement is freed by its reference count, and
    what survives is walked by a full collection far less often."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, every)
