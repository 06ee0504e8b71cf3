"""Tasks on a dask.distributed cluster that never wait forever: one loop for the analyses and the library embedding.

Why not ``distributed.as_completed``: one CI run of the suite hung in it with both workers idle and a
task never reported (seen once in many runs; dask/distributed#2571 is the same symptom). Here each
future reports through its done-callback into a queue read with a timeout, and a run that has had no
result for ``stall_seconds`` while the scheduler has none of its tasks on a worker is submitted again
(the shared objects scattered afresh). Every task is a pure function of its arguments and the shared
objects (the per-time random streams are ``[seed, t]``), so a resubmitted task gives the same result.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

from oceanda.errors import OceandaError

POLL_SECONDS = 1.0
STALL_SECONDS = 60.0  # no result for this long and no task of ours on any worker: submitted again
RESUBMITS = 2  # then the task is reported as stalled, by name


def run_tasks(client, fn: Callable, shared: Sequence[Any], args: Sequence[tuple], on_done: Callable[[int, Any], None],
              label: Callable[[int], str], limit: int | None = None, stall_seconds: float | None = None) -> None:
    """Run ``fn(*shared, *args[k])`` for every k on ``client``'s workers; ``on_done(k, future)`` as each finishes.

    Parameters
    ----------
    client : a ``distributed.Client``
    fn : the task function (importable on the workers)
    shared : objects sent once to every worker (scattered, broadcast) and passed first to every task
    args : the per-task arguments
    on_done : called in this thread, in completion order (it reads ``future.result()``)
    label : what names task k in an error (a time, a chunk)
    limit : at most this many tasks in flight (None: all at once)
    stall_seconds : the stall time (None: ``STALL_SECONDS``)

    Raises
    ------
    OceandaError : a task not run after ``RESUBMITS`` resubmissions, named by ``label``
    """
    run = _Run(client, fn, shared, args, label)
    stall = STALL_SECONDS if stall_seconds is None else stall_seconds
    pending = iter(range(len(args)))
    try:
        for k in itertools.islice(pending, limit or len(args)):
            run.submit(k)
        last = time.monotonic()
        while run.running:
            k, fut = run.next_done()
            if fut is None:
                if time.monotonic() - last >= stall and run.idle():
                    run.resubmit()
                    last = time.monotonic()
                continue
            last = time.monotonic()
            on_done(k, fut)
            k = next(pending, None)
            if k is not None:
                run.submit(k)
    finally:
        run.cancel()


class _Run:
    """The futures in flight, the queue their done-callbacks fill, and the shared objects' futures."""

    def __init__(self, client, fn: Callable, shared: Sequence[Any], args: Sequence[tuple], label: Callable[[int], str]):
        self.client, self.fn, self.shared, self.args, self.label = client, fn, list(shared), args, label
        self.shared_f = self._scatter()
        self.running: dict[int, Any] = {}
        self.tries: dict[int, int] = {}
        self.done: queue.Queue = queue.Queue()

    def _scatter(self) -> list:
        return list(self.client.scatter(self.shared, broadcast=True, hash=False)) if self.shared else []

    def submit(self, k: int) -> None:
        fut = self.client.submit(self.fn, *self.shared_f, *self.args[k], pure=False)
        self.running[k] = fut
        fut.add_done_callback(lambda f, k=k: self.done.put((k, f)))

    def next_done(self) -> tuple[int, Any]:
        """The next finished task of this run (k, future), or (-1, None) after ``POLL_SECONDS`` without one."""
        while True:
            try:
                k, fut = self.done.get(timeout=POLL_SECONDS)
            except queue.Empty:
                return -1, None
            if self.running.get(k) is fut:  # not a superseded (resubmitted) future
                del self.running[k]
                return k, fut

    def idle(self) -> bool:
        """True when the scheduler has none of this run's tasks on a worker (queued or lost ones only)."""
        keys = {f.key for f in self.running.values()}
        busy = {key for ks in self.client.processing().values() for key in ks}
        return not keys & busy

    def resubmit(self) -> None:
        """Every task in flight submitted again, with the shared objects scattered afresh."""
        for k in self.running:
            self.tries[k] = self.tries.get(k, 0) + 1
            if self.tries[k] > RESUBMITS:
                raise OceandaError(f"{self.label(k)}: no dask worker ran this task ({RESUBMITS + 1} submissions, none "
                                   "reported back); expected a cluster whose workers are alive and can reach each other")
        self.client.cancel([*self.running.values(), *self.shared_f])
        self.shared_f = self._scatter()
        for k in list(self.running):
            self.submit(k)

    def cancel(self) -> None:
        self.client.cancel([*self.running.values(), *self.shared_f])
