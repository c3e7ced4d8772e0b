"""``frozen_heap``: leave the objects alive when a block starts out of the garbage collector's full
passes until it ends.

Why: Python's cyclic collector walks every tracked object on each full (generation 2) pass. After
torch, Lightning, Hydra and a dataset's records are loaded that is over half a million objects,
~0.3 s a pass, and an evaluation that reads and tokenizes several tasks triggers a few: 0.4-0.8 s of
the 14 s zero-shot suite. Objects frozen are still freed by reference counting;
only cycles among them wait for the block's end, when ``gc.unfreeze`` hands them back.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Within the block, full collections walk only the objects created inside it. Inside a block
    that froze the heap already (or any ``gc.freeze`` of the caller's), it leaves the heap as it is."""
    outer = gc.get_freeze_count() > 0
    if not outer:
        gc.freeze()
    try:
        yield
    finally:
        if not outer:
            gc.unfreeze()
