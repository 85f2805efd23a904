"""Run an iterator ahead in a thread, so producing the next item overlaps using this one.

The pipeline decodes the next frame batch while the detector and the estimator work on the
current one: PyAV decodes and converts frames with the GIL released, and torch releases it
in its kernels, so both make progress at once.  Items come out in order; an exception raised
by the iterator is raised again in the consumer at the same place in the sequence.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    ``busy_s`` is the wall time the thread spent inside ``source`` (producing items), the
    figure a stage timer records for it.  :meth:`close` (also on leaving a ``with`` block, or
    when the consumer stops early) stops the thread and closes ``source`` in it.
    """

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "prefetch") -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        """Hand ``item`` over, waiting while the queue is full; False once closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        it = iter(self._source)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self.busy_s += time.perf_counter() - t0
                    self._put(_DONE)
                    return
                except BaseException as exc:  # handed to the consumer, raised there
                    self.busy_s += time.perf_counter() - t0
                    self._put(_Raised(exc))
                    return
                self.busy_s += time.perf_counter() - t0
                if not self._put(item):
                    return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Raised):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the thread (it closes the source) and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Raised:
    """An exception of the source, carried through the queue."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
