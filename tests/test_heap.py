"""frozen_heap: the objects alive at the start of a block stay out of full collections until it ends."""

from __future__ import annotations

import gc
import weakref

import pytest

from gptlab.heap import frozen_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_objects_alive_at_the_start_are_frozen_until_the_end_even_on_an_error() -> None:
    before = Node()
    alive = weakref.ref(before)
    del before  # garbage now, but only a collection finds it
    with pytest.raises(RuntimeError, match="inside"):
        with frozen_heap():
            assert gc.get_freeze_count() > 0
            inside = Node()
            dead_inside = weakref.ref(inside)
            del inside
            gc.collect()
            assert dead_inside() is None  # a cycle made inside the block is collected
            assert alive() is not None  # one from before it is not: frozen
            raise RuntimeError("inside")
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None  # unfrozen at the end: collected again


def test_it_decorates_a_function() -> None:
    @frozen_heap()
    def count() -> int:
        return gc.get_freeze_count()

    assert count() > 0 and gc.get_freeze_count() == 0


def test_a_block_inside_another_leaves_the_heap_frozen_for_the_outer_one() -> None:
    with frozen_heap():
        outer = gc.get_freeze_count()
        with frozen_heap():
            pass
        assert gc.get_freeze_count() == outer
    assert gc.get_freeze_count() == 0
