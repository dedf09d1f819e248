"""What a ``prepare`` stage is (:class:`Stage`) and what it is handed when it runs (:class:`StageContext`).

A stage family (``stages_core``, ``stages_features``, …) defines its run functions and lists them as
``Stage`` records; :mod:`advlens.pipeline.stages` collects the families into the registry that
``prepare`` resolves and runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from advlens.data import ImageDataset
from advlens.models import AnalysedModel
from advlens.pipeline.config import PrepareConfig
from advlens.store import AnalysisStore, StageWriter

if TYPE_CHECKING:
    from advlens.pipeline.executor import Executor


@dataclass
class StageContext:
    """What every stage needs: configuration, model, the examined images and the store so far."""

    config: PrepareConfig
    model: AnalysedModel
    data: ImageDataset
    store: Callable[[], AnalysisStore]
    root: Path
    executor: Executor | None = None
    """Where sharded stages run their batches (:mod:`advlens.pipeline.executor`); None: in this process."""

    def work_dir(self, stage: str, key: Any = None) -> Path:
        """A folder for a stage's checkpoints, removed once the stage is committed.

        Its name depends on the batch size and, when given, on ``key`` (any JSON-able value, e.g. the
        stage's settings), so checkpoints of other settings are never mixed in.
        """
        suffix = f"-b{self.config.batch_size}"
        if key is not None:
            suffix += "-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        path = self.root / f".work-{stage}{suffix}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)

    def batches(self, count: int, desc: str) -> Iterator[slice]:
        size = self.config.batch_size
        for start in tqdm(range(0, count, size), desc=desc, unit="batch", total=(count + size - 1) // size):
            yield slice(start, min(start + size, count))


def save_checkpoint(path: Path, **arrays: np.ndarray) -> None:
    """Write a stage's checkpoint atomically (a temporary file renamed into place), so a killed run never leaves
    half a checkpoint behind."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a checkpoint written by :func:`save_checkpoint`, or None when there is none."""
    if not path.is_file():
        return None
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


StageFunction = Callable[[StageContext, StageWriter], Any]


@dataclass(frozen=True)
class Stage:
    """One ``prepare`` stage.

    Attributes:
        name: the stage's group name in the store (one of :data:`advlens.store.STAGES`).
        requires: the stages whose stored results it reads; ``prepare`` runs them first.
        run: ``run(context, writer)`` computes the stage and writes its arrays and attrs.
        description: one line for ``advlens info`` and the docs.
        default: whether ``prepare`` runs it when no ``--stages`` are given.
        outdated: ``outdated(attrs, config)`` says how a finished stage's recorded settings differ from
            those ``config`` asks for (settings outside the store's identity), or returns None; ``prepare``
            logs it when it keeps the finished stage.
    """

    name: str
    requires: tuple[str, ...]
    run: StageFunction
    description: str
    default: bool = True
    outdated: Callable[[dict[str, Any], PrepareConfig], str | None] | None = None
