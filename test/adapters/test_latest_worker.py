"""The latest-only background worker shared by grounding, acquisition and the DBST
transitions (refseg_ros.adapters.latest_worker), on real threads.

Each test holds the worker's thread in `run` behind an event where it needs a request
to wait, and waits on conditions with generous deadlines, never on wall time.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from refseg_ros.adapters.latest_worker import LatestWorker

DEADLINE_S = 30.0


def _wait_until(condition, timeout: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"still false after {timeout} s")
        time.sleep(0.002)


class Gated:
    """A `run` that records (key, stamp) and waits for a permit before answering; raises
    for the key "bad"."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)
        self.seen: list[tuple[str, float]] = []

    def let_through(self, count: int = 1) -> None:
        self.permits.release(count)

    def __call__(self, key, item, stamp):
        self.seen.append((key, stamp))
        if not self.permits.acquire(timeout=DEADLINE_S):
            raise TimeoutError("no permit")
        if key == "bad":
            raise RuntimeError("no features today")
        return f"{item} at {stamp}"


def test_submit_never_waits_and_keeps_only_the_latest_request_per_key():
    run = Gated()
    worker = LatestWorker(run)
    try:
        assert worker.submit("a", "frame", 1.0) is False
        _wait_until(lambda: run.seen == [("a", 1.0)])  # the first runs, and holds the thread
        start = time.perf_counter()
        replaced = [worker.submit("a", "frame", stamp) for stamp in (2.0, 3.0, 4.0)]
        assert time.perf_counter() - start < 5.0  # the run is held: submit did not wait on it
        assert replaced == [False, True, True]
        assert worker.skipped("a") == 2 and worker.submitted("a") == 4 and worker.submitted() == 4
        assert worker.pending("a") and not worker.wants("a") and worker.poll("a") is None
        run.let_through(2)
        _wait_until(lambda: worker.finished("a") == 2)
        result = worker.poll("a")
        assert run.seen == [("a", 1.0), ("a", 4.0)]  # 2 and 3 were replaced before they ran
        assert result.ok and result.value == "frame at 4.0" and result.stamp == 4.0 and result.item == "frame"
        assert result.seconds >= 0 and result.key == "a"
        assert worker.poll("a") is None  # handed over once; the first result was replaced unread
        assert not worker.pending("a") and worker.wants("a")
    finally:
        run.let_through(10)
        assert worker.close(timeout=DEADLINE_S)


def test_a_replaced_key_keeps_its_turn():
    run = Gated()
    with LatestWorker(run) as worker:
        worker.submit("busy", "x", 0.0)
        _wait_until(lambda: len(run.seen) == 1)
        worker.submit("a", "x", 1.0)
        worker.submit("b", "x", 2.0)
        worker.submit("a", "x", 3.0)  # replaces a's request, keeps a's place before b
        run.let_through(3)
        _wait_until(lambda: worker.finished() == 3)
        assert run.seen == [("busy", 0.0), ("a", 3.0), ("b", 2.0)]


def test_an_error_is_reported_and_the_thread_goes_on():
    run = Gated()
    run.let_through(10)
    worker = LatestWorker(run)
    try:
        worker.submit("bad", np.zeros(1), 1.0)
        worker.submit("good", np.zeros(1), 2.0)
        _wait_until(lambda: worker.finished("good") == 1)
        bad, good = worker.poll("bad"), worker.poll("good")
        assert not bad.ok and isinstance(bad.error, RuntimeError) and bad.value is None
        assert worker.errors("bad") == 1 and worker.errors() == 1 and worker.finished() == 2
        assert good.ok and good.stamp == 2.0 and worker.alive
    finally:
        assert worker.close(timeout=DEADLINE_S)


def test_each_key_keeps_its_own_rate():
    starts: dict[str, list[float]] = {"a": [], "b": []}

    def run(key, item, stamp):
        starts[key].append(time.monotonic())
        return stamp

    with LatestWorker(run, min_interval_s=0.3) as worker:
        worker.submit("a", None, 1.0)
        _wait_until(lambda: worker.finished("a") == 1)
        worker.submit("a", None, 2.0)  # waits for its interval
        assert not worker.wants("a") and worker.pending("a")
        worker.submit("b", None, 1.0)  # another key is not held up by a's rate
        _wait_until(lambda: worker.finished("b") == 1)
        _wait_until(lambda: worker.finished("a") == 2)
        assert starts["a"][1] - starts["a"][0] >= 0.3 - 1e-3
        assert worker.poll("a").value == 2.0 and worker.poll("b").value == 1.0
    with pytest.raises(ValueError, match="min_interval_s"):
        LatestWorker(run, min_interval_s=-1)


def test_forget_drops_waiting_and_running_work_of_a_key():
    run = Gated()
    worker = LatestWorker(run)
    try:
        worker.submit("gone", "x", 1.0)
        _wait_until(lambda: len(run.seen) == 1)
        worker.submit("gone", "x", 2.0)
        worker.forget("gone")
        assert not worker.pending("gone")  # forgotten ...
        assert not worker.wants("gone")  # ... but its run still holds the thread
        worker.submit("kept", "x", 3.0)
        run.let_through(2)
        _wait_until(lambda: worker.poll("kept") is not None)
        assert worker.poll("gone") is None and worker.finished("gone") == 0
        assert run.seen == [("gone", 1.0), ("kept", 3.0)] and worker.wants("gone")
    finally:
        run.let_through(10)
        assert worker.close(timeout=DEADLINE_S)


def test_close_finishes_the_running_request_joins_and_refuses_new_work():
    run = Gated()
    worker = LatestWorker(run, name="refseg-test")
    worker.submit("t", "x", 1.0)
    _wait_until(lambda: len(run.seen) == 1)
    worker.submit("t", "x", 2.0)  # waiting: dropped by close
    closer = threading.Thread(target=worker.close)
    closer.start()
    _wait_until(lambda: worker.closed)
    assert closer.is_alive() and worker.alive  # close waits for the running request ...
    run.let_through(10)
    closer.join(DEADLINE_S)
    assert not closer.is_alive() and not worker.alive  # ... and joins the thread
    assert run.seen == [("t", 1.0)] and not worker.pending("t") and not worker.wants("t")
    assert worker.close() is True  # again: harmless
    with pytest.raises(RuntimeError, match="refseg-test.*closed"):
        worker.submit("t", "x", 3.0)
