"""The app's job runner: progress while a job runs, its result or one-line error after, one job per key."""

from __future__ import annotations

import threading
import time

import pytest
from dash import Dash

from advlens.app.jobs import DONE, FAILED, RUNNING, JobRunner, jobs_for, progress_bar
from tests.app_fixtures import texts


def wait_for(runner: JobRunner, key, status: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = runner.state(key)
        if state is not None and state.status == status:
            return state
        time.sleep(0.01)
    raise AssertionError(f"job {key!r} did not reach {status!r}: {runner.state(key)}")


def test_a_job_reports_progress_then_its_result():
    runner = JobRunner()
    reached, release = threading.Event(), threading.Event()

    def job(progress):
        progress(0.4, "step 2 of 5")
        reached.set()
        release.wait(5)
        return 42

    runner.submit("a", job)
    assert reached.wait(5)
    state = runner.state("a")
    assert (state.status, state.fraction, state.message, state.result) == (RUNNING, 0.4, "step 2 of 5", None)
    assert "step 2 of 5 (40%" in texts(progress_bar(state, "datapaths"))
    release.set()
    done = wait_for(runner, "a", DONE)
    assert (done.result, done.fraction) == (42, 1.0)
    assert texts(progress_bar(done)) == ""
    runner.shutdown()


def test_the_same_key_runs_once_and_a_failed_job_can_run_again():
    runner = JobRunner()
    calls = []

    def job(progress):
        calls.append(1)
        return len(calls)

    runner.submit("k", job)
    wait_for(runner, "k", DONE)
    assert runner.submit("k", job).result == 1
    assert len(calls) == 1

    def broken(progress):
        raise ValueError("the store is read-only\nsecond line")

    runner.submit("b", broken)
    failed = wait_for(runner, "b", FAILED)
    assert failed.error == "the store is read-only"
    assert "failed: the store is read-only" in texts(progress_bar(failed, "refit"))
    runner.submit("b", job)
    assert wait_for(runner, "b", DONE).result == 2
    runner.forget("b")
    assert runner.state("b") is None and runner.state("nothing") is None
    runner.shutdown()


def test_each_app_has_its_own_runner():
    first, second = Dash(__name__), Dash(__name__)
    assert jobs_for(first) is jobs_for(first)
    assert jobs_for(first) is not jobs_for(second)


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        JobRunner(workers=0)
