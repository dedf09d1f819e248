"""Long computations of the app (a pair's datapaths, a profiles refit) run as jobs with progress.

A page submits ``fn(progress)`` under a key; the job runs on the app's worker thread, reports
``progress(fraction, message)`` and returns its result, which the analysis layer also keeps in the
store (``store.derived``). The page polls :meth:`JobRunner.state` from a ``dcc.Interval`` that is
enabled only while a job runs, and draws :func:`progress_bar`.

Threads, not Dash's background callbacks (DESIGN.md names those with ``diskcache``): a background
callback runs in a forked process, which would inherit torch's OpenMP thread pool (GNU OpenMP can
hang after a fork) and a copy of the session's model, and its result would have to be pickled back.
A thread shares the session, its cache and its model lock, and the result lands in the store either
way. One worker by default: the computations use every core already.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from dash import Dash, html

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message)``: what a job reports while it runs."""

RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass(frozen=True)
class JobState:
    """A job as a page sees it: ``status`` is ``"running"``, ``"done"`` or ``"failed"``."""

    key: Hashable
    status: str = RUNNING
    fraction: float = 0.0
    message: str = "queued"
    error: str | None = None
    result: Any = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def seconds(self) -> float:
        """Seconds since the job was submitted (until it finished)."""
        return (self.finished if self.finished is not None else time.monotonic()) - self.started


class JobRunner:
    """Runs submitted jobs on ``workers`` threads and keeps each one's latest :class:`JobState` by key."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="advlens-job")
        self._states: dict[Hashable, JobState] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, fn: Callable[[Progress], Any]) -> JobState:
        """Start ``fn`` under ``key``, or return the job already running or finished under it.

        A failed job is started again (the user asked again, e.g. after fixing the cause).
        """
        with self._lock:
            state = self._states.get(key)
            if state is not None and state.status != FAILED:
                return state
            state = self._states[key] = JobState(key)
        self._pool.submit(self._run, key, fn)
        return state

    def state(self, key: Hashable) -> JobState | None:
        """The job's latest state, or None when nothing was submitted under ``key``."""
        with self._lock:
            return self._states.get(key)

    def forget(self, key: Hashable) -> None:
        """Drop a job's state (a running job still finishes; its result is then dropped too)."""
        with self._lock:
            self._states.pop(key, None)

    def shutdown(self) -> None:
        """Wait for the running jobs and stop the worker threads."""
        self._pool.shutdown(wait=True)

    def _update(self, key: Hashable, **changes: Any) -> None:
        with self._lock:
            state = self._states.get(key)
            if state is not None and state.status == RUNNING:
                self._states[key] = replace(state, **changes)

    def _run(self, key: Hashable, fn: Callable[[Progress], Any]) -> None:
        def progress(fraction: float, message: str) -> None:
            self._update(key, fraction=min(max(float(fraction), 0.0), 1.0), message=str(message))

        progress(0.0, "started")
        try:
            result = fn(progress)
        except Exception as exc:  # shown in the page; the traceback goes to the server log
            logger.exception("job %r failed", key)
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._update(key, status=FAILED, error=error, message="failed", finished=time.monotonic())
        else:
            self._update(key, status=DONE, fraction=1.0, message="done", result=result, finished=time.monotonic())


def jobs_for(app: Dash) -> JobRunner:
    """The app's one :class:`JobRunner`, created on first use (kept on the app object, not in the module)."""
    runner = getattr(app, "_advlens_jobs", None)
    if runner is None:
        runner = JobRunner()
        app._advlens_jobs = runner
    return runner


def progress_bar(state: JobState | None, what: str = "computing") -> html.Div:
    """A labelled progress bar for a running job, the error for a failed one, nothing otherwise."""
    if state is None or state.status == DONE:
        return html.Div(className="job-progress job-idle")
    if state.status == FAILED:
        return html.Div(f"{what} failed: {state.error}", className="job-progress job-failed", role="alert")
    percent = round(100 * state.fraction)
    return html.Div([
        html.Div(f"{what}: {state.message} ({percent}%, {state.seconds:.0f} s)", className="job-label"),
        html.Div(html.Div(className="job-bar-fill", style={"width": f"{percent}%"}), className="job-bar",
                 role="progressbar", **{"aria-valuenow": str(percent), "aria-valuemin": "0",
                                        "aria-valuemax": "100"}),
    ], className="job-progress job-running")


__all__ = ["JobRunner", "JobState", "Progress", "jobs_for", "progress_bar", "RUNNING", "DONE", "FAILED"]
