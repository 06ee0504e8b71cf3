"""The dask task loop (oceanda.analysis.tasks): every task's result once, lost tasks submitted again, none waited on forever.

A fake client stands in for dask.distributed so that a lost task (one whose result never comes back,
the hang seen once in CI) can be made on purpose; the LocalCluster tests (test_distributed) run the
same loop on real workers.
"""

import itertools

import pytest

from oceanda.analysis import tasks
from oceanda.errors import OceandaError


class _Future:
    _keys = itertools.count()

    def __init__(self, value=None, finished=True):
        self.key, self.value, self.finished, self.callbacks = f"task-{next(self._keys)}", value, finished, []

    def add_done_callback(self, cb):  # as distributed's: called at once for a finished future
        self.callbacks.append(cb)
        if self.finished:
            cb(self)

    def finish(self):
        self.finished = True
        for cb in self.callbacks:
            cb(self)

    def result(self):
        return self.value


class _Client:
    """Runs a task at once unless ``lose(k, n)`` says its n-th submission never reports back.

    With ``busy_polls`` a lost task is shown processing on a worker for that many polls, then finishes.
    """

    def __init__(self, lose=lambda k, n: False, busy_polls=0):
        self.lose, self.busy_polls = lose, busy_polls
        self.submitted, self.scattered, self.cancelled, self.lost, self.flight = [], 0, set(), [], []

    def scatter(self, objs, broadcast, hash):
        assert broadcast and hash is False
        self.scattered += 1
        return [_Future(o) for o in objs]

    def submit(self, fn, *args, pure):
        assert pure is False
        shared, (k,) = [a.value for a in args if isinstance(a, _Future)], [a for a in args if not isinstance(a, _Future)]
        lost = self.lose(k, self.submitted.count(k))
        self.submitted.append(k)
        fut = _Future(fn(*shared, k), finished=not lost)
        if lost:
            self.lost.append(fut)
        return fut

    def processing(self):
        if self.busy_polls and self.lost:
            self.busy_polls -= 1
            if not self.busy_polls:
                self.lost[-1].finish()
            return {"w1": [self.lost[-1].key]}
        return {}

    def cancel(self, futs):
        self.cancelled |= {f.key for f in futs}


def _run(client, n=5, limit=None, stall=0.0):
    done = {}

    def on_done(k, fut):
        done[k] = fut.result()

    tasks.run_tasks(client, lambda base, k: base + k, [100], [(k,) for k in range(n)], on_done,
                    lambda k: f"time {k}", limit=limit, stall_seconds=stall)
    return done


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch):
    monkeypatch.setattr(tasks, "POLL_SECONDS", 0.01)


def test_every_task_once_with_the_shared_objects_sent_once():
    c = _Client()
    assert _run(c) == {k: 100 + k for k in range(5)}
    assert sorted(c.submitted) == list(range(5)) and c.scattered == 1


def test_no_more_than_limit_tasks_in_flight(monkeypatch):
    c, most = _Client(), []
    submit = tasks._Run.submit
    monkeypatch.setattr(tasks._Run, "submit", lambda self, k: (most.append(len(self.running) + 1), submit(self, k)))
    assert _run(c, n=7, limit=2) == {k: 100 + k for k in range(7)}
    assert max(most) == 2


def test_a_lost_task_is_submitted_again_with_the_shared_objects_scattered_afresh():
    c = _Client(lose=lambda k, n: k == 3 and n == 0)
    assert _run(c) == {k: 100 + k for k in range(5)}
    assert c.submitted.count(3) == 2 and c.scattered == 2
    assert c.lost[0].key in c.cancelled  # the lost future is given up, not left on the cluster


def test_a_task_running_on_a_worker_is_waited_for_not_submitted_again():
    c = _Client(lose=lambda k, n: k == 1 and n == 0, busy_polls=4)
    assert _run(c) == {k: 100 + k for k in range(5)}
    assert c.submitted.count(1) == 1 and c.scattered == 1


def test_a_task_never_run_is_one_error_naming_it_after_the_resubmissions():
    c = _Client(lose=lambda k, n: k == 2)
    with pytest.raises(OceandaError, match=r"^time 2: no dask worker ran this task \(3 submissions"):
        _run(c)
    assert c.submitted.count(2) == tasks.RESUBMITS + 1
