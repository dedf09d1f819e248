"""Where a heavy stage's batch shards run: in this process (``local``) or as tasks on a Ray cluster (``ray``).

A stage cuts its work into shards (slices of its rows), names a module-level task function
``task(shared, part) -> dict[str, np.ndarray]`` and the read-only ``shared`` inputs (the model, the
attack, the images), and hands them to :func:`run_sharded`. That function checkpoints every finished
shard in the stage's work folder, so a killed run resumes with the shards still missing, and gives the
results back in shard order; the stage then writes its arrays exactly as before. Both executors run
the same task function on the same shards, so they write the same store.

On Ray (``pip install 'advlens[ray]'``; ``--executor ray [--ray-address ADDR]``): ``shared`` is put in
the object store once, each shard is one task with ``cpus_per_task`` CPUs (torch uses that many
threads in it), and results come back as tasks finish. Without an address a local Ray instance is
started on this machine's cores; with one (``auto``, ``ray://head:10001``) the tasks run on that
cluster, whose workers must have advlens (and a user model's module) installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from advlens.errors import ConfigError
from advlens.pipeline.stage import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
ShardTask = Callable[[Any, slice], dict[str, np.ndarray]]
"""``task(shared, part)``: a shard's arrays. Module-level, so that Ray can ship it to its workers."""


class Executor(Protocol):
    """Runs a task over shards and yields ``(part, result)`` as shards finish, in any order."""

    name: str

    def map(self, task: ShardTask, shared: Any, parts: Sequence[slice], desc: str
            ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]: ...


class LocalExecutor:
    """Runs the shards one after the other in this process."""

    name = "local"

    def map(self, task: ShardTask, shared: Any, parts: Sequence[slice], desc: str
            ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        for part in tqdm(parts, desc=desc, unit="batch"):
            yield part, task(shared, part)


def _run_on_worker(task: ShardTask, shared: Any, part: slice, threads: int) -> dict[str, np.ndarray]:
    import torch

    torch.set_num_threads(threads)
    return task(shared, part)


class RayExecutor:
    """Runs each shard as a Ray task with ``cpus_per_task`` CPUs, on a local instance or the cluster at
    ``address``."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: int = 1, num_cpus: int | None = None) -> None:
        if cpus_per_task < 1:
            raise ConfigError(f"--ray-cpus-per-task must be at least 1, got {cpus_per_task}")
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.num_cpus = num_cpus

    def _init(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            if self.address is None and self.num_cpus is not None:
                options["num_cpus"] = self.num_cpus
            try:
                ray.init(address=self.address, **options)
            except ConnectionError as exc:
                raise ConfigError(f"--ray-address {self.address}: no Ray cluster answers there ({exc}); start one "
                                  "with `ray start --head` or leave --ray-address out for a local instance") from exc
        return ray

    def map(self, task: ShardTask, shared: Any, parts: Sequence[slice], desc: str
            ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        if not parts:
            return
        ray = self._init()
        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=2)(_run_on_worker)
        shared_ref = ray.put(shared)
        pending = {remote.remote(task, shared_ref, part, self.cpus_per_task): part for part in parts}
        with tqdm(total=len(parts), desc=f"{desc} (ray)", unit="batch") as bar:
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    part = pending.pop(done[0])
                    result = ray.get(done[0])
                    bar.update()
                    yield part, result
            finally:
                for ref in pending:  # a failure or an interrupt: do not leave the cluster busy
                    ray.cancel(ref, force=True)


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--executor ray needs Ray: pip install 'advlens[ray]'") from exc
    return ray


def make_executor(name: str, address: str | None = None, cpus_per_task: int = 1) -> Executor:
    """The executor called ``name`` (checked; Ray must be importable) — before any work starts."""
    if name == "local":
        if address is not None:
            raise ConfigError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        import_ray()
        return RayExecutor(address, cpus_per_task)
    raise ConfigError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")


def shards(count: int, size: int) -> list[slice]:
    """``count`` rows cut into slices of ``size`` (the last may be shorter)."""
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def run_sharded(executor: Executor | None, task: ShardTask, shared: Any, parts: Sequence[slice], checkpoints: Path,
                desc: str) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Every shard's result in shard order: from its checkpoint when an earlier run finished it, else
    computed by ``executor`` and checkpointed as soon as it arrives (so a killed run loses only the shards
    in flight). ``executor`` None runs them in this process."""
    executor = executor if executor is not None else LocalExecutor()
    checkpoints.mkdir(parents=True, exist_ok=True)

    def path(part: slice) -> Path:
        return checkpoints / f"{part.start:08d}.npz"

    missing = [part for part in parts if not path(part).is_file()]
    if len(missing) < len(parts):
        logger.info("%s: resuming, %d of %d batches already finished", desc, len(parts) - len(missing), len(parts))
    for part, result in executor.map(task, shared, missing, desc):
        save_checkpoint(path(part), **result)
    for part in parts:
        result = load_checkpoint(path(part))
        if result is None:
            raise RuntimeError(f"{desc}: batch {part.start}–{part.stop} has no result after the run")
        yield part, result


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "ShardTask", "make_executor", "run_sharded",
           "shards", "import_ray"]
