"""Where a heavy stage's batch shards run: in this process (``local``) or as tasks on a Ray cluster (``ray``).

A stage cuts its work into shards (slices of its rows), names a module-level task function
``task(shared, part) -> dict[str, np.ndarray]`` and the read-only ``shared`` inputs (the model, the
attack, the settings), and hands them to :func:`run_sharded`. What differs per shard (its images) is given
as ``inputs(part)``: read on the driver only when the shard is started, the task then being called
``task(shared, part, inputs(part))``, so only the shards in flight sit in Ray's object store and each node
fetches its own tasks' images, never the whole dataset. :func:`run_sharded` checkpoints every finished
shard in the stage's work folder, so a killed run resumes with the shards still missing, and gives the
results back in shard order; the stage then writes its arrays exactly as before. Both executors run
the same task function on the same shards, so they write the same store. The sharded stages are
``attack``, ``activations`` and the sweep's (attack, chunk) parts; ``advlens datapaths`` runs one pair per
task through :meth:`Executor.map` (its results are kept in the store as they arrive, which is its checkpoint).

On Ray (``pip install 'advlens[ray]'``; ``--executor ray [--ray-address ADDR]``): ``shared`` is put in
the object store once, each shard is one task with ``cpus_per_task`` CPUs (torch uses that many
threads in it, whatever the driver uses, so tasks side by side do not oversubscribe the cores), at most
:data:`IN_FLIGHT` tasks per task slot (the cluster's CPUs ÷ ``cpus_per_task``) are submitted at a time, and
results come back as tasks finish. Without an address a local Ray instance is
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
ShardTask = Callable[..., dict[str, np.ndarray]]
"""``task(shared, part)`` — or ``task(shared, part, inputs(part))`` when the stage gives per-shard inputs —: a
shard's arrays. Module-level, so that Ray can ship it to its workers."""
ShardInputs = Callable[[slice], Any]
"""``inputs(part)``: what one shard needs besides ``shared`` (e.g. its images), read on the driver when the
shard starts."""
IN_FLIGHT = 2
"""Ray tasks submitted at a time per task slot of the cluster (its CPUs ÷ ``cpus_per_task``): enough to keep
every slot busy while results travel back, few enough that per-shard inputs are not all in memory at once."""


class Executor(Protocol):
    """Runs a task over shards and yields ``(part, result)`` as shards finish, in any order.

    ``inputs`` None calls ``task(shared, part)``; else ``task(shared, part, inputs(part))``, ``inputs``
    called on the driver just before the shard starts."""

    name: str

    def map(self, task: ShardTask, shared: Any, parts: Sequence[slice], desc: str,
            inputs: ShardInputs | None = None) -> Iterator[tuple[slice, dict[str, np.ndarray]]]: ...


def _arguments(part: slice, inputs: ShardInputs | None) -> tuple[Any, ...]:
    """The task's arguments after ``shared``: the part, and its inputs when the stage gives them."""
    return (part,) if inputs is None else (part, inputs(part))


class LocalExecutor:
    """Runs the shards one after the other in this process (with its torch threads)."""

    name = "local"

    def map(self, task: ShardTask, shared: Any, parts: Sequence[slice], desc: str,
            inputs: ShardInputs | None = None) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        for part in tqdm(parts, desc=desc, unit="batch"):
            yield part, task(shared, *_arguments(part, inputs))


def _run_on_worker(task: ShardTask, shared: Any, threads: int, *arguments: Any) -> dict[str, np.ndarray]:
    """A shard on a Ray worker with ``threads`` torch threads (a worker process serves many tasks one after the
    other, so the setting is made for each)."""
    import torch

    torch.set_num_threads(threads)
    return task(shared, *arguments)


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

    def slots(self, ray: Any) -> int:
        """How many tasks the cluster runs side by side: its CPUs ÷ ``cpus_per_task`` (at least 1)."""
        return max(1, int(ray.cluster_resources().get("CPU", 1)) // self.cpus_per_task)

    def map(self, task: ShardTask, shared: Any, parts: Sequence[slice], desc: str,
            inputs: ShardInputs | None = None) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        if not parts:
            return
        ray = self._init()
        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=2)(_run_on_worker)
        shared_ref = ray.put(shared)
        window = IN_FLIGHT * self.slots(ray)
        todo = iter(parts)
        pending: dict[Any, slice] = {}

        def submit() -> None:
            for part in todo:
                pending[remote.remote(task, shared_ref, self.cpus_per_task, *_arguments(part, inputs))] = part
                if len(pending) >= window:
                    return
        with tqdm(total=len(parts), desc=f"{desc} (ray)", unit="batch") as bar:
            try:
                submit()
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    part = pending.pop(done[0])
                    result = ray.get(done[0])
                    bar.update()
                    submit()
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
                desc: str, inputs: ShardInputs | None = None, prefix: str = ""
                ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Every shard's result in shard order: from its checkpoint when an earlier run finished it, else
    computed by ``executor`` and checkpointed as soon as it arrives (so a killed run loses only the shards
    in flight). ``executor`` None runs them in this process.

    Args:
        inputs: per-shard inputs (see :class:`Executor`), read only for the shards still missing.
        prefix: the checkpoints are ``checkpoints/{prefix}{part.start:08d}.npz`` (several sharded runs of
            one stage share its work folder under different prefixes).
    """
    executor = executor if executor is not None else LocalExecutor()
    checkpoints.mkdir(parents=True, exist_ok=True)

    def path(part: slice) -> Path:
        return checkpoints / f"{prefix}{part.start:08d}.npz"

    missing = [part for part in parts if not path(part).is_file()]
    if len(missing) < len(parts):
        logger.info("%s: resuming, %d of %d batches already finished", desc, len(parts) - len(missing), len(parts))
    for part, result in executor.map(task, shared, missing, desc, inputs):
        save_checkpoint(path(part), **result)
    for part in parts:
        result = load_checkpoint(path(part))
        if result is None:
            raise RuntimeError(f"{desc}: batch {part.start}–{part.stop} has no result after the run")
        yield part, result


__all__ = ["EXECUTORS", "IN_FLIGHT", "Executor", "LocalExecutor", "RayExecutor", "ShardInputs", "ShardTask",
           "make_executor", "run_sharded", "shards", "import_ray"]
