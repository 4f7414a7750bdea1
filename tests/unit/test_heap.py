"""protocol/heap.py: after ``freeze_start_up()`` a full collection no longer walks what
was alive at start-up (checked in a child process: freezing this one would keep every
test's objects for good)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import project_root

CHILD = """
import gc
from protocol.heap import freeze_start_up

fleet = [{"vin": f"VIN{i:07d}", "features": [i]} for i in range(100_000)]
gc.collect()
walked_before = len(gc.get_objects(generation=2))
freeze_start_up()
walked_after = len(gc.get_objects(generation=2))
later = [[i] for i in range(1_000)]
gc.collect()
print(walked_before, walked_after, gc.get_freeze_count(), len(gc.get_objects(generation=2)))
"""


def test_a_full_collection_skips_what_start_up_left_alive() -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=project_root(), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    before, after, frozen, with_later = map(int, run.stdout.split())
    assert before > 200_000  # the fleet's dicts and lists, walked by every full collection
    assert after == 0
    assert frozen >= before
    assert 1_000 <= with_later < 5_000  # what came after is collected as before
