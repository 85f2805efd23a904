"""Prefetcher: items in order, the source's errors raised in the consumer, early stops close it."""

from __future__ import annotations

import threading
import time

import pytest

from hmrflow.pipeline.prefetch import Prefetcher


def test_items_come_in_order_and_ahead_of_the_consumer():
    produced: list[int] = []

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    pf = Prefetcher(source(), depth=2)
    it = iter(pf)
    assert next(it) == 0
    time.sleep(0.2)  # the thread runs ahead, but only depth items beyond what was taken
    assert 2 <= len(produced) <= 4
    assert [0, *it] == list(range(10))
    assert pf.busy_s >= 0.0


def test_an_error_of_the_source_is_raised_in_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("clip.mp4: corrupt packet")

    got = []
    with pytest.raises(ValueError, match="corrupt packet"):
        for x in Prefetcher(source()):
            got.append(x)
    assert got == [1, 2]


def test_stopping_early_closes_the_source_in_its_thread():
    closed = threading.Event()

    def source():
        try:
            for i in range(1000):
                yield i
        finally:
            closed.set()

    pf = Prefetcher(source(), depth=1)
    for x in pf:
        if x == 3:
            break
    pf.close()
    assert closed.wait(2.0)
    assert not pf._thread.is_alive()


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(iter([]), depth=0)
