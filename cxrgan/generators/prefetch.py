"""Batches read ahead of the training steps by a background thread."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable


class BatchPrefetcher:
    """The host side of the batches of steps ``start``, ``start + 1``, ... ``stop - 1``, read ``depth`` steps ahead
    by a background thread (numpy's gather of rows releases the GIL), so the next batch is ready when a step ends.

    ``read(step)`` is a pure function of the step, so the batches are the same with or without the thread."""

    def __init__(self, read: Callable[[int], list], start: int, stop: int, depth: int = 3):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._next = start
        self._thread = threading.Thread(target=self._run, args=(read, start, stop), daemon=True,
                                        name="cxrgan-batches")
        self._thread.start()

    def _run(self, read: Callable[[int], list], start: int, stop: int) -> None:
        for step in range(start, stop):
            try:
                item: tuple[int, Any] = (step, read(step))
            except BaseException as exc:  # handed to the training thread, which raises it
                item = (step, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or isinstance(item[1], BaseException):
                return

    def get(self, step: int) -> list:
        """The host batches of ``step`` (steps are taken in order)."""
        if step != self._next:
            raise RuntimeError(f"batches of step {step} asked for, step {self._next} is next")
        _, value = self._queue.get()
        self._next += 1
        if isinstance(value, BaseException):
            raise value
        return value

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # let a put that waits for room see the stop
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)
